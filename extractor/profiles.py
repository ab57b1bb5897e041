"""API profiles: how to talk to a black box that does not speak recmimic's own contract.

A profile is a TOML file (or a built-in name) validated by `ApiProfile`; a mistake is one line
naming the field. It says how a request is made from histories (method, path, headers and a
JSON body template), where the answer's item ids are (JMESPath expressions, evaluated by the
`jmespath` library), where the model version is, how the key is sent, and where the catalogue
is listed. The client (`extractor.client`) renders and parses through it; without a profile it
keeps its own faster path for recmimic's contract (DESIGN.md section 4).

Body templates are JSON values in which a string that is exactly one placeholder is replaced
by a value: `{history}` (one history's ids, oldest first), `{histories}` (the list of them, for
a batch body; each made from the `each` template when there is one), `{k}`,
`{history_length}`. Only the `history` mode is supported: the history
travels in the request.
"""

from __future__ import annotations

import sys
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import jmespath
import orjson
from jmespath.exceptions import JMESPathError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

PLACEHOLDERS = ("{history}", "{histories}", "{k}", "{history_length}")


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


class RequestSpec(_Part):
    """One recommendation request. `batch`: the body holds `{histories}`, several at once."""

    method: Literal["POST", "PUT"] = "POST"
    path: str = Field(pattern=r"^/")
    body: Any
    each: Any = None  # a batch body's template for one history; `{histories}` is their list
    batch: bool = False
    batch_size: int = Field(default=256, ge=1, description="histories per batch request")
    headers: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _placeholders(self) -> RequestSpec:
        used = set(_placeholders_in(self.body)) | set(_placeholders_in(self.each))
        if self.each is not None and not ({"{history}"} <= set(_placeholders_in(self.each))):
            raise ValueError("`each` must hold {history}")
        wanted = "{histories}" if self.batch else "{history}"
        if wanted not in used:
            raise ValueError(f"the body must hold {wanted} (batch = {str(self.batch).lower()})")
        unknown = used - set(PLACEHOLDERS)
        if unknown:
            raise ValueError(f"unknown placeholders {sorted(unknown)}; known: {PLACEHOLDERS}")
        return self


class AnswerSpec(_Part):
    """Where the answer's ids are: `items` yields one id list (a single request) or one list
    per history (a batch request), best first. `model_version` is an expression into the body,
    `model_version_header` a header; whichever a response carries names the model."""

    items: str
    model_version: str | None = None
    model_version_header: str | None = "x-model-version"

    @field_validator("items", "model_version")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        return None if value is None else _expression(value)


class AuthSpec(_Part):
    """How the API key is sent: `Authorization: Bearer`, a header of its own (`name`), a query
    parameter (`name`), HTTP basic (the key as `user:password`), or not at all."""

    kind: Literal["bearer", "header", "query", "basic", "none"] = "bearer"
    name: str | None = None

    @model_validator(mode="after")
    def _named(self) -> AuthSpec:
        if self.kind in ("header", "query") and not self.name:
            raise ValueError(f"auth kind {self.kind!r} needs a name")
        return self


class CatalogueSpec(_Part):
    """`GET path` lists the item ids (`items`: where a page holds them), page by page; without
    a path the catalogue is learnt from the data and the answers (`extractor.catalogue`).

    `paging`: "offset" (`offset_param` and `limit_param`; the next offset at `next`, else
    pages follow each other until `total` ids or an empty page), "cursor" (the next page's
    cursor at `next`, sent as `cursor_param`; none: the last page) or "next-link" (the next
    page's URL or path at `next`, on the same host)."""

    path: str | None = Field(default=None, pattern=r"^/")
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


class LimitsSpec(_Part):
    """What the API's terms allow: `rate` requests per second at most (kept exactly; unknown:
    found from its 429s, `extractor.pacing`)."""

    rate: float | None = Field(default=None, gt=0)


class ApiProfile(_Part):
    """Everything the extractor needs to know about one black box."""

    name: str
    mode: Literal["history"] = "history"
    request: RequestSpec
    answer: AnswerSpec
    auth: AuthSpec = AuthSpec()
    catalogue: CatalogueSpec = CatalogueSpec()
    limits: LimitsSpec = LimitsSpec()

    @cached_property
    def _items(self) -> jmespath.parser.ParsedResult:
        return jmespath.compile(self.answer.items)

    @cached_property
    def _version(self) -> jmespath.parser.ParsedResult | None:
        expression = self.answer.model_version
        return None if expression is None else jmespath.compile(expression)

    def body(self, histories: list[list[str]], k: int) -> bytes:
        """The request body for these histories (one unless the profile batches)."""
        each = self.request.each
        listed = (
            histories
            if each is None
            else [
                _render(each, {"{history}": h, "{history_length}": len(h), "{k}": k})
                for h in histories
            ]
        )
        values = {
            "{history}": histories[0],
            "{histories}": listed,
            "{k}": k,
            "{history_length}": len(histories[0]),
        }
        return orjson.dumps(_render(self.request.body, values))

    def found_items(self, payload: Any) -> Any:
        """What `answer.items` finds in an answer body (None: nothing)."""
        return self._items.search(payload)

    def answers(self, payload: Any, n: int) -> list[list[Any]] | None:
        """The n id lists an answer body holds, in request order; None when it holds no such
        thing (the caller treats that as a malformed body)."""
        found = self.found_items(payload)
        lists = found if self.request.batch else [found]
        if not isinstance(lists, list) or len(lists) != n:
            return None
        return lists if all(isinstance(items, list) for items in lists) else None

    def model_version(self, payload: Any) -> str | None:
        if self._version is None:
            return None
        found = self._version.search(payload)
        return None if found is None else str(found)


def _placeholders_in(template: Any) -> list[str]:
    if isinstance(template, str):
        return [template] if template.startswith("{") and template.endswith("}") else []
    if isinstance(template, dict):
        return [p for value in template.values() for p in _placeholders_in(value)]
    if isinstance(template, list):
        return [p for value in template for p in _placeholders_in(value)]
    return []


def _render(template: Any, values: dict[str, Any]) -> Any:
    if isinstance(template, str):
        return values.get(template, template)
    if isinstance(template, dict):
        return {key: _render(value, values) for key, value in template.items()}
    if isinstance(template, list):
        return [_render(value, values) for value in template]
    return template


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
        where = ".".join(str(part) for part in first["loc"]) or "(top)"
        message = first["msg"].removeprefix("Value error, ")
        raise ProfileError(f"API profile {path}: {where}: {message}") from None
