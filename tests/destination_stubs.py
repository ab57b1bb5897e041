"""Stand-ins for the destination tests: a resolver that answers one made-up name, and a spy on
the HTTP client's connect step that fails the test rather than connect anywhere but loopback."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest

from extractor.http import HTTPClient

NAME = "teacher.test"


class FakeDNS:
    """`socket.getaddrinfo` answering `address` for `NAME` (or failing when None); any other
    name goes to the real resolver."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, address: str | None) -> None:
        self.address = address
        self.asked = 0
        real = socket.getaddrinfo

        def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
            if host != NAME:
                return real(host, port, *args, **kwargs)
            self.asked += 1
            if self.address is None:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
            return [(family, socket.SOCK_STREAM, 6, "", (self.address, int(port or 0)))]

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def spy_on_connects(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every address the HTTP client tries to connect to; a non-loopback one is never tried."""
    tried: list[str] = []
    real = HTTPClient._connect

    async def spy(self: HTTPClient, addresses: list[str], deadline: float) -> Any:
        tried.extend(addresses)
        for address in addresses:
            if address != self._host and not ipaddress.ip_address(address).is_loopback:
                raise AssertionError(f"tried to connect to {address}")
        return await real(self, addresses, deadline)

    monkeypatch.setattr(HTTPClient, "_connect", spy)
    return tried
