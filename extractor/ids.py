"""A black box's answer as the cache stores it: compact JSON text, decoded only when read.

A fully cached re-run reads every answer from the cache and writes it to the probe set, and
never looks at an id in between. Decoding 100 ids per answer into Python strings, then
converting them to Arrow, took 0.26 s of a 15,088-query re-run; the probe-set writer instead
splits the texts into an Arrow column with Arrow's own kernels (`extractor.probeset`).
`JsonIds` carries the text to it and still behaves as the list of ids for anyone who reads it
(data-free sources do). A paid answer gets the same treatment (`JsonIds.of`): encoding its ids
once is cheaper than converting the Python list to Arrow (7 against 12 ms per 1,024 answers).
Histories get their canonical JSON from `history_json`: cache keys hash it and the probe set's
history column is split from it the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import overload

import orjson

# What cache keys hash (`extractor.cache`): compact separators, UTF-8, the same in every process.
CANONICAL_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def encode_ids(ids: Sequence[str]) -> str:
    """The compact JSON array the caches store: `["1","2"]`, UTF-8, no spaces."""
    if isinstance(ids, JsonIds):
        return ids.text
    return orjson.dumps(list(ids)).decode()


class JsonIds(Sequence[str]):
    """Item ids held as their JSON text (`text`), decoded once, on first use, and equal to
    that list of ids."""

    __slots__ = ("text", "_ids")

    def __init__(self, text: str) -> None:
        self.text = text
        self._ids: list[str] | None = None

    @classmethod
    def of(cls, ids: list[str]) -> JsonIds:
        """Ids just decoded from an answer, with their compact text (0.5 us for 100 ids) for
        the cache and the probe set, which then need no conversion of their own."""
        held = cls(orjson.dumps(ids).decode())
        held._ids = ids
        return held

    @property
    def ids(self) -> list[str]:
        if self._ids is None:
            self._ids = orjson.loads(self.text)
        return self._ids

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        return self.ids[index]

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, JsonIds):
            return self.text == other.text or self.ids == other.ids
        if isinstance(other, Sequence) and not isinstance(other, str):
            return self.ids == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal to a list, so unhashable like one

    def __repr__(self) -> str:
        return f"JsonIds({self.text!r})"


def history_json(history: Sequence[str]) -> str:
    """The canonical JSON of a history, as `CANONICAL_JSON` writes it.

    Ids that need no escaping (no quote, backslash or control character) are simply joined,
    which is 4 times faster than the encoder and gives the same text: with a cached re-run of
    15,088 queries, keys took 0.24 s of it. The quotes of the separators are all the joined text
    may hold; any other character JSON escapes makes `isprintable` false.
    """
    try:
        body = '","'.join(history)
    except TypeError:
        raise TypeError("history ids must be strings (the catalogue's raw ids)") from None
    if not history:
        return "[]"
    return (
        f'["{body}"]' if is_plain_join(body, len(history)) else CANONICAL_JSON.encode(list(history))
    )


def is_plain_join(body: str, n_ids: int) -> bool:
    """Whether `'","'.join` of `n_ids` ids needs no JSON escaping: its only quotes are the
    separators' and it holds no backslash or control character (`isprintable`)."""
    return body.count('"') == 2 * max(n_ids - 1, 0) and "\\" not in body and body.isprintable()
