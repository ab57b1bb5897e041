"""Multi-scale views and their deduplication (extractor.views), on crafted histories."""

from __future__ import annotations

import numpy as np
import pytest

from extractor.ids import history_json
from extractor.views import VIEW_SCALES, plan_probes, view_lengths


def test_view_lengths_are_the_ceiling_of_n_times_r() -> None:
    lengths = view_lengths([1, 2, 3, 4, 7, 8, 10], VIEW_SCALES)
    assert lengths.tolist() == [
        [1, 1, 1],
        [2, 1, 1],
        [3, 2, 1],
        [4, 2, 1],
        [7, 4, 2],
        [8, 4, 2],
        [10, 5, 3],
    ]


def test_floating_point_noise_never_adds_an_item() -> None:
    # 10 * 0.3 and 10 * 0.7 are not exact in binary floating point.
    assert view_lengths([10, 100], [0.3, 0.7]).tolist() == [[3, 7], [30, 70]]


def test_views_are_the_most_recent_items() -> None:
    query = [str(i) for i in range(1, 9)]  # 8 items, oldest first
    plan = plan_probes([query], VIEW_SCALES)
    views = {scale: plan.histories[row] for scale, row in plan.views_of(0).items()}
    assert views == {1.0: query, 0.5: ["5", "6", "7", "8"], 0.25: ["7", "8"]}
    assert plan.index.shape == (1, 3) and plan.index.dtype == np.int64


def test_a_view_equal_to_the_full_history_is_asked_once() -> None:
    plan = plan_probes([["a"], ["a", "b"]], VIEW_SCALES)
    assert plan.histories == [["a"], ["a", "b"], ["b"]]
    assert plan.views_of(0) == {1.0: 0, 0.5: 0, 0.25: 0}  # one item: every view is the query
    assert plan.views_of(1) == {1.0: 1, 0.5: 2, 0.25: 2}


def test_views_are_told_apart_by_their_cache_text_whatever_the_sequence_type() -> None:
    plan = plan_probes([("a", 'q"uote'), ["a", 'q"uote'], ["b", 'q"uote']], scales=(1.0, 0.5))
    assert plan.histories == [["a", 'q"uote'], ['q"uote'], ["b", 'q"uote']]
    assert plan.texts == [history_json(history) for history in plan.histories]
    assert plan.index.tolist() == [[0, 1], [0, 1], [2, 1]]


def test_views_shared_between_queries_are_asked_once() -> None:
    queries = [
        ["x", "y", "c", "d"],  # views: itself, [c, d], [d]
        ["c", "d"],  # equal to the first query's half view
        ["z", "w", "c", "d"],  # shares [c, d] and [d]
        ["x", "y", "c", "d"],  # a repeated query
    ]
    plan = plan_probes(queries, VIEW_SCALES)
    assert plan.histories == [["x", "y", "c", "d"], ["c", "d"], ["d"], ["z", "w", "c", "d"]]
    assert plan.index.tolist() == [[0, 1, 2], [1, 2, 2], [3, 1, 2], [0, 1, 2]]
    assert plan.texts == ['["x","y","c","d"]', '["c","d"]', '["d"]', '["z","w","c","d"]']
    for q, query in enumerate(queries):  # every row still reads back as the right view
        for scale, row in plan.views_of(q).items():
            n = len(plan.histories[row])
            assert n == view_lengths([len(query)], [scale])[0, 0]
            assert plan.histories[row] == query[len(query) - n :]


def test_custom_scales_keep_their_order() -> None:
    plan = plan_probes([list("abcdefghij")], scales=(1, 0.1))
    assert plan.scales == (1.0, 0.1)
    assert plan.histories == [list("abcdefghij"), ["j"]]


@pytest.mark.parametrize(
    "scales, message",
    [((0.5, 0.25), "include 1"), ((1, 0), "in \\(0, 1\\]"), ((1, 1.5), "in"), ((1, 1), "distinct")],
)
def test_bad_scales_are_refused(scales: tuple[float, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_probes([["a"]], scales=scales)


def test_an_empty_query_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        plan_probes([["a"], []])


def test_no_queries_give_an_empty_plan() -> None:
    plan = plan_probes([], VIEW_SCALES)
    assert plan.histories == [] and plan.index.shape == (0, 3)
