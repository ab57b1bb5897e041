"""Popularity partition of the catalogue into L contiguous groups, least popular first.

Items are sorted by ascending training count (ties by id) and cut into B equal-count bins; a
dynamic programme over bins picks the L-segment split minimising the sum of

    cost(segment) = log Phi_alpha(segment) + gamma * ((size - mu) / mu) ** 2,   mu = N / L,

where Phi_alpha is the Renyi diversity (effective number of items) of the segment's counts
normalised to sum 1. The first term keeps a group's popularity homogeneous; the second keeps
group sizes near N / L so no expert ends up with a handful of items.

Degenerate cases, defined by continuity:
- alpha == 1 uses the Shannon limit, Phi_1 = exp(entropy).
- a segment whose counts are all zero is treated as uniform (the limit of equal small counts),
  so log Phi = log(size): with no observed interactions its items are indistinguishable.
"""

from __future__ import annotations

import numpy as np


def bin_edges(n_items: int, n_bins: int) -> np.ndarray:
    """Boundaries [B + 1] of B near-equal-count bins over n_items sorted items (B clamped to N)."""
    if n_items < 1 or n_bins < 1:
        raise ValueError("n_items and n_bins must be positive")
    n_bins = min(n_bins, n_items)
    return (np.arange(n_bins + 1) * n_items) // n_bins


def segment_costs(
    sorted_counts: np.ndarray, edges: np.ndarray, n_groups: int, alpha: float, gamma: float
) -> np.ndarray:
    """Cost table [B + 1, B + 1]: entry (i, j) is the cost of bins i..j-1 as one group.

    Entries with j <= i are +inf. Built from prefix sums, so it is O(N + B^2) with no item loop.
    """
    counts = np.asarray(sorted_counts, dtype=np.float64)
    n = len(counts)
    mu = n / n_groups
    start, end = edges[:, None], edges[None, :]
    size = (end - start).astype(np.float64)
    total = _segment_sums(counts, edges)
    occupied = total > 0
    safe_total = np.where(occupied, total, 1.0)
    if alpha == 1.0:
        # Shannon: H = log T - (sum c log c) / T
        c_log_c = counts * np.log(np.where(counts > 0, counts, 1.0))
        log_phi = np.log(safe_total) - _segment_sums(c_log_c, edges) / safe_total
    else:
        # log Phi = (log sum c^alpha - alpha log T) / (1 - alpha)
        power = _segment_sums(counts**alpha, edges)
        log_power = np.log(np.where(occupied, power, 1.0))
        log_phi = (log_power - alpha * np.log(safe_total)) / (1.0 - alpha)
    log_phi = np.where(occupied, log_phi, np.log(np.maximum(size, 1.0)))
    cost = log_phi + gamma * ((size - mu) / mu) ** 2
    return np.where(end > start, cost, np.inf)


def _segment_sums(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """[B + 1, B + 1] sums of `values` over items edges[i]..edges[j] (for j > i)."""
    prefix = np.concatenate([[0.0], np.cumsum(values)])[edges]
    return prefix[None, :] - prefix[:, None]


def optimal_cuts(costs: np.ndarray, n_groups: int) -> tuple[np.ndarray, float]:
    """Split bins 0..B-1 into n_groups non-empty contiguous segments of least total cost.

    `costs` is a segment table as from `segment_costs`. Returns the cut points [n_groups + 1]
    (bin indices, first 0, last B) and the optimal total cost. Ties go to the earliest cut.
    """
    n_edges = costs.shape[0]
    if costs.shape != (n_edges, n_edges):
        raise ValueError("costs must be a square [B + 1, B + 1] table")
    n_bins = n_edges - 1
    if not 1 <= n_groups <= n_bins:
        raise ValueError(f"cannot split {n_bins} bins into {n_groups} non-empty groups")
    best = np.full(n_edges, np.inf)
    best[0] = 0.0
    choice = np.zeros((n_groups + 1, n_edges), dtype=np.int64)
    for level in range(1, n_groups + 1):
        totals = best[:, None] + costs  # [i, j]: reach bin i with level-1 groups, then i..j
        choice[level] = np.argmin(totals, axis=0)
        best = totals[choice[level], np.arange(n_edges)]
    cuts = [n_bins]
    for level in range(n_groups, 0, -1):
        cuts.append(int(choice[level, cuts[-1]]))
    return np.asarray(cuts[::-1], dtype=np.int64), float(best[n_bins])


def partition_items(
    counts: np.ndarray,
    n_groups: int = 4,
    n_bins: int = 30,
    alpha: float = 2.0,
    gamma: float = 1.0,
) -> np.ndarray:
    """Group index [n_items + 1] of every dense item; group 0 holds the least popular items.

    `counts[i]` is item i's training frequency (index 0 = padding, ignored; its group is 0).
    Groups are contiguous along ascending popularity (ties by id) and never empty.
    """
    counts = np.asarray(counts)
    if counts.ndim != 1 or len(counts) < 2:
        raise ValueError("counts must be a 1-D array [n_items + 1] with at least one item")
    if not np.issubdtype(counts.dtype, np.number) or not np.all(np.isfinite(counts)):
        raise ValueError("counts must be finite numbers")
    if np.any(counts[1:] < 0):
        raise ValueError("counts must be non-negative")
    if not np.isfinite(alpha) or alpha < 0:
        raise ValueError(f"alpha must be a finite non-negative number, got {alpha}")
    if gamma < 0:
        raise ValueError(f"gamma must be non-negative, got {gamma}")
    n_items = len(counts) - 1
    if not 1 <= n_groups <= n_items:
        raise ValueError(f"cannot split {n_items} items into {n_groups} non-empty groups")
    if n_bins < n_groups:
        raise ValueError(f"n_bins ({n_bins}) must be at least n_groups ({n_groups})")
    item_counts = counts[1:]
    order = np.argsort(item_counts, kind="stable")  # ascending count, ties by id
    edges = bin_edges(n_items, n_bins)
    costs = segment_costs(item_counts[order], edges, n_groups, alpha, gamma)
    cuts, _ = optimal_cuts(costs, n_groups)
    rank_group = np.repeat(np.arange(n_groups), np.diff(edges[cuts]))
    groups = np.zeros(n_items + 1, dtype=np.int64)
    groups[order + 1] = rank_group
    return groups
