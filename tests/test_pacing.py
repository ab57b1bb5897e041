"""The client's pace (extractor.pacing): a known rate kept, an unknown one found from 429s."""

from __future__ import annotations

import asyncio
import time

import pytest

from extractor.pacing import DECREASE, FLOOR_PER_S, NEAR, Pacer


def test_a_known_rate_is_never_exceeded() -> None:
    async def starts(pacer: Pacer, n: int) -> float:
        began = time.monotonic()
        await asyncio.gather(*(pacer.wait() for _ in range(n)))
        return time.monotonic() - began

    # 21 starts at 20 per second span at least a second, however the loop schedules them.
    assert asyncio.run(starts(Pacer(rate=20.0), 21)) >= 0.95
    assert asyncio.run(starts(Pacer(rate=None), 200)) < 0.5  # unknown: no pacing at all


def test_a_429_halves_what_was_sent_once_per_second_and_answers_win_it_back() -> None:
    async def run() -> list[float | None]:
        pacer = Pacer(rate=None)
        for _ in range(40):  # 40 starts within the last second
            await pacer.wait()
        pacer.refused()
        first = pacer.rate
        pacer.refused()  # the same burst's other refusals: no second cut
        second = pacer.rate
        for _ in range(200):
            pacer.answered()
        return [first, second, pacer.rate]

    first, second, later = asyncio.run(run())
    assert first == second == 40 * DECREASE
    assert later is not None and later > first  # additive increase


def test_a_429_after_answers_cuts_to_just_under_what_was_answered() -> None:
    """What came back in the last second is what the limit let through: the pace goes just
    under it, not to half of what was sent (a 200/s limit was kept at 179/s that way)."""

    async def run() -> float | None:
        pacer = Pacer(rate=None)
        for _ in range(300):  # a burst sent
            await pacer.wait()
        for _ in range(150):  # of which 150 were answered
            pacer.answered()
        pacer.refused()
        return pacer.rate

    assert asyncio.run(run()) == 150 * NEAR


def test_a_known_ceiling_holds_and_the_floor_too() -> None:
    async def run() -> tuple[float | None, float | None]:
        pacer = Pacer(rate=10.0)
        for _ in range(1000):
            pacer.answered()
        ceiling = pacer.rate
        cut = Pacer(rate=FLOOR_PER_S)
        cut.refused()
        return ceiling, cut.rate

    ceiling, floor = asyncio.run(run())
    assert ceiling == 10.0 and floor == FLOOR_PER_S


def test_a_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Pacer(rate=0.0)
