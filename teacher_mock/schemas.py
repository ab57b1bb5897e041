"""Bodies of the teacher's own routes; the recommend bodies are the shared contract's
(`seqrec.serving.contract`)."""

from __future__ import annotations

from pydantic import BaseModel


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
