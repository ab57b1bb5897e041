"""Entropic optimal transport between two batches of vectors (log-domain Sinkhorn).

Used as the HPSERec feedback signal: it matches the *distribution* of one expert's user
representations to the next expert's without pairing rows one to one. The iterations run in the
log domain, so a small epsilon cannot underflow, and are unrolled, so the result is
differentiable with respect to both inputs.

The ground cost is 1 - cosine similarity, bounded in [0, 2]: epsilon then means the same thing
whatever the hidden size or the vectors' norms, which the training loss does not control.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def sinkhorn_plan(cost: torch.Tensor, epsilon: float = 0.1, n_iters: int = 50) -> torch.Tensor:
    """Transport plan [B, B2] between uniform marginals (rows sum to 1/B, columns to 1/B2)."""
    if cost.ndim != 2 or 0 in cost.shape:
        raise ValueError(f"cost must be a non-empty [B, B2] matrix, got shape {tuple(cost.shape)}")
    if epsilon <= 0 or n_iters < 1:
        raise ValueError("epsilon must be positive and n_iters at least 1")
    rows, cols = cost.shape
    log_a, log_b = -math.log(rows), -math.log(cols)
    scaled = -cost / epsilon
    f = cost.new_zeros(rows)  # dual potentials, divided by epsilon
    g = cost.new_zeros(cols)
    for _ in range(n_iters):
        f = log_a - torch.logsumexp(scaled + g[None, :], dim=1)
        g = log_b - torch.logsumexp(scaled + f[:, None], dim=0)
    return torch.exp(scaled + f[:, None] + g[None, :])


def cosine_cost(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[B, B2] matrix of 1 - cos(x_i, y_j)."""
    return 1.0 - F.normalize(x, dim=-1) @ F.normalize(y, dim=-1).T


def sinkhorn_distance(
    x: torch.Tensor, y: torch.Tensor, epsilon: float = 0.1, n_iters: int = 50
) -> torch.Tensor:
    """Entropic OT cost <plan, C> between the rows of x [B, d] and y [B2, d] (a scalar)."""
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"need [B, d] and [B2, d] inputs, got {tuple(x.shape)}, {tuple(y.shape)}")
    cost = cosine_cost(x, y)
    return (sinkhorn_plan(cost, epsilon, n_iters) * cost).sum()
