"""Bodies of the top-k contract and the checks every answering server applies to a request.

`POST .../recommend` takes `{"history": [raw ids, oldest first], "k": 100}` and answers
`{"items": [raw ids, best first]}`; `.../recommend/batch` takes `histories` and answers
`results`. A refused request raises `ContractError`, which each server renders as a 422.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt

from seqrec.serving.catalogue import Catalogue, ContractError


def _raw_id(value: object) -> str:
    """Raw ids are strings; integers are accepted because ML-100k's ids look like numbers."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError("item ids must be strings (or integers)")
    return str(value)


ItemId = Annotated[str, BeforeValidator(_raw_id)]


def _not_empty(value: object) -> object:
    """The message `check_request` gives an empty history, before pydantic's own `min_length`
    (which the schema shows as `minItems: 1`) would word it."""
    if isinstance(value, list) and not value:
        raise ValueError("history is empty")
    return value


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # oldest first
    history: Annotated[list[ItemId], BeforeValidator(_not_empty), Field(min_length=1)]
    k: StrictInt = 100


class BatchRecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    histories: list[list[ItemId]]
    k: StrictInt = 100


class Recommendation(BaseModel):
    items: list[str]  # best first
    scores: list[float] | None = None  # only when the teacher runs with `scores` on


class BatchRecommendation(BaseModel):
    results: list[Recommendation]


def check_request(
    catalogue: Catalogue,
    histories: Sequence[Sequence[str]],
    k: int,
    *,
    batch: bool,
    max_k: int,
    max_history: int,
    max_batch: int,
) -> list[list[int]]:
    """Dense histories of a valid request; `ContractError` naming the first problem otherwise."""
    if not 1 <= k <= max_k:
        raise ContractError(f"k must be between 1 and {max_k}, got {k}")
    if batch and not histories:
        raise ContractError("histories is empty")
    if len(histories) > max_batch:
        raise ContractError(f"{len(histories)} histories in one batch; at most {max_batch}")
    dense = []
    for i, history in enumerate(histories):
        where = f"histories[{i}]" if batch else "history"
        if not history:
            raise ContractError(f"{where} is empty")
        if len(history) > max_history:
            raise ContractError(f"{where} has {len(history)} items; at most {max_history}")
        dense.append(catalogue.to_dense(history, where))
    return dense


def describe_errors(errors: Sequence[Mapping[str, Any]], prefix: str = "", shown: int = 3) -> str:
    """A one-line message from pydantic errors, e.g. `body.k: Input should be a valid integer`."""
    parts = []
    for error in errors[:shown]:
        where = ".".join(str(part) for part in (prefix, *error["loc"]) if part != "")
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    more = f" (and {len(errors) - shown} more errors)" if len(errors) > shown else ""
    return "; ".join(parts) + more
