"""`recmimic serve`: the API under uvicorn, with JSON logs.

Phase 2 starts the embedded worker beside the API here, so that `recmimic serve` with no
configuration runs API, worker and cache on one machine (DESIGN.md section 9).
"""

from __future__ import annotations

import uvicorn

from service.api.app import create_app
from service.logs import configure_logging
from service.settings import ServiceSettings


def serve(settings: ServiceSettings, host: str, port: int) -> None:
    """Migrate the database, then serve until interrupted."""
    configure_logging(settings.log_level)
    app = create_app(settings)
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False)
