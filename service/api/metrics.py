"""Prometheus metrics: requests by route and status, latency by route, jobs by status.

Each app gets its own registry, so several apps in one process (tests) never collide. Routes
are labelled by their template (`/v1/jobs/{job_id}`), never by the raw path, to keep the label
set small; requests that match no route share the label `unmatched`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.store import JobStore

log = logging.getLogger("service.access")


class JobsCollector(Collector):
    """Reads job counts from the database at scrape time (the database is the truth)."""

    def __init__(self, store: JobStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("recmimic_jobs", "Jobs by status", labels=["status"])
        for status, count in self.store.job_counts().items():
            family.add_metric([status], count)
        yield family


class Metrics:
    """The app's registry and the request instruments in it."""

    def __init__(self, store: JobStore) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "recmimic_http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "recmimic_http_request_duration_seconds",
            "HTTP request latency by route",
            ["method", "route"],
            registry=self.registry,
        )
        self.registry.register(JobsCollector(store))


class RequestMetrics:
    """ASGI middleware: counts, times and logs every HTTP request (one JSON log line each)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client gets if the app dies before answering

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            elapsed = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(elapsed)
            log.info(
                "request",
                extra={
                    "method": method,
                    "route": route,
                    "path": scope["path"],
                    "status": status,
                    "ms": round(elapsed * 1000, 2),
                    "tenant": scope.get("state", {}).get("tenant"),
                },
            )
