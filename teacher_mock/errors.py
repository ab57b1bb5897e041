"""The ways a request is refused, each with its HTTP status; rendered as `{"detail": message}`."""

from __future__ import annotations


class TeacherError(Exception):
    """A refusal the client can act on; `status` and `headers` go on the response."""

    status: int = 400

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.headers = headers or {}


class InvalidRequest(TeacherError):
    """The body or query is malformed or out of range."""

    status = 422


class BodyTooLarge(TeacherError):
    status = 413


class Unauthorized(TeacherError):
    status = 401

    def __init__(self, message: str) -> None:
        super().__init__(message, {"WWW-Authenticate": "Bearer"})


class AuthRefused(TeacherError):
    """Credentials another API's wire refuses, with that API's own status (401 or 403) and no
    `WWW-Authenticate: Bearer`, which would point its clients at the wrong scheme."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class NotFound(TeacherError):
    """A session wire's user has no stored interactions (never written, forgotten or evicted)."""

    status = 404


class RateLimited(TeacherError):
    """The key's token bucket is empty: retrying after `Retry-After` seconds succeeds."""

    status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, {"Retry-After": str(retry_after)})


class QuotaExhausted(TeacherError):
    """The key has no answered histories left: retrying does not help, hence 403 and not 429."""

    status = 403


class InjectedFault(TeacherError):
    """A failure the operator asked for (fault injection), not a bug."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status
