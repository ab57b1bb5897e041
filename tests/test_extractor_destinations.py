"""The destination policy (extractor.destinations) and the clients that connect under it.

Only loopback is ever connected to. Refused addresses (169.254.169.254, 10.0.0.1) are only
classified or handed out by a stand-in resolver, and a spy on the client's connect step fails
the test (instead of connecting) if any non-loopback address reaches it.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from destination_stubs import NAME, FakeDNS, spy_on_connects
from fastapi import FastAPI, Request, Response

from distill import fidelity
from extractor import destinations
from extractor.client import BlackBoxClient, ClientConfig
from extractor.destinations import (
    ALLOW_ALL,
    DestinationPolicy,
    DestinationRefused,
    address_kind,
    parse_entry,
)
from extractor.errors import BlackBoxError
from extractor.http import ConnectError, HTTPClient
from extractor.tasks import run_event_loop
from teacher_mock.server import running

SETTING = "the setting TEST_ALLOW"
PUBLIC_ONLY = DestinationPolicy(setting=SETTING)
LOOPBACK_V4 = DestinationPolicy.allowing(["127.0.0.1"], SETTING)


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return spy_on_connects(monkeypatch)


@asynccontextmanager
async def serving() -> AsyncIterator[tuple[list[bytes], int]]:
    """A raw HTTP server on 127.0.0.1 that closes every connection after one answer, so each
    request needs (and is checked on) a new connection; yields the request heads and port."""
    heads: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}")
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield heads, listener.sockets[0].getsockname()[1]
    finally:
        listener.close()


# --- classification ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("fe80::1", "link-local"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),  # unique-local
        ("100.64.0.1", "shared (CGNAT)"),
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("239.1.2.3", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("192.0.2.1", "reserved"),  # documentation
        ("198.18.0.1", "reserved"),  # benchmarking
        ("::ffff:169.254.169.254", "link-local"),  # IPv4-mapped
        ("::ffff:10.0.0.1", "private"),
        ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 of 169.254.169.254
        ("2002:a9fe:a9fe::1", "link-local"),  # 6to4 of 169.254.169.254
        ("8.8.8.8", None),
        ("1.1.1.1", None),
        ("2606:4700:4700::1111", None),
        ("::ffff:8.8.8.8", None),
    ],
)
def test_addresses_are_classified(address: str, kind: str | None) -> None:
    assert address_kind(ipaddress.ip_address(address)) == kind


def test_allow_entries_are_networks_or_host_names() -> None:
    assert parse_entry("10.0.0.0/8") == ipaddress.ip_network("10.0.0.0/8")
    assert parse_entry("10.1.2.3/8") == ipaddress.ip_network("10.0.0.0/8")
    assert parse_entry(" 127.0.0.1 ") == ipaddress.ip_network("127.0.0.1/32")
    assert parse_entry("Teacher.Internal.") == "teacher.internal"
    for bad in ("", "bad host", "http://x", "10.0.0.0/33"):
        with pytest.raises(ValueError):
            parse_entry(bad)
    policy = DestinationPolicy.allowing(["10.0.0.0/8", "teacher"], SETTING)
    assert policy.refusal(ipaddress.ip_address("10.9.9.9")) is None
    assert policy.refusal(ipaddress.ip_address("169.254.169.254")) == "link-local"
    assert ALLOW_ALL.refusal(ipaddress.ip_address("169.254.169.254")) is None


def test_a_url_is_refused_by_its_literal_or_what_its_name_resolves_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for url in ("http://169.254.169.254/latest", "http://10.0.0.1:8000", "https://[::1]:443"):
        with pytest.raises(DestinationRefused, match=SETTING):
            PUBLIC_ONLY.check_url(url)
    dns = FakeDNS(monkeypatch, "169.254.169.254")
    with pytest.raises(DestinationRefused, match="resolves to a link-local address") as refused:
        PUBLIC_ONLY.check_url(f"http://{NAME}:8000")
    assert "169.254" not in str(refused.value)  # a name's addresses are not shown
    dns.address = "8.8.8.8"  # public: passes (nothing is sent to it)
    PUBLIC_ONLY.check_url(f"http://{NAME}")
    dns.address = None  # does not resolve now: left to the connection-time check
    PUBLIC_ONLY.check_url(f"http://{NAME}")
    dns.address = "10.1.2.3"
    DestinationPolicy.allowing([NAME], SETTING).check_url(f"http://{NAME}")  # named: trusted
    assert dns.asked == 3  # an allowed name is not even resolved
    ALLOW_ALL.check_url("http://169.254.169.254")


# --- the HTTP client --------------------------------------------------------------------------


def test_a_refused_address_is_never_connected_to(connects: list[str]) -> None:
    async def run() -> tuple[list[bytes], list[bytes]]:
        async with serving() as (heads, port):
            client = HTTPClient(f"http://127.0.0.1:{port}", policy=PUBLIC_ONLY)
            with pytest.raises(DestinationRefused, match=f"loopback address.*{SETTING}"):
                await client.request("GET", "/")
            refused = list(heads)
            allowed = HTTPClient(f"http://127.0.0.1:{port}", policy=LOOPBACK_V4)
            assert (await allowed.request("GET", "/")).status_code == 200
            await client.aclose()
            await allowed.aclose()
            return refused, heads

    refused, heads = asyncio.run(run())
    assert refused == [] and len(heads) == 1
    assert connects == ["127.0.0.1"]  # the refused client never reached the connect step


def test_every_new_connection_is_checked_against_the_name_resolved_then(
    monkeypatch: pytest.MonkeyPatch, connects: list[str]
) -> None:
    """DNS rebinding: allowed when first resolved, refused later; then the other way round.
    The connection goes to the address that was checked, and the Host header keeps the name."""
    dns = FakeDNS(monkeypatch, "127.0.0.1")

    async def run() -> list[bytes]:
        async with serving() as (heads, port):
            client = HTTPClient(f"http://{NAME}:{port}", policy=LOOPBACK_V4)
            assert (await client.request("GET", "/first")).status_code == 200
            dns.address = "169.254.169.254"
            with pytest.raises(DestinationRefused, match=f"{NAME} resolves to a link-local"):
                await client.request("GET", "/second")
            dns.address = "10.0.0.1"
            with pytest.raises(DestinationRefused, match="private address"):
                await client.request("GET", "/third")
            dns.address = "127.0.0.1"
            assert (await client.request("GET", "/fourth")).status_code == 200
            await client.aclose()
            return heads

    heads = asyncio.run(run())
    assert [head.split(b" ")[1] for head in heads] == [b"/first", b"/fourth"]
    assert all(f"host: {NAME}:".encode() in head for head in heads)
    assert connects == ["127.0.0.1", "127.0.0.1"]
    assert dns.asked == 4  # resolved once per connection


def test_an_allowed_name_may_resolve_anywhere_and_an_unknown_one_fails_to_connect(
    monkeypatch: pytest.MonkeyPatch, connects: list[str]
) -> None:
    dns = FakeDNS(monkeypatch, "127.0.0.1")

    async def run() -> None:
        async with serving() as (_, port):
            named = DestinationPolicy.allowing([NAME], SETTING)
            client = HTTPClient(f"http://{NAME}:{port}", policy=named)
            assert (await client.request("GET", "/")).status_code == 200
            await client.aclose()
            dns.address = None
            client = HTTPClient(f"http://{NAME}:{port}", policy=PUBLIC_ONLY)
            with pytest.raises(ConnectError, match="cannot connect"):
                await client.request("GET", "/")
            await client.aclose()

    asyncio.run(run())
    assert connects == ["127.0.0.1"]


# --- clients created inside `applied` (the worker's stages) -------------------------------------


@pytest.fixture(scope="module")
def local_teacher() -> Iterator[tuple[str, list[str]]]:
    """A stub black box on loopback that records every request it gets."""
    app = FastAPI()
    paths: list[str] = []

    @app.middleware("http")
    async def record(request: Request, call_next: Any) -> Response:
        paths.append(request.url.path)
        return await call_next(request)

    @app.post("/v1/recommend/batch")
    async def batch(request: Request) -> Response:
        n = len((await request.json())["histories"])
        body = '{"results": [' + ",".join(['{"items": ["x"]}'] * n) + "]}"
        return Response(body, media_type="application/json")

    with running(app) as url:
        yield url, paths


def test_the_policy_in_force_reaches_clients_made_in_new_event_loops() -> None:
    async def seen() -> DestinationPolicy:
        return await asyncio.ensure_future(asyncio.sleep(0, destinations.current()))

    assert run_event_loop(seen()) is ALLOW_ALL  # the extractor alone: anywhere
    with destinations.applied(PUBLIC_ONLY):
        assert run_event_loop(seen()) is PUBLIC_ONLY
        assert asyncio.run(seen()) is PUBLIC_ONLY
    assert destinations.current() is ALLOW_ALL


def test_a_refused_black_box_stops_the_client_without_a_request(
    local_teacher: tuple[str, list[str]], connects: list[str]
) -> None:
    url, paths = local_teacher
    before = len(paths)

    async def run() -> tuple[list[Any], str | None]:
        config = ClientConfig(base_url=url, api_key="k", batch=True, backoff_base_s=0.01)
        async with BlackBoxClient(config) as client:
            outcomes = await client.recommend_many([["a"], ["b"]], 5)
            again = await client.recommend_many([["c"]], 5)
            return outcomes + again, client.stopped

    with destinations.applied(PUBLIC_ONLY):
        outcomes, stopped = run_event_loop(run())
    assert stopped is not None and SETTING in stopped and "loopback" in stopped
    assert {o.reason for o in outcomes} == {stopped}  # final at once: no retries
    assert len(paths) == before and connects == []
    ok, _ = run_event_loop(run())  # outside: the extractor's default allows it
    assert all(o.ok for o in ok) and len(paths) == before + 2


def test_evaluation_against_a_url_follows_the_policy_in_force(
    local_teacher: tuple[str, list[str]], connects: list[str], tmp_path: Path
) -> None:
    """distill.fidelity asks through an extraction given no policy: `applied` covers it."""
    url, paths = local_teacher
    before = len(paths)
    with destinations.applied(PUBLIC_ONLY), pytest.raises(BlackBoxError, match=SETTING):
        fidelity.ask_test_histories(url, "k", "synthetic:6:10", tmp_path / "refused")
    assert len(paths) == before and connects == []
    with destinations.applied(LOOPBACK_V4):
        asked = fidelity.ask_test_histories(url, "k", "synthetic:6:10", tmp_path / "allowed")
    assert asked.stopped is None and asked.spent_total == 6  # one answer per test user
