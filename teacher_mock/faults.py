"""Fault injection: the failures a real API shows, on demand and reproducibly (seeded).

One draw per request picks at most one fault: a 503, a hang followed by a 504, or a body cut in
half. Latency is added to every request, faulted or not.
"""

from __future__ import annotations

import asyncio
import enum
import random

from teacher_mock.settings import TeacherSettings


class Fault(enum.Enum):
    ERROR = "error"  # 503 at once; nothing was answered
    TIMEOUT = "timeout"  # hangs past any sane client timeout, then 504
    TRUNCATE = "truncate"  # 200 with half a body: not valid JSON


class FaultInjector:
    def __init__(self, settings: TeacherSettings) -> None:
        self.latency_s = settings.latency_ms / 1000
        self.hang_s = settings.timeout_hang_s
        self._thresholds = [
            (Fault.ERROR, settings.error_rate),
            (Fault.TIMEOUT, settings.timeout_rate),
            (Fault.TRUNCATE, settings.truncate_rate),
        ]
        self._random = random.Random(settings.fault_seed)

    async def draw(self) -> Fault | None:
        """Wait the configured latency, then pick this request's fault (if any)."""
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        u, edge = self._random.random(), 0.0
        for fault, rate in self._thresholds:
            edge += rate
            if u < edge:
                return fault
        return None

    async def hang(self) -> None:
        await asyncio.sleep(self.hang_s)


def truncate(body: bytes) -> bytes:
    """The first half of a body, which for any JSON object is not valid JSON."""
    return body[: len(body) // 2]
