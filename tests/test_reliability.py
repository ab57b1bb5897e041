"""Reliability scores on crafted view lists: overlap, RBO, fallbacks and the normalised variant."""

from __future__ import annotations

import numpy as np
import pytest

from distill.reliability import (
    ReliabilityConfig,
    reliability,
    reliability_by_bucket,
    view_agreement,
)
from extractor.probeset import LENGTH_LABELS

OVERLAP = ReliabilityConfig()
RBO = ReliabilityConfig(measure="rbo")
TOP = np.arange(1, 11)  # a full answer: items 1..10


def agreement(full: np.ndarray, views: list[np.ndarray], config=OVERLAP, usable=None) -> float:
    view_topk = np.stack(views)[None]
    usable = np.ones((1, len(views)), bool) if usable is None else np.asarray([usable])
    return float(view_agreement(full[None], view_topk, usable, config)[0])


@pytest.mark.parametrize("config", [OVERLAP, RBO])
def test_identical_views_agree_fully_and_disjoint_not_at_all(config: ReliabilityConfig) -> None:
    assert agreement(TOP, [TOP, TOP], config) == pytest.approx(1.0)
    assert agreement(TOP, [TOP + 100], config) == pytest.approx(0.0)


def test_half_overlap_and_order_within_the_top_does_not_matter() -> None:
    half = np.concatenate([TOP[:5], np.arange(101, 106)])
    assert agreement(TOP, [half]) == pytest.approx(0.5)
    assert agreement(TOP, [TOP[::-1]]) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    assert agreement(TOP, [rng.permutation(half)]) == pytest.approx(0.5)


def test_padding_never_counts_and_short_answers_divide_by_top() -> None:
    full = np.array([1, 2, 3, 4, 0, 0, 0, 0, 0, 0])
    assert agreement(full, [full]) == pytest.approx(0.4)
    assert agreement(full, [np.zeros(10, int)]) == 0.0


def test_only_the_first_top_slots_count() -> None:
    full = np.arange(1, 21)
    view = np.concatenate([np.arange(101, 111), np.arange(1, 11)])  # full's top-10 at ranks 11-20
    assert agreement(full, [view]) == 0.0
    assert agreement(full, [view], ReliabilityConfig(top=20)) == pytest.approx(0.5)


def test_mean_over_usable_views_only_and_nan_without_any() -> None:
    views = [TOP, TOP + 100]
    assert agreement(TOP, views) == pytest.approx(0.5)
    assert agreement(TOP, views, usable=[True, False]) == pytest.approx(1.0)
    assert np.isnan(agreement(TOP, views, usable=[False, False]))


def test_rbo_weights_early_ranks_more_than_late_ones() -> None:
    wrong_first = TOP.copy()
    wrong_first[0] = 99
    wrong_last = TOP.copy()
    wrong_last[-1] = 99
    assert agreement(TOP, [wrong_first]) == agreement(TOP, [wrong_last])
    assert agreement(TOP, [wrong_first], RBO) < agreement(TOP, [wrong_last], RBO) < 1.0


def test_rbo_matches_the_documented_formula() -> None:
    p, depth = 0.9, 3
    config = ReliabilityConfig(measure="rbo", top=depth, rbo_p=p)
    full, view = np.array([1, 2, 3]), np.array([2, 1, 9])
    prefix_overlap = [0 / 1, 2 / 2, 2 / 3]
    expected = (1 - p) / (1 - p**depth) * sum(p**i * a for i, a in enumerate(prefix_overlap))
    assert agreement(full, [view], config) == pytest.approx(expected)


def test_is_vectorised_over_many_queries() -> None:
    full = np.tile(TOP, (5, 1))
    views = np.stack([np.tile(TOP, (5, 1)), np.tile(TOP + 100, (5, 1))], axis=1)
    usable = np.array([[True, True], [True, False], [False, True], [False, False], [True, True]])
    result = view_agreement(full, views, usable, OVERLAP)
    np.testing.assert_allclose(result, [0.5, 1.0, 0.0, np.nan, 0.5])


def crafted_set() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Five queries: three of length 8-15 (agreement 1, 0.5, no view) and two of length 32+."""
    half = np.concatenate([TOP[:5], np.arange(101, 106)])
    full = np.tile(TOP, (5, 1))
    views = np.stack([TOP, half, TOP, TOP, half])[:, None, :]
    usable = np.array([[True], [True], [False], [True], [True]])
    lengths = np.array([8, 10, 9, 40, 50])
    return full, views, usable, lengths


def test_a_query_without_usable_view_gets_its_bucket_median() -> None:
    full, views, usable, lengths = crafted_set()
    c = reliability(full, views, usable, lengths, OVERLAP)
    np.testing.assert_allclose(c, [1.0, 0.5, 0.75, 1.0, 0.5])


def test_fallback_to_global_median_then_one_half() -> None:
    full, views, usable, lengths = crafted_set()
    lengths = lengths.copy()
    lengths[2] = 1  # alone in its bucket, no usable view: the global median of 1, .5, 1, .5
    np.testing.assert_allclose(reliability(full, views, usable, lengths, OVERLAP)[2], 0.75)
    nothing = np.zeros_like(usable)
    np.testing.assert_allclose(reliability(full, views, nothing, lengths, OVERLAP), 0.5)


def test_normalise_shifts_by_the_bucket_median_and_clips() -> None:
    full, views, usable, lengths = crafted_set()
    config = ReliabilityConfig(normalise=True)
    c = reliability(full, views, usable, lengths, config)
    # Both buckets have median 0.75: 1 -> 0.75, 0.5 -> 0.25; no view -> 0.5.
    np.testing.assert_allclose(c, [0.75, 0.25, 0.5, 0.75, 0.25])
    skewed_views = np.stack([TOP, TOP + 100, TOP + 100])[:, None, :]
    skewed = reliability(
        np.tile(TOP, (3, 1)), skewed_views, np.ones((3, 1), bool), np.full(3, 8), config
    )
    np.testing.assert_allclose(skewed, [1.0, 0.5, 0.5])  # 1 - 0 + 0.5 clipped to 1


def test_reliability_by_bucket_reports_non_empty_buckets() -> None:
    c = np.array([1.0, 0.5, 0.75, 1.0, 0.5])
    report = reliability_by_bucket(c, np.array([8, 10, 9, 40, 50]))
    assert set(report) == {"8-15", "32-63"}
    assert set(report) <= set(LENGTH_LABELS)
    assert report["8-15"] == {"n": 3, "mean": pytest.approx(0.75), "median": 0.75}
    assert report["32-63"] == {"n": 2, "mean": 0.75, "median": 0.75}
