"""`recmimic serve`: the API under uvicorn, with JSON logs, and by default one embedded worker.

With no configuration this is the whole service on one machine (DESIGN.md section 9): the API,
a worker thread sharing its SQLite database, and the embedded answer cache, all under `home`.
`--no-worker` serves the API alone, for deployments that run `recmimic worker` elsewhere.
"""

from __future__ import annotations

import threading

import torch
import uvicorn

from seqrec.serving.batcher import default_torch_threads
from service.api.app import create_app
from service.logs import configure_logging
from service.settings import ServiceSettings
from service.worker import Worker, open_store

WORKER_STOP_TIMEOUT_S = 30.0


def serve(settings: ServiceSettings, host: str, port: int, worker: bool = True) -> None:
    """Migrate the database, then serve (and work) until interrupted."""
    configure_logging(settings.log_level)
    # Like the teacher: student forward passes leave a core to the loop (the embedded worker's
    # training shares this process, and this cap, unless RECMIMIC_TORCH_THREADS says otherwise).
    torch.set_num_threads(settings.torch_threads or default_torch_threads(1))
    store = open_store(settings)
    app = create_app(settings, store)
    embedded = Worker(settings, store) if worker else None
    thread = None
    if embedded is not None:
        thread = threading.Thread(target=embedded.run, name="worker", daemon=True)
        thread.start()
    try:
        uvicorn.run(app, host=host, port=port, log_config=None, access_log=False)
    finally:
        if embedded is not None and thread is not None:
            embedded.shutdown.set()  # the running stage stops; its lease lets another resume
            thread.join(timeout=WORKER_STOP_TIMEOUT_S)
