"""Per-key usage limits: a token bucket for request rate and a counter for the quota.

Both live in process memory and are touched only from the event loop thread, so they need no
locks; with several uvicorn workers each process keeps its own (see `teacher_mock.server`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from teacher_mock.errors import QuotaExhausted, RateLimited


class TokenBucket:
    """`burst` tokens, refilled at `rate` per second; one request takes one token."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate, self.burst, self._clock = rate, burst, clock
        self._tokens, self._stamp = float(burst), clock()

    def take(self) -> float:
        """Take a token: 0.0 on success, else the seconds until one is available."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate


class RateLimiter:
    """One bucket per key; `rate=None` turns limiting off."""

    def __init__(self, rate: float | None, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, TokenBucket] = {}

    def check(self, key: str) -> None:
        if self.rate is None:
            return
        bucket = self._buckets.setdefault(key, TokenBucket(self.rate, self.burst))
        wait = bucket.take()
        if wait > 0:
            retry_after = max(1, math.ceil(wait))
            raise RateLimited(
                f"rate limit of {self.rate:g} requests/s (burst {self.burst}) exceeded; "
                f"retry after {retry_after} s",
                retry_after,
            )


@dataclass(frozen=True)
class Usage:
    used: int
    quota: int | None

    @property
    def remaining(self) -> int | None:
        return None if self.quota is None else max(0, self.quota - self.used)


class QuotaBook:
    """Answered histories per key. Reserve before answering so concurrency cannot overshoot."""

    def __init__(self, quota: int | None) -> None:
        self.quota = quota
        self._used: dict[str, int] = {}

    def reserve(self, key: str, n: int) -> None:
        used = self._used.get(key, 0)
        if self.quota is not None and used + n > self.quota:
            raise QuotaExhausted(
                f"quota exhausted: {used} of {self.quota} histories used, this request needs {n}"
            )
        self._used[key] = used + n

    def refund(self, key: str, n: int) -> None:
        self._used[key] = self._used.get(key, 0) - n

    def usage(self, key: str) -> Usage:
        return Usage(self._used.get(key, 0), self.quota)
