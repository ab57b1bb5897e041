"""Batched next-item scoring with the user's own history masked out.

The one place that turns histories into scores: evaluation, the teacher API and fidelity checks
all rank through here, so they agree on masking and truncation.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from seqrec.data.sequences import Sequences
from seqrec.metrics import history_mask
from seqrec.models.base import SequentialRecommender


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def scores_and_history(
    model: SequentialRecommender, histories: Sequences, users: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores [B, n_items + 1] for the selected users, and the mask of their history items.

    The model sees each user's last `max_len` items; the mask covers the whole history (and the
    padding column). Callers decide what to mask: evaluation never masks the target.
    """
    device = model_device(model)
    seqs = torch.as_tensor(histories.padded(model.config.max_len, users), device=device)
    scores = model.logits(seqs)
    rows, items = histories.gather(users)
    mask = history_mask(rows, items, len(users), model.n_items, device)
    return scores, mask


def batches(n: int, batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, n, batch_size):
        yield np.arange(start, min(start + batch_size, n))


@torch.no_grad()
def top_k(
    model: SequentialRecommender, histories: Sequences, k: int, batch_size: int = 1024
) -> np.ndarray:
    """The k best unseen items [n_users, k] for every history, best first.

    A row whose history leaves fewer than k unseen items is padded with 0 (no item).
    """
    model.eval()
    k = min(k, model.n_items)
    out = np.zeros((histories.n_users, k), dtype=np.int64)
    for users in batches(histories.n_users, batch_size):
        scores, seen = scores_and_history(model, histories, users)
        best = scores.masked_fill(seen, float("-inf")).topk(k, dim=1)
        out[users] = best.indices.masked_fill(torch.isinf(best.values), 0).cpu().numpy()
    return out
