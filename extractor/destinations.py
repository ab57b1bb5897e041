"""Where the extractor may connect: a policy on the black box's addresses (SSRF guard).

A service that sends requests to URLs its tenants choose must not become their way into the
networks only it can reach: cloud metadata (169.254.169.254), private ranges, its own host.
`DestinationPolicy` says which addresses are refused (by default every address that is not
public: loopback, link-local, private, CGNAT, unspecified, multicast, reserved) and which
networks or host names an operator allows anyway. `ALLOW_ALL` is the default, so the extractor
used on its own (`recmimic extract` against a local teacher) connects anywhere; the service's
worker applies its own policy with `applied`, which every client created inside picks up
(extraction and evaluation alike, the latter being built by code that takes no policy).

The check is made when each connection is made, not only when a URL is accepted: the host is
resolved once, every address it resolves to is checked, and the connection goes to a checked
address, never to a name resolved again. A name that resolved to a public address when the job
was posted and to a private one later (DNS rebinding) is refused before any packet leaves.

Why our own code rather than a library: the SSRF guards on PyPI (safehttpx, httpx-secure,
drawbridge and the like) are wrappers or transports for httpx or requests, and the extractor's
client is its own asyncio HTTP/1.1 client (`extractor.http`, for CPU reasons given there). What
it needs is small: classify with the standard `ipaddress` module, resolve with `getaddrinfo`,
connect to the checked address.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import re
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

POST_RESOLVE_TIMEOUT_S = 5.0  # a URL check whose name takes longer is left to connection time
_HOST_NAME = re.compile(r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_-]+)*$")

# Named ranges, checked in this order; anything else not global is "reserved".
_PRIVATE = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # CGNAT (RFC 6598)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # embeds an IPv4 address in its last 32 bits


class DestinationRefused(Exception):
    """The policy refuses this destination; nothing was sent. Final: retrying cannot help."""


def address_kind(address: IPAddress) -> str | None:
    """Why `address` is not public ("loopback", "link-local", ...), or None when it is.

    IPv6 forms that carry an IPv4 address (mapped, 6to4, Teredo, NAT64) are judged by that
    address too: ::ffff:169.254.169.254 reaches the metadata service as surely as the plain one.
    """
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            address = ipaddress.IPv6Address(str(address).split("%")[0])
        embedded = [address.ipv4_mapped, address.sixtofour]
        embedded += list(address.teredo or ())
        if address in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        for inner in embedded:
            if inner is not None and (kind := address_kind(inner)) is not None:
                return kind
        if address.ipv4_mapped is not None:
            return None  # its IPv4 address is public
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if any(address in network for network in _PRIVATE):
        return "private"
    if address in _SHARED:
        return "shared (CGNAT)"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "private"
    if address.is_reserved or address.is_private or not address.is_global:
        return "reserved"
    return None


def parse_entry(entry: str) -> IPNetwork | str:
    """One allow-list entry: a network (CIDR; a bare address is its own /32 or /128) or a host
    name (lower-case, no trailing dot). ValueError for anything else."""
    text = entry.strip()
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        pass
    name = text.lower().rstrip(".")
    if not _HOST_NAME.match(name):
        raise ValueError(f"{entry!r} is neither a network (CIDR) nor a host name")
    return name


def resolve(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to, in the resolver's order, without repeats.

    A module function (and `socket.getaddrinfo` looked up at each call) so that tests can
    stand in for DNS.
    """
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class DestinationPolicy:
    """Which addresses a client may connect to; see the module.

    `networks` and `hosts` are allowed whatever their kind (a host name allowed is trusted
    with every address it resolves to). `setting` is named in refusals, so whoever reads one
    knows what would allow it.
    """

    allow_all: bool = False
    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = frozenset()
    setting: str = "the allowed destinations"

    @classmethod
    def allowing(cls, entries: Iterable[str], setting: str) -> DestinationPolicy:
        """Public addresses, plus the networks and host names in `entries` (`parse_entry`)."""
        parsed = [parse_entry(entry) for entry in entries]
        networks = tuple(entry for entry in parsed if not isinstance(entry, str))
        hosts = frozenset(entry for entry in parsed if isinstance(entry, str))
        return cls(networks=networks, hosts=hosts, setting=setting)

    def refusal(self, address: IPAddress) -> str | None:
        """The kind of `address` when this policy refuses it, else None."""
        if self.allow_all or any(address in network for network in self.networks):
            return None
        return address_kind(address)

    def _refused(self, host: str, kind: str, literal: bool) -> DestinationRefused:
        # A name's addresses are not shown: they may be internal ones the caller should not learn.
        what = f"{host} is a {kind} address" if literal else f"{host} resolves to a {kind} address"
        return DestinationRefused(
            f"{what}, which this service does not connect to unless {self.setting} allows it"
        )

    def _check(self, host: str, addresses: Iterable[str], literal: bool) -> None:
        for text in addresses:
            kind = self.refusal(ipaddress.ip_address(text))
            if kind is not None:
                raise self._refused(host, kind, literal)

    def check_url(self, url: str) -> None:
        """Refuse (`DestinationRefused`) a URL whose host is, or now resolves to, a refused
        address. A name that does not resolve, or not within `POST_RESOLVE_TIMEOUT_S`, passes:
        connections are checked again when they are made."""
        host = urlsplit(url).hostname
        if self.allow_all or host is None:
            return
        literal = _literal(host)
        if literal is not None:
            self._check(host, [literal], literal=True)
            return
        if host.rstrip(".") in self.hosts:
            return
        future = _RESOLVER.submit(_resolve_now, host, 0)
        try:
            addresses = future.result(timeout=POST_RESOLVE_TIMEOUT_S)
        except (OSError, UnicodeError, concurrent.futures.TimeoutError):
            return
        self._check(host, addresses, literal=False)

    async def addresses(self, host: str, port: int) -> list[str]:
        """What to connect to for `host`: checked IP addresses (or `host` itself under
        `allow_all`, resolved by the connection as before). Raises `DestinationRefused` when
        any address `host` resolves to is refused, and OSError when it does not resolve."""
        if self.allow_all:
            return [host]
        literal = _literal(host)
        if literal is not None:
            self._check(host, [literal], literal=True)
            return [literal]
        loop = asyncio.get_running_loop()
        addresses = await loop.run_in_executor(None, _resolve_now, host, port)
        if not addresses:
            raise OSError(f"{host} resolves to no address")
        if host.rstrip(".") not in self.hosts:
            self._check(host, addresses, literal=False)
        return addresses


ALLOW_ALL = DestinationPolicy(allow_all=True)
_current: ContextVar[DestinationPolicy] = ContextVar("destination_policy", default=ALLOW_ALL)
_RESOLVER = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="resolve")


def current() -> DestinationPolicy:
    """The policy clients created now follow (`ALLOW_ALL` unless inside `applied`)."""
    return _current.get()


@contextmanager
def applied(policy: DestinationPolicy) -> Iterator[DestinationPolicy]:
    """Make `policy` the one clients created in this context follow, including those created
    by event loops started inside it (`asyncio.run` copies the context)."""
    token = _current.set(policy)
    try:
        yield policy
    finally:
        _current.reset(token)


def _resolve_now(host: str, port: int) -> list[str]:
    return resolve(host, port)  # the module attribute, so a test's stand-in is used


def _literal(host: str) -> str | None:
    """`host` as a normalised IP address when it is an IP literal, else None."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None
