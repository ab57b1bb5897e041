"""Unauthenticated probes: liveness, readiness (database, Redis when configured), metrics."""

from __future__ import annotations

import logging

import redis
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from service.api.deps import SettingsDep, StoreDep
from service.api.schemas import ErrorBody

log = logging.getLogger("service.health")
router = APIRouter(tags=["health"])
REDIS_TIMEOUT_S = 2.0


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"model": ErrorBody}})
def readyz(store: StoreDep, settings: SettingsDep) -> JSONResponse:
    """The database answers, and Redis too when one is configured; 503 naming what does not."""
    try:
        with store.sessions() as session:
            session.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        log.warning("database not ready", extra={"why": type(exc).__name__})
        return JSONResponse({"detail": "database unreachable"}, status_code=503)
    cache = "embedded"
    if settings.redis_url:
        try:
            client = redis.Redis.from_url(
                settings.redis_url,
                socket_timeout=REDIS_TIMEOUT_S,
                socket_connect_timeout=REDIS_TIMEOUT_S,
            )
            with client:
                client.ping()
        except redis.RedisError as exc:
            log.warning("cache not ready", extra={"why": type(exc).__name__})
            return JSONResponse({"detail": "cache (Redis) unreachable"}, status_code=503)
        cache = "redis"
    return JSONResponse({"status": "ready", "database": "ok", "cache": cache})


@router.get("/metrics", response_class=Response)
def metrics(request: Request) -> Response:
    """Prometheus text format."""
    body = generate_latest(request.app.state.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
