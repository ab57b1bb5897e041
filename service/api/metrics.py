"""Prometheus metrics: requests by route and status, latency by route, jobs by status.

Each app gets its own registry, so several apps in one process (tests) never collide. Routes
are labelled by their template (`/v1/jobs/{job_id}`), never by the raw path, to keep the label
set small; requests that match no route share the label `unmatched`.

With several API processes (`api_workers` > 1) a scrape reaches one of them, so the request
metrics then live in files shared by all of them (prometheus_client's multiprocess mode, see
`shared_between_processes`) and every process's `/metrics` reports the sum.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.store import JobStore

log = logging.getLogger("service.access")
MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own variable


@contextmanager
def shared_between_processes() -> Iterator[None]:
    """Processes started inside the block (and importing prometheus_client after it began)
    record their metrics in one directory, and each one's `/metrics` adds up all of them.

    prometheus_client picks its multiprocess mode from `PROMETHEUS_MULTIPROC_DIR` when it is
    imported, so the parent sets it before uvicorn spawns the API processes. The directory is
    new for each service start and removed at its end: files of an earlier run, whose counts
    would be added to this one's, cannot be there.

    A dead API process's files stay: its requests happened, and a Prometheus counter must not
    go down when uvicorn replaces the process. `multiprocess.mark_process_dead` would only drop
    the files of live-mode gauges, and the service records none (the jobs gauge is read from the
    database at scrape time), so there is nothing to mark when a process dies.
    """
    with tempfile.TemporaryDirectory(prefix="recmimic-metrics-") as directory:
        os.environ[MULTIPROCESS_DIR_ENV] = directory
        try:
            yield
        finally:
            os.environ.pop(MULTIPROCESS_DIR_ENV, None)


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
    """The registry `/metrics` exposes and the request instruments.

    In one process the instruments are in the registry. Shared between processes, they write
    to the shared files instead and the registry reads those (`MultiProcessCollector`); the
    jobs gauge is in the registry either way, so it is reported once, not once per process.
    """

    def __init__(self, store: JobStore) -> None:
        self.registry = CollectorRegistry()
        shared = MULTIPROCESS_DIR_ENV in os.environ
        instruments = None if shared else self.registry
        self.requests = Counter(
            "recmimic_http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=instruments,
        )
        self.latency = Histogram(
            "recmimic_http_request_duration_seconds",
            "HTTP request latency by route",
            ["method", "route"],
            registry=instruments,
        )
        if shared:
            MultiProcessCollector(self.registry)
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
