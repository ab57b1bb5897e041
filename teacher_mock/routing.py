"""What every route of the black box shares: the teacher, the key checks, reading a body.

Apart from `teacher_mock.app` so that the other wire formats' routes (`teacher_mock.wires`)
can use them too.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError

from seqrec.serving.contract import describe_errors
from teacher_mock.errors import BodyTooLarge, InvalidRequest
from teacher_mock.faults import truncate
from teacher_mock.teacher import Teacher

Body = TypeVar("Body", bound=BaseModel)


def get_teacher(request: Request) -> Teacher:
    return request.app.state.teacher


TeacherDep = Annotated[Teacher, Depends(get_teacher)]
_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")


def api_key(
    teacher: TeacherDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    return teacher.authenticate(credentials.credentials if credentials else None)


def metered_key(teacher: TeacherDep, key: Annotated[str, Depends(api_key)]) -> str:
    """A valid key that still has a token in its rate-limit bucket."""
    teacher.limiter.check(key)
    return key


ApiKey = Annotated[str, Depends(api_key)]
MeteredKey = Annotated[str, Depends(metered_key)]


async def read_json(request: Request, model: type[Body], limit: int) -> Body:
    """Read at most `limit` bytes of body (413 beyond) and parse it as `model` (422 if bad)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    try:
        return model.model_validate_json(b"".join(chunks))
    except ValidationError as exc:
        raise InvalidRequest(describe_errors(exc.errors(), prefix="body")) from None


def json_answer(payload: dict[str, Any], cut: bool) -> Response:
    """A JSON answer, cut in half when a fault says so."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    return Response(truncate(body) if cut else body, media_type="application/json")
