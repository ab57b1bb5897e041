"""Wire formats: how a request is written for histories and how an answer is read back.

`RecmimicWire` speaks recmimic's own contract (DESIGN.md section 4) on its fast path: orjson
and a fixed shape, about 0.5 us per answer. `ProfileWire` speaks whatever an API profile
(`extractor.profiles`) describes. The client (`extractor.client`) owns transport, retries and
the budget; a wire format owns only bytes and shapes. A parse never patches an answer up: a
wrong shape, a wrong count, ids that are neither strings nor integers, more than k ids or one
id twice make the whole body malformed (None), which the client retries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from extractor.http import Response
from extractor.ids import JsonIds
from extractor.profiles import ApiProfile

SINGLE_PATH = "/v1/recommend"
BATCH_PATH = "/v1/recommend/batch"
MODEL_VERSION_HEADER = "x-model-version"


@dataclass(frozen=True)
class Parsed:
    """A 200 body read back: one id list per history asked, and the model version it named."""

    answers: list[JsonIds]
    model_tag: str | None


class Wire(Protocol):
    """`batch`: True or False when the format says, None when the batch route is probed."""

    batch: bool | None
    batch_size: int
    version_header: str | None

    def request(self, histories: list[list[str]], k: int, batch: bool) -> tuple[str, str, bytes]:
        """(method, path, JSON body) asking for the top-k of `histories`."""
        ...

    def parse(self, response: Response, n: int, k: int, batch: bool) -> Parsed | None:
        """The answers of a 200 body to n histories, or None when it is malformed."""
        ...


class RecmimicWire:
    """`POST /v1/recommend {"history", "k"}` -> `{"items"}`, and its batch route."""

    version_header = MODEL_VERSION_HEADER

    def __init__(self, batch: bool | None, batch_size: int) -> None:
        self.batch = batch
        self.batch_size = batch_size

    def request(self, histories: list[list[str]], k: int, batch: bool) -> tuple[str, str, bytes]:
        if batch:
            return "POST", BATCH_PATH, orjson.dumps({"histories": histories, "k": k})
        return "POST", SINGLE_PATH, orjson.dumps({"history": histories[0], "k": k})

    def parse(self, response: Response, n: int, k: int, batch: bool) -> Parsed | None:
        try:
            payload = orjson.loads(response.content)
        except ValueError:  # invalid JSON or bytes (a truncated body)
            return None
        results = payload.get("results") if batch and isinstance(payload, dict) else [payload]
        if not isinstance(results, list) or len(results) != n:
            return None
        lists = [result.get("items") if isinstance(result, dict) else None for result in results]
        answers = id_lists(lists, k)
        tag = response.headers.get(MODEL_VERSION_HEADER)
        return None if answers is None else Parsed(answers, tag)


class ProfileWire:
    """The request and answer an API profile describes."""

    def __init__(self, profile: ApiProfile) -> None:
        self.profile = profile
        self.batch = profile.request.batch
        self.batch_size = profile.request.batch_size if profile.request.batch else 1
        self.version_header = profile.answer.model_version_header

    def request(self, histories: list[list[str]], k: int, batch: bool) -> tuple[str, str, bytes]:
        spec = self.profile.request
        return spec.method, spec.path, self.profile.body(histories, k)

    def parse(self, response: Response, n: int, k: int, batch: bool) -> Parsed | None:
        try:
            payload = orjson.loads(response.content)
        except ValueError:
            return None
        lists = self.profile.answers(payload, n)
        answers = None if lists is None else id_lists(lists, k)
        if answers is None:
            return None
        header = self.version_header
        tag = self.profile.model_version(payload) or (
            response.headers.get(header.lower()) if header else None
        )
        return Parsed(answers, tag)


def mismatch(profile: ApiProfile, response: Response, n: int, k: int) -> str:
    """Why an answer does not match `profile`, in one line: the expression that failed and the
    answer's shape (keys and types only: no value of the answer is shown, secrets included)."""
    try:
        payload = orjson.loads(response.content)
    except ValueError:
        return "the answer is not JSON"
    expression = profile.answer.items
    found = profile.found_items(payload)
    want = f"{n} id lists" if profile.request.batch else "a list of ids"
    if found is None:
        problem = f"answer.items {expression!r} found nothing"
    elif profile.answers(payload, n) is None:
        problem = f"answer.items {expression!r} found {shape_of(found)}, not {want}"
    else:
        problem = f"answer.items {expression!r} found ids that are not {k} or fewer distinct ids"
    return f"{problem}; the answer's shape: {shape_of(payload)}"


def shape_of(value: Any, depth: int = 4) -> str:
    """A JSON value's structure without its values: `{"a": [str ×3]}`."""
    if isinstance(value, dict):
        if depth == 0:
            return "{…}"
        inner = ", ".join(f'"{key}": {shape_of(item, depth - 1)}' for key, item in value.items())
        return "{" + inner + "}"
    if isinstance(value, list):
        if not value:
            return "[]"
        return f"[{shape_of(value[0], depth - 1) if depth else '…'} ×{len(value)}]"
    return "null" if value is None else type(value).__name__


def id_lists(lists: list[Any], k: int) -> list[JsonIds] | None:
    """Each answer's ids as strings, or None if any answer is not a list of at most k distinct
    string or integer ids."""
    answers = []
    for items in lists:
        answer = as_ids(items) if isinstance(items, list) and len(items) <= k else None
        if answer is None or len(set(answer)) != len(answer):
            return None
        answers.append(JsonIds.of(answer))
    return answers


def as_ids(items: list[Any]) -> list[str] | None:
    """The ids as strings, or None if any is neither a string nor an integer (ML-100k ids
    look like numbers). Checks the set of types, not each item: this runs on every answer."""
    kinds = set(map(type, items))
    if kinds <= {str}:
        return items
    if kinds <= {str, int}:
        return [str(item) for item in items]
    return None
