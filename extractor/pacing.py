"""When each request may leave: a pace a rate-limited API can keep up with.

A known rate (an API profile's `limits.rate`, or `--rate`) is kept exactly: requests leave at
most that many per second, so a black box with that token bucket refuses none. An unknown rate
is found from the 429s: what the black box answered in the second before a 429 is what its
limit let through, so the pace is cut to `NEAR` (85%) of that, or to half of what was sent
when nothing was answered; every answer then raises the pace by a little (`INCREASE_PER_S`
requests per second, every second: additive increase, multiplicative decrease, as TCP finds a
link's rate), so the client stays just under the limit instead of sending a storm of requests
after every `Retry-After`. Cutting to half of what was sent, as before, left a 200/s limit at
179 answers/s (the climb back took ten seconds each time); 90% of what was answered refused
up to 1.15% of requests, 85% at most 0.70% at 201 to 203 answers/s (`bench/rate.py`).

Our own, not a library's: aiolimiter and pyrate-limiter keep a rate fixed at construction,
and the rate here changes with every answer.
"""

from __future__ import annotations

import asyncio
from collections import deque

FLOOR_PER_S = 0.5  # the slowest pace an unknown rate is cut to
INCREASE_PER_S = 5.0  # requests per second added per second of answers (additive increase)
DECREASE = 0.5  # a 429 with nothing answered cuts the pace to this share of what was sent
NEAR = 0.85  # a 429 cuts the pace to this share of what was answered in the last second
CATCH_UP_S = 0.1  # late starts made up at most (a tenth of a second's burst)


class Pacer:
    """Spaces request starts to `rate` per second; None: no pacing until a 429 says otherwise.

    `ceiling`: a rate known from the API's terms is never exceeded and not adapted upwards past
    it. Concurrency-safe within one event loop: each `wait` takes the next start slot.
    """

    def __init__(self, rate: float | None = None, adaptive: bool = True) -> None:
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.rate = rate
        self.ceiling = rate
        self.adaptive = adaptive
        self._next_start: float | None = None  # the first start is now
        self._starts: deque[float] = deque()  # start times within the last second
        self._answers: deque[float] = deque()  # answer times within the last second
        self._last_cut = -1.0

    async def wait(self) -> None:
        """Return when the next request may leave."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self.rate is not None:
            # Starts follow a schedule; one that is late (a busy event loop wakes up late)
            # is made up, up to CATCH_UP_S of them, instead of pushing every later start back.
            scheduled = now if self._next_start is None else self._next_start
            start = max(scheduled, now - CATCH_UP_S)
            self._next_start = start + 1.0 / self.rate
            if start > now:
                await asyncio.sleep(start - now)
                now = start
        self._starts.append(now)
        _forget_older(self._starts, now)

    def refused(self) -> None:
        """A 429: slow down, at most once per second (the refusals of one burst count once)."""
        if not self.adaptive:
            return
        now = asyncio.get_running_loop().time()
        if now - self._last_cut < 1.0:
            return
        self._last_cut = now
        _forget_older(self._answers, now)
        if self._answers:  # what the limit let through
            self.rate = max(FLOOR_PER_S, len(self._answers) * NEAR)
            return
        sent = self.rate if self.rate is not None else float(len(self._starts))
        self.rate = max(FLOOR_PER_S, sent * DECREASE)

    def answered(self) -> None:
        """An answer: speed up a little, never past the known ceiling."""
        if not self.adaptive:
            return
        now = asyncio.get_running_loop().time()
        self._answers.append(now)
        _forget_older(self._answers, now)
        if self.rate is None:
            return
        raised = self.rate + INCREASE_PER_S / self.rate  # so that a second of answers adds ~5/s
        self.rate = raised if self.ceiling is None else min(self.ceiling, raised)


def _forget_older(times: deque[float], now: float) -> None:
    """Keep the times of the last second only."""
    while times and times[0] < now - 1.0:
        times.popleft()
