"""HTTP face of the black box (DESIGN.md section 4): thin routes over `teacher_mock.teacher`.

Routes: `POST /v1/recommend`, `POST /v1/recommend/batch`, `GET /v1/items`, `GET /v1/usage`
(the key's own quota counter, which tests and benchmarks read as a witness) and `GET /healthz`
(no key); with another `wire` (`teacher_mock.wires`), that API's routes replace the first two,
and with a commercial API's wire (recombee, algolia, personalize) every route but `/healthz`
takes that API's credentials instead of a bearer key (`teacher_mock.foreign_auth`). Every
refusal is `{"detail": "<message>"}` with a 4xx status (injected faults are 5xx); in
recmimic's wire every response carries `X-Model-Version`. Recommendation bodies are read and
parsed by hand, after the key and rate checks, so that an unauthenticated or rate-limited client
is told so before anything else, and so that the size limit holds while the body is read.
Faults apply to the recommendation routes only, of whichever wire.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from seqrec.artifacts import Artifact, load_artifact
from seqrec.serving.contract import (
    BatchRecommendation,
    BatchRecommendRequest,
    Recommendation,
    RecommendRequest,
    describe_errors,
)
from teacher_mock.errors import TeacherError
from teacher_mock.foreign_auth import verifier_for
from teacher_mock.routing import ApiKey, MeteredKey, TeacherDep, json_answer, read_json
from teacher_mock.schemas import ErrorDetail, ItemsPage, UsageReport
from teacher_mock.settings import TeacherSettings, Wire
from teacher_mock.teacher import Teacher
from teacher_mock.wires import add_wire_routes

log = logging.getLogger("teacher_mock")


def create_app(settings: TeacherSettings, artifact: Artifact | None = None) -> FastAPI:
    """The teacher API for `artifact` (loaded from `settings.model_dir` when not given).

    Raises ValueError, before any model loads, when the wire cannot use the keys or the
    environment (a `personalize` key without a colon, botocore missing)."""
    verify_key = verifier_for(settings)
    if artifact is None:
        artifact = load_artifact(settings.model_dir, settings.device)
    teacher = Teacher(settings, artifact)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await teacher.batcher.start()
        try:
            yield
        finally:
            await teacher.batcher.close()

    app = FastAPI(title="recmimic teacher (black box)", lifespan=lifespan)
    app.state.teacher = teacher
    app.state.verify_key = verify_key
    _add_routes(app, settings.wire)
    add_wire_routes(app, settings.wire)
    app.add_exception_handler(TeacherError, _teacher_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    if settings.wire == "recmimic":
        app.add_middleware(ModelVersionHeader, version=teacher.version)
    log.info(
        "teacher model %s: %d items, %d API key(s), quota=%s, rate=%s/s, faults: error=%g "
        "timeout=%g truncate=%g latency=%gms",
        teacher.version[:12],
        len(teacher.catalogue),
        len(settings.api_keys),
        settings.quota,
        settings.rate,
        settings.error_rate,
        settings.timeout_rate,
        settings.truncate_rate,
        settings.latency_ms,
    )
    return app


def _refusal(description: str, headers: dict[str, tuple[str, str]] | None = None) -> dict[str, Any]:
    """An error response as OpenAPI shows it: `{"detail": str}`, and the headers it carries
    (name -> description and JSON type)."""
    doc: dict[str, Any] = {"model": ErrorDetail, "description": description}
    if headers:
        doc["headers"] = {
            name: {"description": text, "schema": {"type": kind}}
            for name, (text, kind) in headers.items()
        }
    return doc


_UNAUTHORIZED: dict[int | str, Any] = {
    401: _refusal(
        "Missing or unknown API key",
        {"WWW-Authenticate": ("The scheme to use: Bearer", "string")},
    )
}
_RATE_LIMITED: dict[int | str, Any] = {
    429: _refusal(
        "The key's rate limit is reached; retrying after Retry-After seconds succeeds",
        {"Retry-After": ("Seconds to wait before retrying", "integer")},
    )
}
_BAD_INPUT: dict[int | str, Any] = {422: _refusal("The body or query is malformed or out of range")}
_METERED = {**_UNAUTHORIZED, **_RATE_LIMITED, **_BAD_INPUT}
_RECOMMEND = {
    **_METERED,
    403: _refusal("The key's quota of answered histories is spent"),
    413: _refusal("The body exceeds the size limit"),
}


def _add_routes(app: FastAPI, wire: Wire) -> None:
    @app.get("/healthz")
    async def healthz(teacher: TeacherDep) -> dict[str, Any]:
        return {"status": "ok", "model_version": teacher.version, "items": len(teacher.catalogue)}

    _add_listing_routes(app)
    if wire == "recmimic":
        _add_recommend_routes(app)


def _add_recommend_routes(app: FastAPI) -> None:
    @app.post(
        "/v1/recommend",
        response_model=Recommendation,
        responses=_RECOMMEND,
        openapi_extra=_body_doc(RecommendRequest),
    )
    async def recommend(request: Request, teacher: TeacherDep, key: MeteredKey) -> Response:
        """The top-k unseen items for one history (oldest item first), best first."""
        body = await read_json(request, RecommendRequest, teacher.settings.max_body_bytes)
        answer = await teacher.recommend(key, [body.history], body.k, batch=False)
        return json_answer(answer.results[0].model_dump(exclude_none=True), answer.truncate)

    @app.post(
        "/v1/recommend/batch",
        response_model=BatchRecommendation,
        responses=_RECOMMEND,
        openapi_extra=_body_doc(BatchRecommendRequest),
    )
    async def recommend_batch(request: Request, teacher: TeacherDep, key: MeteredKey) -> Response:
        """Several histories in one request; each one counts against the quota."""
        body = await read_json(request, BatchRecommendRequest, teacher.settings.max_body_bytes)
        answer = await teacher.recommend(key, body.histories, body.k, batch=True)
        results = [result.model_dump(exclude_none=True) for result in answer.results]
        return json_answer({"results": results}, answer.truncate)


def _add_listing_routes(app: FastAPI) -> None:
    @app.get("/v1/items", responses=_METERED)
    async def items(
        teacher: TeacherDep,
        key: MeteredKey,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1)] = 100,
    ) -> ItemsPage:
        """The catalogue's raw ids; `limit` is capped at the server's page size."""
        limit = min(limit, teacher.settings.items_page_max)
        page = teacher.catalogue.page(offset, limit)
        end = offset + len(page)
        next_offset = end if end < len(teacher.catalogue) else None
        return ItemsPage(items=page, total=len(teacher.catalogue), next_offset=next_offset)

    @app.get("/v1/usage", responses=_UNAUTHORIZED)
    async def usage(teacher: TeacherDep, key: ApiKey) -> UsageReport:
        """This key's quota counter: answered histories so far (not rate limited)."""
        used = teacher.quota.usage(key)
        return UsageReport(used=used.used, quota=used.quota, remaining=used.remaining)


def _body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI description of a body the route parses itself."""
    schema = model.model_json_schema()
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


async def _teacher_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TeacherError)
    return JSONResponse({"detail": str(exc)}, status_code=exc.status, headers=exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": describe_errors(exc.errors())}, status_code=422)


class ModelVersionHeader:
    """Adds `X-Model-Version` to every response, errors included (the extractor's cache key)."""

    def __init__(self, app: ASGIApp, version: str) -> None:
        self.app = app
        self.header = (b"x-model-version", version.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_version(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, send_with_version)
