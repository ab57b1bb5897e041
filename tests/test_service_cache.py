"""The TTL cache behind key and student lookups: entries expire, refusals are never kept."""

from __future__ import annotations

from service.api.cache import TtlCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_entries_expire_after_ttl() -> None:
    clock = Clock()
    cache: TtlCache[str, str] = TtlCache(ttl_s=10, size=4, clock=clock)
    cache.put("key", "alice")
    clock.now = 9.9
    assert cache.get("key") == "alice"
    clock.now = 10.0
    assert cache.get("key") is None
    assert cache.get("key") is None  # dropped, not resurrected


def test_put_again_restarts_the_ttl() -> None:
    clock = Clock()
    cache: TtlCache[str, str] = TtlCache(ttl_s=10, size=4, clock=clock)
    cache.put("key", "alice")
    clock.now = 8
    cache.put("key", "alice")
    clock.now = 15
    assert cache.get("key") == "alice"


def test_size_bound_drops_the_oldest() -> None:
    cache: TtlCache[int, int] = TtlCache(ttl_s=10, size=2, clock=Clock())
    for n in range(3):
        cache.put(n, n)
    assert [cache.get(n) for n in range(3)] == [None, 1, 2]


def test_zero_ttl_caches_nothing() -> None:
    cache: TtlCache[str, str] = TtlCache(ttl_s=0, size=4, clock=Clock())
    cache.put("key", "alice")
    assert cache.get("key") is None
