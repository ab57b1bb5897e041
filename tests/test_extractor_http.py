"""The extractor's HTTP/1.1 client (extractor.http) against a scripted raw-socket server.

Each test tells the server what to answer per request; the server records how many connections
it accepted, so reuse and discarding of connections are checked from the other side.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from extractor import http
from extractor.http import ConnectError, HTTPClient, ProtocolError, ReadTimeout

Answer = Callable[[bytes], bytes | None]  # request head -> raw reply (None: say nothing)


def reply(body: bytes = b'{"ok": true}', status: str = "200 OK", extra: str = "") -> bytes:
    head = f"HTTP/1.1 {status}\r\ncontent-length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


class Server:
    """Answers each request with `answer(head)`; counts connections and keeps request heads."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.connections = 0
        self.heads: list[bytes] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                body = await reader.readexactly(length)
                self.heads.append(head + body)
                raw = self.answer(head)
                if raw is not None:
                    writer.write(raw)
                    if b"connection: close" in raw:
                        writer.close()
                        return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    def drop_idle(self) -> None:
        """Close every connection from the server's side, as a keep-alive timeout does."""
        for writer in self.writers:
            writer.close()


@asynccontextmanager
async def serving(answer: Answer) -> AsyncIterator[tuple[Server, str]]:
    server = Server(answer)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield server, f"http://127.0.0.1:{port}"
    finally:
        listener.close()


def test_requests_reuse_one_keep_alive_connection_and_send_headers_and_body() -> None:
    async def run() -> None:
        async with serving(lambda head: reply()) as (server, url):
            client = HTTPClient(url + "/api/", headers={"Authorization": "Bearer s3cret"})
            for _ in range(5):
                response = await client.request("POST", "/v1/x", b'{"a":1}', {"p": "q r"})
                assert response.status_code == 200 and response.json() == {"ok": True}
            assert server.connections == 1
            first = server.heads[0]
            assert first.startswith(b"POST /api/v1/x?p=q+r HTTP/1.1\r\n")
            assert b"authorization: Bearer s3cret\r\n" in first
            assert b"content-type: application/json\r\n" in first
            assert first.endswith(b'content-length: 7\r\n\r\n{"a":1}')
            assert "s3cret" not in repr(client)
            await client.aclose()

    asyncio.run(run())


def test_concurrent_requests_get_their_own_connections_then_share_them() -> None:
    async def run() -> None:
        async with serving(lambda head: reply(head.split(b" ")[1])) as (server, url):
            client = HTTPClient(url)
            paths = [f"/{i}" for i in range(4)]
            answers = await asyncio.gather(*(client.request("GET", p) for p in paths))
            assert [a.content.decode() for a in answers] == paths  # each its own answer
            await asyncio.gather(*(client.request("GET", p) for p in paths))
            assert server.connections == 4
            await client.aclose()

    asyncio.run(run())


def test_headers_status_and_chunked_bodies_are_decoded() -> None:
    chunked = (
        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nX-A: 1\r\nX-A: 2\r\n"
        b"transfer-encoding: chunked\r\n\r\n4\r\nabcd\r\n2\r\nef\r\n0\r\n\r\n"
    )

    async def run() -> None:
        async with serving(lambda head: chunked) as (server, url):
            client = HTTPClient(url)
            response = await client.request("GET", "/")
            assert (response.status_code, response.reason_phrase) == (429, "Too Many Requests")
            assert response.headers["retry-after"] == "3" and response.headers["x-a"] == "1, 2"
            assert response.content == b"abcdef"
            await client.request("GET", "/")
            assert server.connections == 1  # chunked answers keep the connection usable
            await client.aclose()

    asyncio.run(run())


def test_connection_close_is_honoured() -> None:
    async def run() -> None:
        async with serving(lambda head: reply(extra="connection: close\r\n")) as (server, url):
            client = HTTPClient(url)
            for _ in range(3):
                assert (await client.request("GET", "/")).status_code == 200
            assert server.connections == 3
            await client.aclose()

    asyncio.run(run())


def test_a_connection_the_server_closed_while_idle_is_replaced_not_failed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http, "STALE_AFTER_S", 0.0)

    async def run() -> None:
        async with serving(lambda head: reply()) as (server, url):
            client = HTTPClient(url)
            await client.request("GET", "/")
            server.drop_idle()
            await asyncio.sleep(0)  # the server's side closes ...
            time.sleep(0.05)  # ... and the FIN arrives while this loop does not look
            assert (await client.request("GET", "/")).status_code == 200
            assert server.connections == 2
            await client.aclose()

    asyncio.run(run())


def test_a_timeout_is_sent_and_the_connection_is_not_reused() -> None:
    answers = iter([None, reply()])  # the first request is never answered

    async def run() -> None:
        async with serving(lambda head: next(answers)) as (server, url):
            client = HTTPClient(url, timeout_s=0.2)
            with pytest.raises(ReadTimeout) as caught:
                await client.request("GET", "/")
            assert caught.value.sent
            assert (await client.request("GET", "/")).status_code == 200
            assert server.connections == 2
            await client.aclose()

    asyncio.run(run())


def test_a_cancelled_request_does_not_leave_its_connection_in_the_pool() -> None:
    answers = iter([None, reply(b"second")])

    async def run() -> None:
        async with serving(lambda head: next(answers)) as (server, url):
            client = HTTPClient(url)
            task = asyncio.ensure_future(client.request("GET", "/"))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert (await client.request("GET", "/")).content == b"second"
            assert server.connections == 2
            await client.aclose()

    asyncio.run(run())


def test_garbage_and_early_close_are_protocol_errors() -> None:
    async def run(raw: bytes) -> ProtocolError:
        async with serving(lambda head: raw) as (_, url):
            client = HTTPClient(url)
            with pytest.raises(ProtocolError) as caught:
                await client.request("GET", "/")
            await client.aclose()
            return caught.value

    assert asyncio.run(run(b"NOT HTTP AT ALL\r\n\r\n")).sent
    cut = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\nconnection: close\r\n\r\nab"
    assert asyncio.run(run(cut)).sent


def test_connection_refused_is_never_sent() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def run() -> None:
        client = HTTPClient(f"http://127.0.0.1:{port}")
        with pytest.raises(ConnectError) as caught:
            await client.request("GET", "/")
        assert not caught.value.sent
        await client.aclose()

    asyncio.run(run())


def test_only_http_urls_are_accepted() -> None:
    with pytest.raises(ValueError, match="base URL"):
        HTTPClient("ftp://example.org")
