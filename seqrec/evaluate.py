"""Full-ranking evaluation on the leave-one-out split, overall and per head/tail group."""

from __future__ import annotations

import numpy as np
import torch

from seqrec.data.dataset import LeaveOneOutSplit
from seqrec.inference import batches, model_device, scores_and_history
from seqrec.metrics import DEFAULT_KS, ranking_metrics, sampled_ranks, target_ranks
from seqrec.models.base import SequentialRecommender

GROUPS = ("overall", "head_users", "tail_users", "head_items", "tail_items")


@torch.no_grad()
def evaluate(
    model: SequentialRecommender,
    split: LeaveOneOutSplit,
    stage: str = "test",
    ks: tuple[int, ...] = DEFAULT_KS,
    batch_size: int = 1024,
    n_negatives: int = 100,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Metrics per group (`GROUPS`), plus `sampled` (the target against n seeded negatives).

    History items are masked; the target never is, so a repeated item can still be predicted.
    """
    if stage not in ("valid", "test"):
        raise ValueError("stage must be 'valid' or 'test'")
    histories = split.test_input if stage == "test" else split.valid_input
    targets = split.test_target if stage == "test" else split.valid_target
    model.eval()
    device = model_device(model)
    generator = torch.Generator().manual_seed(seed)
    full = np.zeros(histories.n_users, dtype=np.int64)
    sampled = np.zeros(histories.n_users, dtype=np.int64)
    for users in batches(histories.n_users, batch_size):
        scores, seen = scores_and_history(model, histories, users)
        target = torch.as_tensor(targets[users], device=device)
        seen[torch.arange(len(users), device=device), target] = False
        scores = scores.masked_fill(seen, float("-inf"))
        full[users] = target_ranks(scores, target).cpu().numpy()
        if n_negatives:
            sampled[users] = (
                sampled_ranks(scores, target, seen, n_negatives, generator).cpu().numpy()
            )
    report = group_metrics(full, targets, split, ks)
    if n_negatives:
        report[f"sampled{n_negatives}"] = ranking_metrics(sampled, ks)
    return report


def group_masks(targets: np.ndarray, split: LeaveOneOutSplit) -> dict[str, np.ndarray]:
    """Which users belong to each of `GROUPS` (item groups by the user's target item)."""
    target_is_head = split.item_is_head[targets]
    return {
        "overall": np.ones_like(split.user_is_head),
        "head_users": split.user_is_head,
        "tail_users": ~split.user_is_head,
        "head_items": target_is_head,
        "tail_items": ~target_is_head,
    }


def group_metrics(
    ranks: np.ndarray, targets: np.ndarray, split: LeaveOneOutSplit, ks: tuple[int, ...]
) -> dict[str, dict[str, float]]:
    """Metrics for all users and for each head/tail group (item groups by the test target)."""
    masks = group_masks(targets, split)
    report = {}
    for group in GROUPS:
        report[group] = ranking_metrics(ranks[masks[group]], ks)
        report[group]["users"] = int(masks[group].sum())
    return report
