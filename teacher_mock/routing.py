"""What every route of the black box shares: the teacher, the key checks, reading a body.

Apart from `teacher_mock.app` so that the other wire formats' routes (`teacher_mock.wires`)
can use them too. The key check is the wire's: a bearer key, unless the wire brings a scheme of
its own (`teacher_mock.foreign_auth`, kept on `app.state.verify_key`), which then guards every
route, recmimic's listing and usage routes included, so that a server that looks like another
API accepts only that API's credentials.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError

from seqrec.serving.contract import Recommendation, describe_errors
from teacher_mock.errors import BodyTooLarge, InvalidRequest, NotFound
from teacher_mock.faults import truncate
from teacher_mock.teacher import Teacher

Body = TypeVar("Body", bound=BaseModel)
# A wire's own authentication: the request -> the configured API key it proves (else a 4xx).
KeyVerifier = Callable[[Request], Awaitable[str]]


def get_teacher(request: Request) -> Teacher:
    return request.app.state.teacher


TeacherDep = Annotated[Teacher, Depends(get_teacher)]
_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")


async def api_key(
    request: Request,
    teacher: TeacherDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The caller's key, proven the way the wire's API proves it."""
    verify: KeyVerifier | None = request.app.state.verify_key
    if verify is not None:
        return await verify(request)
    return teacher.authenticate(credentials.credentials if credentials else None)


def metered_key(teacher: TeacherDep, key: Annotated[str, Depends(api_key)]) -> str:
    """A valid key that still has a token in its rate-limit bucket."""
    teacher.limiter.check(key)
    return key


ApiKey = Annotated[str, Depends(api_key)]
MeteredKey = Annotated[str, Depends(metered_key)]


async def read_body(request: Request, limit: int) -> bytes:
    """At most `limit` bytes of body (413 beyond), read once: a signature check may read it
    before the route does, and the route then gets the same bytes."""
    cached: bytes | None = getattr(request.state, "body", None)
    if cached is not None:
        return cached
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    request.state.body = b"".join(chunks)
    return request.state.body


async def read_json(request: Request, model: type[Body], limit: int) -> Body:
    """Read at most `limit` bytes of body (413 beyond) and parse it as `model` (422 if bad)."""
    body = await read_body(request, limit)
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise InvalidRequest(describe_errors(exc.errors(), prefix="body")) from None


def json_answer(payload: dict[str, Any], cut: bool) -> Response:
    """A JSON answer, cut in half when a fault says so."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    return Response(truncate(body) if cut else body, media_type="application/json")


def answer_scores(result: Recommendation, k: int, scale: float) -> list[float]:
    """Scores for an API whose answers carry them: the model's own when the teacher gives them
    (`settings.scores`), else `scale * (k - rank) / k`, which keeps the order and says nothing
    more about the model."""
    if result.scores is not None:
        return result.scores
    return [scale * (k - rank) / k for rank in range(len(result.items))]


def stored_history(teacher: Teacher, user_id: str) -> list[str]:
    """What a session wire stored for the user; 404 (nothing charged) when there is nothing."""
    history = teacher.sessions.history(user_id)
    if history is None:
        raise NotFound(f"user {user_id!r} has no stored interactions")
    return history
