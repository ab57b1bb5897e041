"""Queries held as ranges of one flat array of ids, instead of one Python list each.

Seeded queries are prefixes of users' histories (DESIGN.md section 5), and with the default
of every prefix they hold sum(n^2)/2 ids as lists: ML-100k's 97,401 prefixes took 95 MB and
0.24 s to build, an ML-1M-sized synthetic dataset's 984,390 2.2 GB and 13 s
(`bench/seeded_memory.py`). Here a query is two integers, where its ids begin in `items` and
how many, and it becomes a list only when it is sent to the black box.

Views (a query's most recent items, `extractor.views`) are ranges too, and so are their
canonical JSON texts (`history_json`, what cache keys hash): each is a slice of one text of
all the ids, instead of a join and a check per view.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import chain
from typing import overload

import numpy as np
import pyarrow as pa

from extractor.arrow_build import STRING_LISTS, numeric, offsets_buffer, strings
from extractor.ids import history_json, is_plain_join

History = list[str]


class _FlatText:
    """`["a","b",...]` for every id of `items`, and where each id's quoted text begins.

    The ids of items[a:b] are big[starts[a] : starts[b - 1] + widths[b - 1]], so a range's
    canonical JSON is that slice in brackets, the text `history_json` writes when no id needs
    escaping. `plain` is False when one does; texts are then made one by one.
    """

    def __init__(self, items: np.ndarray) -> None:
        ids = items.tolist()
        try:
            body = '","'.join(ids)
        except TypeError:
            raise TypeError("history ids must be strings (the catalogue's raw ids)") from None
        self.plain = is_plain_join(body, len(ids))
        self.big = f'"{body}"'
        self.widths = np.fromiter(map(len, ids), np.int64, len(ids)) + 2  # with their quotes
        self.starts = np.zeros(len(ids), dtype=np.int64)
        np.cumsum(self.widths[:-1] + 1, out=self.starts[1:])  # each id, then a comma


class _Derived:
    """What is made from one `items` array on first use, shared by every slice of it."""

    __slots__ = ("items", "_text", "_arrow")

    def __init__(self, items: np.ndarray) -> None:
        self.items = items
        self._text: _FlatText | None = None
        self._arrow: pa.StringArray | None = None

    def text(self) -> _FlatText:
        if self._text is None:
            self._text = _FlatText(self.items)
        return self._text

    def arrow(self) -> pa.StringArray:
        if self._arrow is None:
            self._arrow = strings(self.items.tolist())
        return self._arrow


class Prefixes(Sequence[History]):
    """Query q is `items[begin[q] : begin[q] + length[q]]` (non-empty), ids oldest first.

    Equal to the list of those histories, as a sequence. Slices and `subset` share `items` and
    its text, so taking a chunk of queries copies two small arrays.
    """

    __slots__ = ("items", "begin", "length", "_derived")

    def __init__(
        self,
        items: np.ndarray,
        begin: np.ndarray,
        length: np.ndarray,
        _derived: _Derived | None = None,
    ) -> None:
        self.items = items  # object array of id strings
        self.begin = np.asarray(begin, dtype=np.int64)
        self.length = np.asarray(length, dtype=np.int64)
        self._derived = _Derived(items) if _derived is None else _derived

    @classmethod
    def of(cls, histories: Sequence[Sequence[str]]) -> Prefixes:
        """Each history whole, as one query."""
        length = np.fromiter(map(len, histories), np.int64, len(histories))
        items = np.empty(int(length.sum()), dtype=object)
        items[:] = list(chain.from_iterable(histories))
        return cls(items, np.cumsum(length) - length, length)

    def subset(self, positions: np.ndarray | Sequence[int]) -> Prefixes:
        """The queries at `positions`, in that order."""
        at = np.asarray(positions, dtype=np.int64)
        return self.heads(at, self.length[at])

    def heads(self, positions: np.ndarray, lengths: np.ndarray) -> Prefixes:
        """The first `lengths[i]` ids (1 to its length) of the query at `positions[i]`."""
        return Prefixes(self.items, self.begin[positions], lengths, self._derived)

    def __len__(self) -> int:
        return len(self.begin)

    @overload
    def __getitem__(self, index: int) -> History: ...

    @overload
    def __getitem__(self, index: slice) -> Prefixes: ...

    def __getitem__(self, index: int | slice) -> History | Prefixes:
        if isinstance(index, slice):
            return Prefixes(self.items, self.begin[index], self.length[index], self._derived)
        begin = int(self.begin[index])
        return self.items[begin : begin + int(self.length[index])].tolist()

    def __iter__(self) -> Iterator[History]:
        for begin, length in zip(self.begin.tolist(), self.length.tolist(), strict=True):
            yield self.items[begin : begin + length].tolist()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str):
            return len(self) == len(other) and all(
                mine == list(theirs) for mine, theirs in zip(self, other, strict=True)
            )
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal to a list, so unhashable like one

    def tails(self, positions: np.ndarray, lengths: np.ndarray) -> Prefixes:
        """The last `lengths[i]` ids (1 to its length) of the query at `positions[i]`."""
        ends = self.begin[positions] + self.length[positions]
        return Prefixes(self.items, ends - lengths, lengths, self._derived)

    def texts(self) -> list[str]:
        """`history_json` of every query."""
        text = self._derived.text()
        if not text.plain:
            return [history_json(history) for history in self]
        last = self.begin + self.length - 1
        starts = text.starts[self.begin].tolist()
        stops = (text.starts[last] + text.widths[last]).tolist()
        big = text.big
        return [f"[{big[a:b]}]" for a, b in zip(starts, stops, strict=True)]

    def column(self) -> pa.ListArray:
        """The queries as an Arrow list<string> array (the probe set's history column): one
        `take` from all the ids as Arrow strings, made once, instead of a split of each text."""
        firsts = np.cumsum(self.length) - self.length  # each query's first value
        positions = np.arange(self.length.sum()) + np.repeat(self.begin - firsts, self.length)
        values = self._derived.arrow().take(numeric(positions, np.int64))
        return pa.Array.from_buffers(
            STRING_LISTS, len(self), [None, offsets_buffer(self.length)], children=[values]
        )
