"""Failures the extractor raises rather than records (recommendations fail per history instead)."""

from __future__ import annotations


class BlackBoxError(Exception):
    """The black box refused a request for good, or kept failing it past the retry limit."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
