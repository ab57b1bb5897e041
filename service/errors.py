"""What the store refuses; the API renders each as `{"detail": message}` with its status."""

from __future__ import annotations


class ServiceError(Exception):
    """A refusal the caller can act on; `status` and `headers` go on the response."""

    status: int = 400
    headers: dict[str, str] = {}


class NotFound(ServiceError):
    """No such job or student for this tenant (another tenant's ids answer the same)."""

    status = 404


class Conflict(ServiceError):
    """The request contradicts the resource's state (idempotency key reuse, finished job)."""

    status = 409


class Gone(ServiceError):
    """The resource exists but what backs it on disk does not (a deleted student artifact)."""

    status = 410


class Invalid(ServiceError):
    """The request is well formed but outside the service's limits."""

    status = 422


class Unauthorized(ServiceError):
    """No key, or a key the service did not issue."""

    status = 401
    headers = {"WWW-Authenticate": "Bearer"}
