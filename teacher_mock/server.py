"""Running the teacher under uvicorn: in this process, in several workers, or in a thread.

With `workers > 1` uvicorn starts fresh processes that each rebuild the app from the
environment (`app_from_env`), so quota counters and rate-limit buckets are per process: a key
can get up to `workers` times its quota and rate. Use one worker when those limits must hold
exactly (benchmarks that read `/v1/usage` as a witness do). The session wires (recombee,
personalize) refuse several workers: a user written through one would be unknown to the next.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import uvicorn
from fastapi import FastAPI

from seqrec.artifacts import Artifact, load_artifact
from seqrec.serving.batcher import default_torch_threads
from seqrec.serving.process import freeze_startup_objects
from teacher_mock.app import create_app
from teacher_mock.sessions import check_workers
from teacher_mock.settings import TeacherSettings, settings_env


def serve(
    settings: TeacherSettings,
    host: str,
    port: int,
    workers: int = 1,
    artifact: Artifact | None = None,
    access_log: bool = False,
) -> None:
    """Serve until interrupted. Raises `ArtifactError` at once when the model cannot load, and
    ValueError for a session wire in several workers.

    `artifact`, when given, is served as is by a single worker; several workers each load
    their own copy from `settings.model_dir`. `access_log`: uvicorn's line per request, off
    unless asked for (`recmimic --verbose`): thousands of probes made thousands of lines.
    """
    check_workers(settings.wire, workers)
    _configure_logging()
    threads = settings.torch_threads or default_torch_threads(workers)
    settings = settings.model_copy(update={"torch_threads": threads})
    if workers == 1:
        torch.set_num_threads(threads)
        app = create_app(settings, artifact)
        freeze_startup_objects()
        uvicorn.run(app, host=host, port=port, log_level="info", access_log=access_log)
        return
    if artifact is None:  # fail here, once, rather than in every worker
        load_artifact(settings.model_dir, settings.device)
    for name, value in settings_env(settings).items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    uvicorn.run(
        "teacher_mock.server:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        access_log=access_log,
        timeout_worker_healthcheck=60,  # a worker imports torch and loads the model first
    )


def app_from_env() -> FastAPI:
    """App factory for uvicorn worker processes: settings come from `RECMIMIC_TEACHER_*`."""
    _configure_logging()
    settings = TeacherSettings()  # type: ignore[call-arg]  # model_dir comes from the env
    torch.set_num_threads(settings.torch_threads or default_torch_threads(1))
    app = create_app(settings)
    freeze_startup_objects()
    return app


@contextmanager
def running(
    app: FastAPI, host: str = "127.0.0.1", port: int = 0, startup_timeout_s: float = 10.0
) -> Iterator[str]:
    """Serve `app` in a background thread (tests, benchmarks, the demo); yields its URL.

    Port 0 takes any free port.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, port))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the teacher server did not start")
            time.sleep(0.01)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def _configure_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
