"""A small HTTP/1.1 client for the black box: keep-alive connections over asyncio, httptools.

Why not httpx.AsyncClient (which DESIGN.md section 5 names): on the 2-core machine the client and
the teacher share, httpx 0.28 with httpcore 1.0 spent 1.7 ms of client CPU per request over one
connection and 3.7 to 4.4 ms over 16 against a stub server (the pool re-scans, and polls with a
system call, every idle connection each time it hands one out; without `sniffio` installed
httpcore also retries a failing import on every lock), 0.6 ms even with its transport replaced,
and aiohttp 0.3 ms. This client spends 0.07 ms (docs/benchmarks.md, "Extraction
throughput"), which is what lets single-history requests come near the teacher's capacity.
It does only what the extractor needs: one request at a time per connection, bodies in full
(Content-Length or chunked, as httptools decodes them), http and https.

Failures raise `TransportError`; its `sent` says whether the request may have reached the
server, which decides whether a budget unit can be given back. A connection that times out, is
cancelled mid-exchange or answers badly is closed, never reused. An idle connection is checked
before reuse only after `STALE_AFTER_S` of idleness (servers close idle keep-alive connections,
uvicorn after 5 s), so a busy client makes no extra system call per request.

New connections follow a `DestinationPolicy` (`extractor.destinations`; by default the one in
force where the client is created): the host is resolved, every address checked, and the
connection made to a checked address; a refused one raises `DestinationRefused` before any
connection is attempted. Redirects are never followed (a 3xx is an answer like any other).
"""

from __future__ import annotations

import asyncio
import json
import select
import ssl
import time
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlencode, urlsplit

import httptools

from extractor import destinations
from extractor.destinations import DestinationPolicy

STALE_AFTER_S = 1.0
USER_AGENT = "recmimic-extractor"


class TransportError(Exception):
    """No HTTP response: `sent` is False only when the request certainly never left this host."""

    sent = True


class ConnectError(TransportError):
    """The connection could not be opened (refused, unreachable, or `ConnectTimeout`)."""

    sent = False


class ConnectTimeout(ConnectError):
    pass


class ReadTimeout(TransportError):
    """The request went out and no full response came back in time."""


class ProtocolError(TransportError):
    """The connection closed, or the server answered something that is not HTTP/1.1."""


@dataclass(frozen=True)
class Response:
    """One complete HTTP response; header names are lower-case (repeats joined by ", ")."""

    status_code: int
    reason_phrase: str
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes = b""

    def json(self) -> Any:
        return json.loads(self.content)


class _Connection(asyncio.Protocol):
    """One keep-alive connection; `exchange` sends a request and awaits its whole response."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[Response] | None = None
        self._reason = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self.closed = False
        self.reusable = False
        self.idle_since = time.monotonic()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ProtocolError(f"malformed HTTP response: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ProtocolError("the server closed the connection"))

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._reason, self._headers, self._body = b"", {}, []

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        previous = self._headers.get(key)
        self._headers[key] = text if previous is None else f"{previous}, {text}"

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is None or waiter.done():  # an answer nobody asked for: drop the connection
            self.close()
            return
        self.reusable = self._parser.should_keep_alive()
        status = self._parser.get_status_code()
        reason = self._reason.decode("latin-1")
        waiter.set_result(Response(status, reason, self._headers, b"".join(self._body)))

    # the client's side
    async def exchange(self, request: bytes, timeout_s: float) -> Response:
        assert self._transport is not None and self._waiter is None
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Response] = loop.create_future()
        self._waiter, self.reusable = waiter, False
        timer = loop.call_later(timeout_s, self._fail, ReadTimeout(f"no answer in {timeout_s} s"))
        try:
            self._transport.write(request)
            return await waiter
        finally:
            timer.cancel()
            self.idle_since = time.monotonic()

    def _fail(self, error: TransportError) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def is_stale(self) -> bool:
        """Closed, or idle long enough that the server may have closed it: then readable (EOF)
        though no request is pending, which one non-blocking poll tells."""
        if self.closed or self._transport is None or self._transport.is_closing():
            return True
        if time.monotonic() - self.idle_since < STALE_AFTER_S:
            return False
        sock = self._transport.get_extra_info("socket")
        if sock is None:
            return True
        readable, _, _ = select.select([sock.fileno()], [], [], 0)
        return bool(readable)

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()


class HTTPClient:
    """Requests to one origin over pooled keep-alive connections.

    The pool is not bounded here: the caller bounds how many requests are in flight, and each
    request holds one connection. `headers` are sent with every request and never shown in a
    repr or a message (the API key travels in them).
    """

    def __init__(
        self,
        base_url: str,
        headers: dict[str, str] | None = None,
        timeout_s: float = 30.0,
        connect_timeout_s: float = 5.0,
        policy: DestinationPolicy | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base URL must be http(s)://host[:port][/path], got {base_url!r}")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self._base_path = parts.path.rstrip("/")
        host = parts.netloc.rpartition("@")[2]
        fixed = {"host": host, "user-agent": USER_AGENT, "accept": "application/json"}
        fixed.update({name.lower(): value for name, value in (headers or {}).items()})
        self._head = "".join(f"{name}: {value}\r\n" for name, value in fixed.items()).encode()
        self._timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._policy = policy if policy is not None else destinations.current()
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()

    def __repr__(self) -> str:
        return f"HTTPClient({self._host}:{self._port})"

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """Send one request (`body` as JSON; `headers` besides the client's own) and return the
        whole response; `TransportError` when none came back, `DestinationRefused` when the
        policy refuses the host."""
        target = self._base_path + path + (f"?{urlencode(params)}" if params else "")
        head = f"{method} {target} HTTP/1.1\r\n".encode() + self._head
        if headers:
            head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()).encode()
        if body is None:
            request = head + b"\r\n"
        else:
            length = b"content-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body)
            request = head + length + body
        connection = await self._connection()
        try:
            response = await connection.exchange(request, self._timeout_s)
        except BaseException:  # timed out, failed or cancelled mid-exchange: never reuse it
            self._discard(connection)
            raise
        if connection.reusable and not connection.closed:
            self._idle.append(connection)
        else:
            self._discard(connection)
        return response

    async def _connection(self) -> _Connection:
        while self._idle:
            connection = self._idle.pop()
            if not connection.is_stale():
                return connection
            self._discard(connection)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._connect_timeout_s
        try:
            # Resolved and checked once; the connection goes to a checked address (see
            # extractor.destinations), so DNS cannot answer differently in between.
            if self._policy.allow_all:  # create_connection resolves, as it always did
                addresses = [self._host]
            else:
                addresses = await asyncio.wait_for(
                    self._policy.addresses(self._host, self._port), self._connect_timeout_s
                )
            connection = await self._connect(addresses, deadline)
        except asyncio.TimeoutError:
            raise ConnectTimeout(f"no connection in {self._connect_timeout_s} s") from None
        except OSError as exc:
            raise ConnectError(f"cannot connect: {exc.strerror or exc}") from None
        self._open.add(connection)
        return connection

    async def _connect(self, addresses: list[str], deadline: float) -> _Connection:
        """A connection to the first of `addresses` that accepts one before `deadline`."""
        loop = asyncio.get_running_loop()
        server_hostname = self._host if self._ssl is not None else None
        error: OSError = OSError("no address to connect to")
        for address in addresses:
            try:
                _, connection = await asyncio.wait_for(
                    loop.create_connection(
                        _Connection,
                        address,
                        self._port,
                        ssl=self._ssl,
                        server_hostname=server_hostname,
                    ),
                    max(0.0, deadline - loop.time()),
                )
                return connection
            except OSError as exc:
                error = exc
        raise error

    def _discard(self, connection: _Connection) -> None:
        connection.close()
        self._open.discard(connection)

    async def aclose(self) -> None:
        for connection in list(self._open):
            self._discard(connection)
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports finish closing
