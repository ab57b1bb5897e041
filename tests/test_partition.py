"""Popularity partition: DP optimality against brute force, contiguity, non-empty groups, speed."""

import itertools
import time

import numpy as np
import pytest

from seqrec.longtail.partition import bin_edges, optimal_cuts, partition_items, segment_costs


def naive_cost(
    counts: np.ndarray, n_total: int, n_groups: int, alpha: float, gamma: float
) -> float:
    """The segment cost straight from its definition, one segment at a time."""
    mu = n_total / n_groups
    if counts.sum() == 0:
        log_phi = np.log(len(counts))
    else:
        p = counts / counts.sum()
        if alpha == 1.0:
            nz = p[p > 0]
            log_phi = -(nz * np.log(nz)).sum()
        else:
            log_phi = np.log((p**alpha).sum()) / (1 - alpha)
    return float(log_phi + gamma * ((len(counts) - mu) / mu) ** 2)


def brute_force(
    sorted_counts: np.ndarray, edges: np.ndarray, n_groups: int, alpha: float, gamma: float
) -> float:
    n_bins = len(edges) - 1
    best = np.inf
    for inner in itertools.combinations(range(1, n_bins), n_groups - 1):
        cuts = (0, *inner, n_bins)
        total = sum(
            naive_cost(
                sorted_counts[edges[a] : edges[b]], len(sorted_counts), n_groups, alpha, gamma
            )
            for a, b in itertools.pairwise(cuts)
        )
        best = min(best, total)
    return best


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("alpha", [2.0, 0.5, 1.0])
def test_dp_matches_brute_force(seed: int, alpha: float) -> None:
    rng = np.random.default_rng(seed)
    n_items, n_bins, n_groups = int(rng.integers(12, 40)), int(rng.integers(5, 10)), 3
    counts = np.sort(rng.zipf(1.6, size=n_items).clip(max=500).astype(float))
    counts[: rng.integers(0, 4)] = 0  # some never-seen items
    edges = bin_edges(n_items, n_bins)
    gamma = float(rng.uniform(0.1, 3.0))
    cuts, cost = optimal_cuts(segment_costs(counts, edges, n_groups, alpha, gamma), n_groups)
    assert cost == pytest.approx(brute_force(counts, edges, n_groups, alpha, gamma), rel=1e-9)
    assert cuts[0] == 0 and cuts[-1] == n_bins and np.all(np.diff(cuts) > 0)
    recomputed = sum(
        naive_cost(counts[edges[a] : edges[b]], n_items, n_groups, alpha, gamma)
        for a, b in itertools.pairwise(cuts)
    )
    assert recomputed == pytest.approx(cost, rel=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_groups_are_contiguous_in_popularity_and_non_empty(seed: int) -> None:
    rng = np.random.default_rng(seed)
    counts = np.concatenate([[0], rng.zipf(1.4, size=500).clip(max=10_000)])
    groups = partition_items(counts, n_groups=4, n_bins=30)
    assert groups.shape == counts.shape and groups[0] == 0
    order = np.lexsort((np.arange(1, 501), counts[1:]))  # ascending count, ties by id
    assert np.all(np.diff(groups[1:][order]) >= 0)
    assert np.all(np.bincount(groups[1:], minlength=4) > 0)
    # Group 0 holds the least popular items.
    assert counts[1:][groups[1:] == 0].max() <= counts[1:][groups[1:] == 3].min()


def test_ties_split_by_id() -> None:
    counts = np.array([0, 1, 1, 1, 1, 1, 1, 1, 1])  # all tied: groups follow item ids
    groups = partition_items(counts, n_groups=4, n_bins=8)
    assert np.all(np.diff(groups[1:]) >= 0) and set(groups[1:]) == {0, 1, 2, 3}


def test_fewer_items_than_bins_clamps_bins() -> None:
    groups = partition_items(np.array([0, 4, 1, 9, 2, 0]), n_groups=2, n_bins=30)
    assert set(groups[1:]) == {0, 1}
    assert len(bin_edges(5, 30)) == 6


def test_zero_counts_are_finite() -> None:
    counts = np.zeros(41)
    costs = segment_costs(counts[1:], bin_edges(40, 8), 4, 2.0, 1.0)
    assert np.isfinite(costs[np.triu_indices(9, k=1)]).all()
    assert set(partition_items(counts)[1:]) == {0, 1, 2, 3}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"counts": np.array([0, 1, -2, 3])}, "non-negative"),
        ({"counts": np.array([[0, 1], [2, 3]])}, "1-D"),
        ({"counts": np.array([0, 1.0, np.nan])}, "finite"),
        ({"counts": np.array([0, 1, 2]), "n_groups": 3}, "non-empty groups"),
        ({"counts": np.arange(10), "n_groups": 4, "n_bins": 3}, "n_bins"),
        ({"counts": np.arange(10), "gamma": -1.0}, "gamma"),
    ],
)
def test_bad_input_is_a_value_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        partition_items(**kwargs)


def test_100k_items_partition_fast() -> None:
    # Measured about 0.01 s on the 2-core dev box; the bound is a generous smoke check.
    counts = np.concatenate([[0], np.random.default_rng(0).zipf(1.3, size=100_000)])
    start = time.perf_counter()
    groups = partition_items(counts, n_groups=4, n_bins=30)
    assert time.perf_counter() - start < 2.0
    assert np.all(np.bincount(groups[1:], minlength=4) > 0)
