"""Request and response bodies of the black-box contract (DESIGN.md section 4)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, StrictInt


def _raw_id(value: object) -> str:
    """Raw ids are strings; integers are accepted because ML-100k's ids look like numbers."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError("item ids must be strings (or integers)")
    return str(value)


ItemId = Annotated[str, BeforeValidator(_raw_id)]


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    history: list[ItemId]  # oldest first
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


class ItemsPage(BaseModel):
    items: list[str]
    total: int
    next_offset: int | None


class UsageReport(BaseModel):
    used: int
    quota: int | None
    remaining: int | None


def describe_errors(errors: Sequence[Mapping[str, Any]], prefix: str = "", shown: int = 3) -> str:
    """A one-line message from pydantic errors, e.g. `body.k: Input should be a valid integer`."""
    parts = []
    for error in errors[:shown]:
        where = ".".join(str(part) for part in (prefix, *error["loc"]) if part != "")
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    more = f" (and {len(errors) - shown} more errors)" if len(errors) > shown else ""
    return "; ".join(parts) + more
