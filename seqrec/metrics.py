"""Ranking metrics computed from target ranks, plus top-k agreement between two recommenders.

Everything is batched: a rank is "how many candidates scored strictly above the target", so
HR@k is `rank < k` and NDCG@k (one relevant item) is `1 / log2(rank + 2)` when `rank < k`.
"""

from __future__ import annotations

import numpy as np
import torch

DEFAULT_KS = (1, 5, 10, 20)


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based rank of each row's target among that row's scores [B, N] (ties rank optimistic)."""
    target_scores = scores.gather(1, targets.unsqueeze(1))
    return (scores > target_scores).sum(dim=1)


def ranking_metrics(ranks: np.ndarray, ks: tuple[int, ...] = DEFAULT_KS) -> dict[str, float]:
    """Mean HR@k and NDCG@k for every k, from 0-based target ranks."""
    ranks = np.asarray(ranks)
    if ranks.size == 0:
        return {}
    gains = 1.0 / np.log2(ranks + 2.0)
    metrics: dict[str, float] = {}
    for k in ks:
        hit = ranks < k
        metrics[f"HR@{k}"] = float(hit.mean())
        metrics[f"NDCG@{k}"] = float(np.where(hit, gains, 0.0).mean())
    return metrics


def history_mask(
    rows: np.ndarray, items: np.ndarray, n_rows: int, n_items: int, device: torch.device | str
) -> torch.Tensor:
    """Boolean [n_rows, n_items + 1]: True at every (row, item) history pair and in column 0."""
    mask = torch.zeros(n_rows, n_items + 1, dtype=torch.bool, device=device)
    mask[torch.as_tensor(rows, device=device), torch.as_tensor(items, device=device)] = True
    mask[:, 0] = True
    return mask


def sampled_ranks(
    scores: torch.Tensor,
    targets: torch.Tensor,
    excluded: torch.Tensor,
    n_negatives: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Rank of the target among `n_negatives` uniform items the user has not seen (seeded).

    Negatives are drawn with replacement, uniformly from the items outside `excluded` (history,
    padding) other than the target. A user who has seen every other item has no negatives and
    ranks 0.
    """
    rows = torch.arange(scores.shape[0], device=scores.device)
    allowed = ~excluded
    allowed[rows, targets] = False
    empty = ~allowed.any(dim=1)
    allowed[empty, 0] = True  # a placeholder draw, ignored below
    weights = allowed.float().cpu()
    negatives = torch.multinomial(weights, n_negatives, replacement=True, generator=generator)
    negatives = negatives.to(scores.device)
    target_scores = scores.gather(1, targets.unsqueeze(1))
    beats = (scores.gather(1, negatives) > target_scores).sum(dim=1)
    return beats.masked_fill(empty, 0)


def agreement_at_k(
    top_a: torch.Tensor | np.ndarray, top_b: torch.Tensor | np.ndarray, k: int
) -> np.ndarray:
    """Per-row |top-k(a) ∩ top-k(b)| / k for two ranked lists [B, >=k] of distinct item ids.

    0 marks an empty slot (a list cut short because the history left fewer unseen items) and is
    never an item. A row where a list is short is divided by the slots the longer of the two
    fills, so two identical short lists agree fully; two empty lists agree too.
    """
    a = torch.as_tensor(top_a)[:, :k]
    b = torch.as_tensor(top_b)[:, :k]
    if a.shape[1] < k or b.shape[1] < k:
        raise ValueError(f"both lists need at least {k} items")
    shared = (a.unsqueeze(2) == b.unsqueeze(1)) & (a != 0).unsqueeze(2)
    overlap = shared.any(dim=2).sum(dim=1).float()
    slots = torch.maximum((a != 0).sum(dim=1), (b != 0).sum(dim=1)).float()
    agreement = torch.where(slots > 0, overlap / slots.clamp_min(1), torch.ones_like(overlap))
    return agreement.cpu().numpy()
