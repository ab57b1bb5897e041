"""A teacher middleware that holds one request mid-flight, so a test can kill its client there."""

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request, Response


class Gate:
    """Holds the n-th recommendation request of one key, before it is charged, until released;
    a held request is then refused (503, free), as the process that sent it is gone."""

    def __init__(self, key: str, hold_at: int) -> None:
        self.key, self.hold_at, self.seen = key, hold_at, 0
        self.holding, self.release = threading.Event(), threading.Event()

    def install(self, app: FastAPI) -> None:
        @app.middleware("http")
        async def hold(request: Request, call_next: Callable[..., Any]) -> Response:
            mine = request.headers.get("authorization") == f"Bearer {self.key}"
            if mine and request.url.path.startswith("/v1/recommend"):
                self.seen += 1
                if self.seen == self.hold_at:
                    self.holding.set()
                    while not self.release.is_set():
                        await asyncio.sleep(0.01)
                    return Response(status_code=503)
            return await call_next(request)
