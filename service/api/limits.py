"""Request bodies larger than the service accepts are refused with 413 while they are read."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(HTTPException):
    """An HTTPException, so FastAPI's body reading lets it through to the 413 handler."""

    def __init__(self, message: str) -> None:
        super().__init__(413, message)


class BodyLimit:
    """ASGI middleware: the first read of a body whose declared Content-Length is over the
    limit fails at once; a body that streams past it fails while being read, before anything
    parses it.

    Only reading fails, not the request's arrival: the routes check the caller's key before they
    read (`KeyFirstRoute`), so a client without a valid key is told 401 whatever its body.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        declared = dict(scope["headers"]).get(b"content-length", b"")
        received = 0

        async def counted() -> Message:
            nonlocal received
            if declared.isdigit() and int(declared) > limit:
                message = f"body of {int(declared)} bytes exceeds the limit of {limit} bytes"
                raise BodyTooLarge(message)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(f"body exceeds the limit of {limit} bytes")
            return message

        await self.app(scope, counted, send)
