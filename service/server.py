"""`recmimic serve`: the API under uvicorn, with JSON logs, and by default one embedded worker.

With no configuration this is the whole service on one machine (DESIGN.md section 9): the API,
a worker thread sharing its SQLite database, and the embedded answer cache, all under `home`.
`--no-worker` serves the API alone, for deployments that run `recmimic worker` elsewhere.

`api_workers` > 1 runs that many API processes on one port (uvicorn's workers): one process's
event loop is the bottleneck of the student top-k routes, so on 2 cores two processes answer
more. Each process rebuilds its app from the environment (`app_from_env`), the way
`recmimic serve` itself reads its settings, and keeps its own caches and loaded students;
their Prometheus metrics are shared (`service.api.metrics.shared_between_processes`), so the
`/metrics` of any of them counts every process's requests. The embedded worker runs once, in
the parent.
"""

from __future__ import annotations

import threading

import torch
import uvicorn
from fastapi import FastAPI

from seqrec.serving.batcher import default_torch_threads
from seqrec.serving.process import freeze_startup_objects
from service.api.app import create_app
from service.api.metrics import shared_between_processes
from service.crypto import teacher_key_cipher
from service.db.engine import make_engine, session_factory
from service.logs import configure_logging
from service.settings import ServiceSettings
from service.store import JobStore
from service.worker import Worker, open_store

WORKER_STOP_TIMEOUT_S = 30.0
API_WORKER_START_S = 60  # a process imports torch and builds the app before it answers


def serve(
    settings: ServiceSettings, host: str, port: int, worker: bool = True, verbose: bool = False
) -> None:
    """Migrate the database, then serve (and work) until interrupted; `verbose` shows the
    libraries' logs too (alembic's migration steps among them)."""
    configure_logging(settings.log_level, verbose)
    # Like the teacher: student forward passes leave a core to the loop (the embedded worker's
    # training shares this process, and this cap, unless RECMIMIC_TORCH_THREADS says otherwise).
    torch.set_num_threads(settings.torch_threads or default_torch_threads(settings.api_workers))
    store = open_store(settings)
    embedded = Worker(settings, store) if worker else None
    thread = None
    if embedded is not None:
        thread = threading.Thread(target=embedded.run, name="worker", daemon=True)
        thread.start()
    try:
        if settings.api_workers == 1:
            app = create_app(settings, store)
            freeze_startup_objects()
            uvicorn.run(app, host=host, port=port, log_config=None, access_log=verbose)
        else:
            with shared_between_processes():
                uvicorn.run(
                    "service.server:app_from_env",
                    factory=True,
                    host=host,
                    port=port,
                    workers=settings.api_workers,
                    log_config=None,
                    access_log=verbose,
                    timeout_worker_healthcheck=API_WORKER_START_S,
                )
    finally:
        if embedded is not None and thread is not None:
            embedded.shutdown.set()  # the running stage stops; its lease lets another resume
            thread.join(timeout=WORKER_STOP_TIMEOUT_S)


def app_from_env() -> FastAPI:
    """App factory of one API process (`api_workers` > 1); the parent already migrated."""
    settings = ServiceSettings()
    configure_logging(settings.log_level)
    torch.set_num_threads(settings.torch_threads or default_torch_threads(settings.api_workers))
    sessions = session_factory(make_engine(settings.database()))
    app = create_app(settings, JobStore(sessions, teacher_key_cipher(settings)))
    freeze_startup_objects()
    return app
