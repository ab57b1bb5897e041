"""Structured logs: one JSON object per line, with whatever `extra` fields the caller gave.

Secrets are kept out at the source: nothing logs headers, request bodies or job rows with
their teacher API key; the tests check captured logs for both kinds of key.
"""

from __future__ import annotations

import json
import logging
from typing import Any

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,  # which process, when `api_workers` runs several
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


# Libraries whose INFO lines are their own business, not the user's: alembic's migration steps
# at every start, uvicorn's line per request, httpx's line per request.
LIBRARY_LOGGERS = ("alembic", "uvicorn.access", "httpx", "httpcore")


def configure_logging(level: str = "INFO", verbose: bool = False) -> None:
    """JSON lines on stderr for the service and uvicorn (called once by `recmimic serve` and
    `recmimic worker`); the libraries' own logs only at WARNING unless `verbose`."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.WARNING)
