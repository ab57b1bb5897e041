"""Bodies of the teacher's own routes; the recommend bodies are the shared contract's
(`seqrec.serving.contract`), other wires' bodies are next to their routes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictBody(BaseModel):
    """A request body that refuses unknown fields: a client's typo is a 422, not ignored."""

    model_config = ConfigDict(extra="forbid")


class ItemsPage(BaseModel):
    items: list[str]
    total: int
    next_offset: int | None


class UsageReport(BaseModel):
    used: int
    quota: int | None
    remaining: int | None


class ErrorDetail(BaseModel):
    """Every refusal's body: `{"detail": "<one-line message>"}`."""

    detail: str
