"""Scores an API gives beside its ids, kept in the answer cache next to the answers.

A profile whose `answer.scores` names them (`extractor.profiles`) makes a run keep each
answer's scores: in the probe set's `scores` column (`extractor.probeset`) and in the cache, so
that an answer read back from the cache has them as a paid one does. The cache stores lists of
strings (`extractor.cache`), so a score list is stored as its floats' shortest round-trip
texts under a key of its own, a hash of the answer's (keys are hex sha256 digests, which the
embedded cache stores as bytes): both cache backends keep it with no change of format, and a
run without scores never reads or writes one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from extractor.cache import AnswerCache

SCORES_DOMAIN = b"recmimic-scores-v1"


def scores_key(answer_key: str) -> str:
    """The key of an answer's scores: never equal to an answer's own key."""
    return hashlib.sha256(SCORES_DOMAIN + bytes.fromhex(answer_key)).hexdigest()


async def put_scores(cache: AnswerCache, scores: Mapping[str, Sequence[float]]) -> None:
    """Store each answer key's scores."""
    if scores:
        await cache.put_many(
            {scores_key(key): [repr(float(s)) for s in values] for key, values in scores.items()}
        )


async def get_scores(cache: AnswerCache, keys: Sequence[str]) -> list[list[float] | None]:
    """The scores stored for these answer keys (None: none stored)."""
    if not keys:
        return []
    texts = await cache.get_many([scores_key(key) for key in keys])
    return [None if text is None else [float(s) for s in text] for text in texts]


def as_scores(found: object, n_items: int) -> list[float] | None:
    """`found` as a list of `n_items` finite numbers, or None when it is not one."""
    if not isinstance(found, list) or len(found) != n_items:
        return None
    if not all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in found):
        return None
    values = [float(s) for s in found]
    return values if all(v == v and abs(v) != float("inf") for v in values) else None
