"""API profiles: how to talk to a black box that does not speak recmimic's own contract.

A profile is a TOML file (or a built-in name) validated by `ApiProfile`; a mistake is one line
naming the field. It says how a request is made from histories (method, path, query, headers
and a JSON body template, `extractor.templates`), where the answer's item ids are (JMESPath
expressions, evaluated by the `jmespath` library), where the model version is, how the key is
sent or the request signed (`extractor.auth`), where the catalogue is listed and what the
API's terms allow. The client (`extractor.client`) renders and parses through it; without a
profile it keeps its own faster path for recmimic's contract (DESIGN.md section 4).

Modes, i.e. how a probe's history reaches the black box:
- `history`: in the request (`{history}`, or `{histories}` for a batch body, each history made
  from the `each` template; `{events}`: the history as events made from the `event` template);
- `session`: first written as events under a fresh id (`session.write`, `{session_id}` and
  `{events}`, at most `session.max_events` per call), then that id is asked; the id is never
  used again, and `session.cleanup` is called after the answer where the API has one;
- `item`: one seed item per query (`{item}`), for related-items APIs: every query is cut to
  its most recent item, so the probe set records what was asked.

Placeholders: `{history}`, `{histories}`, `{history_length}`, `{item}` (the most recent id),
`{events}`, `{k}`, `{session_id}`, `{query_id}` (fresh per request); in an event:
`{item}`, `{position}` (0 oldest), `{timestamp}` (Unix seconds, the newest now, the others
`event_spacing_s` apart) and, in session mode, `{session_id}`.
"""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import jmespath
from jmespath.exceptions import JMESPathError
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from extractor.templates import placeholders_in

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

Mode = Literal["history", "session", "item"]
REQUEST_PLACEHOLDERS = frozenset(
    {"{history}", "{histories}", "{history_length}", "{item}", "{events}", "{k}"}
    | {"{session_id}", "{query_id}"}
)
EVENT_PLACEHOLDERS = frozenset({"{item}", "{position}", "{timestamp}", "{session_id}"})
WRITE_PLACEHOLDERS = frozenset({"{session_id}", "{events}", "{query_id}"})


class ProfileError(ValueError):
    """A profile that cannot be used; the message names the file and the field."""


def _expression(value: str) -> str:
    try:
        jmespath.compile(value)
    except JMESPathError as exc:
        raise ValueError(f"not a JMESPath expression: {str(exc).splitlines()[0]}") from None
    return value


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _one_line_headers(value: dict[str, str]) -> dict[str, str]:
    for name, text in value.items():
        if any(c in name + text for c in "\r\n") or not name.strip() or ":" in name:
            raise ValueError(f"header {name!r}: a header is one line, named without ':'")
    return value


Headers = Annotated[dict[str, str], AfterValidator(_one_line_headers)]


class CallSpec(_Part):
    """One HTTP call's template: `path` and `query` values may hold placeholders; a GET has no
    body, the others a JSON body. `base_url`: where this call goes when it is not the black
    box's URL (an API that writes events on one host and answers on another); the key goes
    there too, signed for that host."""

    method: Literal["GET", "POST", "PUT", "DELETE"] = "POST"
    base_url: str | None = Field(default=None, pattern=r"^https?://[^/?#\s]+(/[^?#\s]*)?$")
    path: str = Field(pattern=r"^/")
    query: dict[str, Any] = Field(default_factory=dict)
    body: Any = None
    headers: Headers = Field(default_factory=dict)

    @model_validator(mode="after")
    def _body(self) -> CallSpec:
        if self.method == "GET" and self.body is not None:
            raise ValueError("a GET request has no body")
        return self

    def placeholders(self) -> set[str]:
        return placeholders_in([self.path, self.query, self.body])


class RequestSpec(CallSpec):
    """The recommendation request. `batch`: the body holds `{histories}`, several at once."""

    each: Any = None  # a batch body's template for one history; `{histories}` is their list
    batch: bool = False

    def placeholders(self) -> set[str]:
        return super().placeholders() | placeholders_in(self.each)


class AnswerSpec(_Part):
    """Where the answer's ids are: `items` yields one id list (a single request) or one list
    per history (a batch request), best first. `model_version` is an expression into the body,
    `model_version_header` a header; whichever a response carries names the model.
    `scores`, when the API gives them: one number per id (one list per history in a batch),
    kept in the probe set's `scores` column."""

    items: str
    scores: str | None = None
    model_version: str | None = None
    model_version_header: str | None = "x-model-version"

    @field_validator("items", "scores", "model_version")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        return None if value is None else _expression(value)


class AuthSpec(_Part):
    """How the API key is sent: `Authorization: Bearer`, a header of its own (`name`), a query
    parameter (`name`), HTTP basic (the key as `user:password`), an HMAC signature of the
    request's path and query (`hmac`: the key is the secret; a timestamp parameter and a
    signature parameter are added), AWS Signature Version 4 (`sigv4`: the key is
    `ACCESS_KEY_ID:SECRET_ACCESS_KEY`; needs the `aws` extra), or not at all."""

    kind: Literal["bearer", "header", "query", "basic", "hmac", "sigv4", "none"] = "bearer"
    name: str | None = None
    hmac_algorithm: Literal["sha1", "sha256"] = "sha1"
    timestamp_param: str = "hmac_timestamp"
    signature_param: str = "hmac_sign"
    region: str | None = None
    service: str | None = None

    @model_validator(mode="after")
    def _named(self) -> AuthSpec:
        if self.kind in ("header", "query") and not self.name:
            raise ValueError(f"auth kind {self.kind!r} needs a name")
        if self.kind == "sigv4" and not (self.region and self.service):
            raise ValueError("auth kind 'sigv4' needs a region and a service")
        return self


class CatalogueSpec(_Part):
    """`GET path` lists the item ids (`items`: where a page holds them), page by page; or
    `file`, a file of ids, one per line (relative to the profile's own file); with neither the
    catalogue is learnt from the data and the answers (`extractor.catalogue`).

    `paging`: "offset" (`offset_param` and `limit_param`; the next offset at `next`, else
    pages follow each other until `total` ids or an empty page), "cursor" (the next page's
    cursor at `next`, sent as `cursor_param`; none: the last page) or "next-link" (the next
    page's URL or path at `next`, on the same host)."""

    path: str | None = Field(default=None, pattern=r"^/")
    file: Path | None = None
    items: str = "items"
    paging: Literal["offset", "cursor", "next-link"] = "offset"
    next: str | None = None  # default: next_offset, next_cursor or next, by paging
    total: str | None = "total"
    offset_param: str = "offset"
    limit_param: str = "limit"
    cursor_param: str = "cursor"

    @property
    def next_at(self) -> str:
        defaults = {"offset": "next_offset", "cursor": "next_cursor", "next-link": "next"}
        return self.next or defaults[self.paging]

    @field_validator("items", "next", "total")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        return None if value is None else _expression(value)

    @model_validator(mode="after")
    def _one_source(self) -> CatalogueSpec:
        if self.path is not None and self.file is not None:
            raise ValueError("a catalogue is a path or a file, not both")
        return self


class SessionSpec(_Part):
    """`session` mode: how a probe's events are written, and the cleanup after its answer."""

    write: CallSpec
    max_events: int = Field(default=100, ge=1, description="events per write call")
    cleanup: CallSpec | None = None
    id_prefix: str = "recmimic-"

    @model_validator(mode="after")
    def _placeholders(self) -> SessionSpec:
        used = self.write.placeholders()
        if "{events}" not in used:
            raise ValueError("session.write must hold {events}")
        _known(used, WRITE_PLACEHOLDERS, "session.write")
        if self.cleanup is not None:
            _known(self.cleanup.placeholders(), WRITE_PLACEHOLDERS - {"{events}"}, "cleanup")
        return self


class LimitsSpec(_Part):
    """What the API's terms allow: `rate` requests per second at most (kept exactly; unknown:
    found from its 429s, `extractor.pacing`), `histories_per_request` in a batch body,
    `max_history` ids per history (longer ones are cut to their most recent ids before they
    are asked, so the probe set records what was asked), and `cost_per_call`, the price of one
    recommendation call, for the summary's spend."""

    rate: float | None = Field(default=None, gt=0)
    histories_per_request: int = Field(default=256, ge=1)
    max_history: int | None = Field(default=None, ge=1)
    cost_per_call: float | None = Field(default=None, ge=0)


class ApiProfile(_Part):
    """Everything the extractor needs to know about one black box."""

    name: str
    mode: Mode = "history"
    request: RequestSpec
    answer: AnswerSpec
    event: Any = None  # one event's template, for `{events}`
    event_spacing_s: int = Field(default=60, ge=0)
    session: SessionSpec | None = None
    headers: Headers = Field(default_factory=dict)  # sent with every call (not the key)
    auth: AuthSpec = AuthSpec()
    catalogue: CatalogueSpec = CatalogueSpec()
    limits: LimitsSpec = LimitsSpec()

    @model_validator(mode="after")
    def _fits_mode(self) -> ApiProfile:
        request = self.request
        used = request.placeholders()
        _known(used, REQUEST_PLACEHOLDERS, "request")
        if request.each is not None and not request.batch:
            raise ValueError("request: `each` is for a batch body (batch = true)")
        if request.batch and "{histories}" not in used:
            raise ValueError("request: a batch body must hold {histories}")
        one = placeholders_in(request.each) if request.batch else used
        wanted = {"history": "{history}", "item": "{item}", "session": "{session_id}"}[self.mode]
        if request.batch and self.mode == "session":
            raise ValueError("request: a session is asked alone (batch = false)")
        if request.batch and request.each is None and self.mode == "history":
            one = {"{history}"}  # `{histories}` is then the list of the histories themselves
        if wanted not in one:
            raise ValueError(f"request must hold {wanted} in {self.mode} mode")
        if (self.mode == "session") != (self.session is not None):
            raise ValueError("session: needed in session mode, and only there")
        writes = self.session.write.placeholders() if self.session is not None else set()
        if "{events}" in used | writes:
            if self.event is None:
                raise ValueError("event: {events} needs an event template")
            known = EVENT_PLACEHOLDERS - ({"{session_id}"} if self.mode != "session" else set())
            _known(placeholders_in(self.event), known, "event")
            if "{item}" not in placeholders_in(self.event):
                raise ValueError("event: the template must hold {item}")
        if self.session is not None and "{session_id}" not in writes | placeholders_in(self.event):
            raise ValueError("session: the write or its events must hold {session_id}")
        return self

    @property
    def keeps_scores(self) -> bool:
        """Whether answers' scores are read, cached and written (`extractor.scores`)."""
        return self.answer.scores is not None

    @property
    def history_cap(self) -> int | None:
        """The most ids a history may have when asked (None: no limit)."""
        return 1 if self.mode == "item" else self.limits.max_history

    def found_items(self, payload: Any) -> Any:
        """What `answer.items` finds in an answer body (None: nothing)."""
        return _compiled(self.answer.items).search(payload)

    def answers(self, payload: Any, n: int) -> list[list[Any]] | None:
        """The n id lists an answer body holds, in request order; None when it holds no such
        thing (the caller treats that as a malformed body)."""
        found = self.found_items(payload)
        lists = found if self.request.batch else [found]
        if not isinstance(lists, list) or len(lists) != n:
            return None
        return lists if all(isinstance(items, list) for items in lists) else None

    def found_scores(self, payload: Any, n: int) -> list[Any] | None:
        """What `answer.scores` finds: one entry per history asked (None: nothing, or no
        `answer.scores`)."""
        if self.answer.scores is None:
            return None
        found = _compiled(self.answer.scores).search(payload)
        lists = found if self.request.batch else [found]
        return lists if isinstance(lists, list) and len(lists) == n else None

    def model_version(self, payload: Any) -> str | None:
        if self.answer.model_version is None:
            return None
        found = _compiled(self.answer.model_version).search(payload)
        return None if found is None else str(found)


@lru_cache(maxsize=256)
def _compiled(expression: str) -> jmespath.parser.ParsedResult:
    """A JMESPath expression compiled once per process (by its text, so that a copy of a
    profile with another expression never reads the old one)."""
    return jmespath.compile(expression)


def _known(used: set[str], known: frozenset[str], where: str) -> None:
    unknown = used - known
    if unknown:
        raise ValueError(f"{where}: unknown placeholders {sorted(unknown)}; known: {sorted(known)}")


BUILT_IN: dict[str, dict[str, Any]] = {
    # MLflow's model server (`mlflow models serve`): a pyfunc taking a "history" column and
    # the `k` parameter (teacher_mock/mlflow_model.py), answering one id list per row.
    "mlflow": {
        "name": "mlflow",
        "request": {
            "path": "/invocations",
            "body": {
                "dataframe_split": {"columns": ["history"], "data": "{histories}"},
                "params": {"k": "{k}"},
            },
            "each": ["{history}"],
            "batch": True,
        },
        "answer": {"items": "predictions"},
        "catalogue": {},
    },
    # The open inference protocol (KServe v2, Triton, MLServer): one history as a BYTES tensor
    # named "history", the ids in an output tensor named "items".
    "open-inference": {
        "name": "open-inference",
        "request": {
            "path": "/v2/models/recommender/infer",
            "body": {
                "inputs": [
                    {
                        "name": "history",
                        "shape": [1, "{history_length}"],
                        "datatype": "BYTES",
                        "data": "{history}",
                    }
                ],
                "parameters": {"k": "{k}"},
            },
        },
        "answer": {"items": "outputs[?name=='items'] | [0].data", "model_version": "model_version"},
        "catalogue": {},
    },
}


def load_profile(source: str) -> ApiProfile:
    """A built-in profile by name, or a TOML file; `ProfileError` names what is wrong."""
    if source in BUILT_IN:
        return ApiProfile.model_validate(BUILT_IN[source])
    path = Path(source)
    try:
        data = tomllib.loads(path.read_text())
        _resolve_catalogue_file(data, path.parent)
    except OSError as exc:
        known = ", ".join(BUILT_IN)
        raise ProfileError(
            f"no API profile {source!r}: not a built-in ({known}) and not readable: {exc.strerror}"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"API profile {path}: not TOML: {exc}") from None
    try:
        return ApiProfile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        where = f"{where}: " if where else ""  # a check of the whole profile names its field
        raise ProfileError(f"API profile {path}: {where}{message}") from None


def _resolve_catalogue_file(data: Any, folder: Path) -> None:
    """A catalogue file named in a profile is relative to the profile's own file."""
    catalogue = data.get("catalogue") if isinstance(data, dict) else None
    if isinstance(catalogue, dict) and isinstance(catalogue.get("file"), str):
        catalogue["file"] = str(folder / catalogue["file"])
