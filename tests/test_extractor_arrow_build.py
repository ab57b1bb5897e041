"""Arrays built from buffers equal what pyarrow's own converters build from the same values."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from extractor.arrow_build import STRING_LISTS, numeric, string_lists, strings
from extractor.ids import JsonIds


@pytest.mark.parametrize(
    "texts",
    [
        ["a", "bc", ""],
        ["a", None, "héllo", "", None],  # nulls and a non-ASCII id (bytes differ from chars)
        ["ünï", "cödé"],
        [None],
        [],
    ],
)
def test_strings_match_pyarrow(texts: list[str | None]) -> None:
    built = strings(texts)
    built.validate(full=True)
    assert built.equals(pa.array(texts, pa.string()))


@pytest.mark.parametrize(
    "lists",
    [
        [["1", "2"], [], ["3"]],
        [["1"], None, [], ["é", "x"], None],
        [None, None],
        [],
    ],
)
def test_string_lists_match_pyarrow(lists: list[list[str] | None]) -> None:
    built = string_lists(lists)
    built.validate(full=True)
    assert built.type == STRING_LISTS
    assert built.equals(pa.array(lists, STRING_LISTS))


def test_string_lists_read_cached_answers() -> None:
    answers = [JsonIds('["1","2"]'), None, JsonIds("[]")]
    assert string_lists(answers).to_pylist() == [["1", "2"], None, []]


def test_numeric_keeps_values_and_type() -> None:
    assert numeric([3, 1, 2], np.int64).equals(pa.array([3, 1, 2], pa.int64()))
    assert numeric(np.array([0.5, 1.0]), np.float64).type == pa.float64()
    assert numeric(np.arange(6).reshape(2, 3)[:, 1], np.int32).to_pylist() == [1, 4]
