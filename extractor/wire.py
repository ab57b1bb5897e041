"""Wire formats: how a request is written for histories and how an answer is read back.

`RecmimicWire` speaks recmimic's own contract (DESIGN.md section 4) on its fast path: orjson
and a fixed shape, about 0.5 us per answer. `ProfileWire` speaks whatever an API profile
(`extractor.profiles`) describes. The client (`extractor.client`) owns transport, retries and
the budget; a wire format owns only bytes and shapes. A parse never patches an answer up: a
wrong shape, a wrong count, ids that are neither strings nor integers, more than k ids or one
id twice make the whole body malformed (None), which the client retries.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from extractor.http import Response
from extractor.ids import JsonIds
from extractor.profiles import ApiProfile, CallSpec
from extractor.scores import as_scores
from extractor.templates import render, render_path

SINGLE_PATH = "/v1/recommend"
BATCH_PATH = "/v1/recommend/batch"
MODEL_VERSION_HEADER = "x-model-version"


@dataclass(frozen=True)
class WireRequest:
    """One HTTP request, before the transport adds the key or signs it."""

    method: str
    path: str
    body: bytes | None = None
    params: dict[str, Any] | None = None
    headers: dict[str, str] | None = None
    base_url: str | None = None  # another origin than the black box's URL (the profile's call)


@dataclass(frozen=True)
class Parsed:
    """A 200 body read back: one id list per history asked, and the model version it named."""

    answers: list[JsonIds]
    model_tag: str | None
    scores: list[list[float]] | None = None  # one list per answer, when the profile names them


class Wire(Protocol):
    """`batch`: True or False when the format says, None when the batch route is probed."""

    batch: bool | None
    batch_size: int
    version_header: str | None

    def request(
        self, histories: list[list[str]], k: int, batch: bool, session_id: str | None = None
    ) -> WireRequest:
        """The request asking for the top-k of `histories` (or of the session written for
        them, in session mode)."""
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

    sessions = False

    def request(
        self, histories: list[list[str]], k: int, batch: bool, session_id: str | None = None
    ) -> WireRequest:
        if batch:
            return WireRequest("POST", BATCH_PATH, orjson.dumps({"histories": histories, "k": k}))
        return WireRequest("POST", SINGLE_PATH, orjson.dumps({"history": histories[0], "k": k}))

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
    """The requests and answers an API profile describes: a history, a session written first
    (`writes`, then `request` for its id, then `cleanup`) or a seed item."""

    def __init__(self, profile: ApiProfile, batch_size: int) -> None:
        self.profile = profile
        self.batch = profile.request.batch
        limit = profile.limits.histories_per_request
        self.batch_size = min(batch_size, limit) if profile.request.batch else 1
        self.version_header = profile.answer.model_version_header
        self.sessions = profile.mode == "session"

    def request(
        self, histories: list[list[str]], k: int, batch: bool, session_id: str | None = None
    ) -> WireRequest:
        spec = self.profile.request
        values = self._values(histories[0], k, session_id)
        if spec.batch:
            each = spec.each
            rendered = [
                h if each is None else render(each, self._values(h, k, session_id))
                for h in histories
            ]
            values["{histories}"] = rendered
        return _call(spec, values)

    def new_session(self) -> str:
        """A session id never used before (ids are never reused: a session holds one probe)."""
        assert self.profile.session is not None
        return self.profile.session.id_prefix + uuid.uuid4().hex

    def writes(self, history: list[str], session_id: str) -> list[WireRequest]:
        """The calls that write `history` as events under `session_id`, oldest first."""
        session = self.profile.session
        assert session is not None
        events = self._events(history, session_id)
        size = session.max_events
        return [
            _call(session.write, {**self._ids(session_id), "{events}": events[i : i + size]})
            for i in range(0, len(events), size)
        ]

    def cleanup(self, session_id: str) -> WireRequest | None:
        session = self.profile.session
        if session is None or session.cleanup is None:
            return None
        return _call(session.cleanup, self._ids(session_id))

    def _values(self, history: list[str], k: int, session_id: str | None) -> dict[str, Any]:
        values = {
            "{history}": history,
            "{history_length}": len(history),
            "{item}": history[-1],
            "{k}": k,
            **self._ids(session_id),
        }
        if self.profile.event is not None:
            values["{events}"] = self._events(history, session_id)
        return values

    def _events(self, history: list[str], session_id: str | None) -> list[Any]:
        """The history as events; the newest is stamped now, the others earlier."""
        now, spacing, last = int(time.time()), self.profile.event_spacing_s, len(history) - 1
        shared = {} if session_id is None else {"{session_id}": session_id}
        return [
            render(
                self.profile.event,
                {"{item}": item, "{position}": i, "{timestamp}": now - (last - i) * spacing}
                | shared,
            )
            for i, item in enumerate(history)
        ]

    @staticmethod
    def _ids(session_id: str | None) -> dict[str, Any]:
        ids = {"{query_id}": uuid.uuid4().hex}
        if session_id is not None:
            ids["{session_id}"] = session_id
        return ids

    def parse(self, response: Response, n: int, k: int, batch: bool) -> Parsed | None:
        try:
            payload = orjson.loads(response.content)
        except ValueError:
            return None
        lists = self.profile.answers(payload, n)
        answers = None if lists is None else id_lists(lists, k)
        if answers is None:
            return None
        scores = None
        if self.profile.answer.scores is not None:
            found = self.profile.found_scores(payload, n) or [None] * n
            scores = [as_scores(s, len(a)) for s, a in zip(found, answers, strict=True)]
            if None in scores:  # as strict as the ids: retried, and named by `mismatch`
                return None
        header = self.version_header
        tag = self.profile.model_version(payload) or (
            response.headers.get(header.lower()) if header else None
        )
        return Parsed(answers, tag, scores)


def _call(spec: CallSpec, values: dict[str, Any]) -> WireRequest:
    body = None if spec.body is None else orjson.dumps(render(spec.body, values))
    params = {name: render(value, values) for name, value in spec.query.items()} or None
    path = render_path(spec.path, values)
    headers = dict(spec.headers) or None
    return WireRequest(spec.method, path, body, params, headers, spec.base_url)


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
    elif lists_ok(profile, payload, n, k):
        problem = (
            f"answer.scores {profile.answer.scores!r} did not find one number per id "
            f"(found {shape_of(profile.found_scores(payload, n))})"
        )
    else:
        problem = f"answer.items {expression!r} found ids that are not {k} or fewer distinct ids"
    return f"{problem}; the answer's shape: {shape_of(payload)}"


def lists_ok(profile: ApiProfile, payload: Any, n: int, k: int) -> bool:
    """Whether the answer's id lists are fine (so a mismatch is in its scores)."""
    lists = profile.answers(payload, n)
    return lists is not None and id_lists(lists, k) is not None


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
