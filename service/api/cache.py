"""A small in-memory cache whose entries expire, for lookups the hot routes repeat per request.

Authenticating a key and finding the caller's student are database reads whose answers rarely
change; caching them for a few seconds takes both off the request path. An entry is trusted for
`ttl_s` at most, so a key removed from the database is refused at most that long afterwards.
Only answers the database gave are cached, never refusals: an unknown key or student is looked
up again on every request. Used from the event loop only, so it needs no lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """At most `size` entries, each kept `ttl_s` seconds; the oldest go first when full.

    `ttl_s` = 0 caches nothing. `clock` is there for tests to move time.
    """

    def __init__(
        self, ttl_s: float, size: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s = ttl_s
        self.size = size
        self._clock = clock
        self._entries: dict[K, tuple[V, float]] = {}  # insertion order: oldest first

    def get(self, key: K) -> V | None:
        """The value put for `key` less than `ttl_s` ago, else None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[1] <= self._clock():
            del self._entries[key]
            return None
        return entry[0]

    def put(self, key: K, value: V) -> None:
        if self.ttl_s <= 0:
            return
        self._entries.pop(key, None)  # re-inserted last: it is now the newest
        self._entries[key] = (value, self._clock() + self.ttl_s)
        while len(self._entries) > self.size:
            del self._entries[next(iter(self._entries))]
