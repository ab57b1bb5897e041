"""The service's FastAPI app: wiring only (state, middleware, error rendering, routers).

Every refusal is `{"detail": "<message>"}` with a 4xx status: validation errors (422), unknown
routes (404), bodies over the limit (413), the store's refusals (401, 404, 409, 410, 422). A
database that is locked or unreachable is a 503 to retry; any other unexpected error is logged
with its traceback and answered 500 with a generic message. Neither answer nor log line carries
a statement's parameters (the engine hides them), so no request value or key reaches them.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException

from seqrec.serving.catalogue import ContractError
from seqrec.serving.contract import describe_errors
from service.api import health, jobs, students
from service.api.cache import TtlCache
from service.api.limits import BodyLimit
from service.api.metrics import Metrics, RequestMetrics
from service.errors import ServiceError
from service.settings import ServiceSettings
from service.store import JobStore, open_store
from service.students import StudentModels

log = logging.getLogger("service.api")


def create_app(settings: ServiceSettings, store: JobStore | None = None) -> FastAPI:
    """The API over `store` (by default: the configured database, migrated to the latest)."""
    if store is None:
        store = open_store(settings)
    app = FastAPI(
        title="recmimic",
        summary="Extract a black-box sequential recommender into a local student model.",
        version="0.1.0",
    )
    app.state.settings = settings
    app.state.store = store
    app.state.students = StudentModels(settings.students_loaded, settings.device)
    app.state.tenants = TtlCache(settings.lookup_cache_s, settings.lookup_cache_size)
    app.state.owners = TtlCache(settings.lookup_cache_s, settings.lookup_cache_size)
    app.state.metrics = Metrics(store)
    for router in (health.router, jobs.router, students.router):
        app.include_router(router)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(ContractError, _contract_error)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(Exception, _unexpected_error)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=app.state.metrics)  # outermost: sees every 413
    return app


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"detail": str(exc.detail)}, exc.status_code, headers=exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": describe_errors(exc.errors())}, status_code=422)


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return JSONResponse({"detail": str(exc)}, exc.status, headers=exc.headers)


async def _contract_error(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=422)


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.error("database unavailable", exc_info=exc, extra={"path": request.url.path})
    return JSONResponse(
        {"detail": "the database is busy or unreachable; retry later"},
        status_code=503,
        headers={"Retry-After": "1"},
    )


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("unexpected error", exc_info=exc, extra={"path": request.url.path})
    return JSONResponse({"detail": "internal error"}, status_code=500)
