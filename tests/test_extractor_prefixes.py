"""Queries as ranges of one id array (extractor.prefixes): the same histories, texts and Arrow
column as the lists they stand for."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from extractor.arrow_build import STRING_LISTS
from extractor.ids import history_json
from extractor.prefixes import Prefixes

HISTORIES = [["a", "bb", "c"], ["d"], ["e", "f", "gg", "h"]]
AWKWARD = [['q"uote', "x"], ["back\\slash"], ["tab\there", "é"], ["y", 'z"']]


def test_queries_read_back_as_the_lists_they_hold() -> None:
    queries = Prefixes.of(HISTORIES)
    assert len(queries) == 3 and queries[2] == ["e", "f", "gg", "h"] and queries[-1] == HISTORIES[2]
    assert list(queries) == HISTORIES and queries == HISTORIES and queries != HISTORIES[:2]
    assert queries[1:] == HISTORIES[1:] and isinstance(queries[1:], Prefixes)
    assert queries.subset([2, 0]) == [HISTORIES[2], HISTORIES[0]]


def test_heads_and_tails_are_the_first_and_last_ids() -> None:
    queries = Prefixes.of(HISTORIES)
    positions = np.array([0, 2, 2])
    assert queries.heads(positions, np.array([2, 1, 3])) == [["a", "bb"], ["e"], ["e", "f", "gg"]]
    assert queries.tails(positions, np.array([2, 1, 3])) == [["bb", "c"], ["h"], ["f", "gg", "h"]]
    tails_of_heads = queries.heads(positions, np.array([2, 3, 3])).tails(positions[:2], [1, 2])
    assert tails_of_heads == [["bb"], ["f", "gg"]]  # ranges of ranges stay inside their query


@pytest.mark.parametrize(
    "histories", [HISTORIES, AWKWARD, [["7"]]], ids=["plain", "escaped", "one"]
)
def test_texts_are_the_canonical_json_of_every_query_and_view(histories: list[list[str]]) -> None:
    queries = Prefixes.of(histories)
    assert queries.texts() == [history_json(history) for history in histories]
    last = queries.tails(np.arange(len(histories)), np.ones(len(histories), dtype=np.int64))
    assert last.texts() == [history_json(history[-1:]) for history in histories]


def test_ids_that_are_not_strings_are_refused() -> None:
    with pytest.raises(TypeError, match="strings"):
        Prefixes.of([["1", 2]]).texts()  # type: ignore[list-item]


@pytest.mark.parametrize("histories", [HISTORIES, AWKWARD], ids=["plain", "escaped"])
def test_the_arrow_column_holds_the_same_lists(histories: list[list[str]]) -> None:
    queries = Prefixes.of(histories).subset([len(histories) - 1, 0])
    column = queries.column()
    assert column.type == STRING_LISTS and column.null_count == 0
    assert column.to_pylist() == [histories[-1], histories[0]]
    assert column.equals(pa.array([histories[-1], histories[0]], type=STRING_LISTS))
