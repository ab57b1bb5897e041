"""Concurrency helpers shared by the client, the run and the processes that start runs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


def run_event_loop(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on uvloop where it is installed (uvicorn[standard] brings it; not on
    Windows), else on asyncio's own loop.

    When the black box runs on the same machine, every microsecond of client CPU per request
    is taken from the server: uvloop's transports and timers cut the single-endpoint client
    from 0.133 to 0.126 ms of CPU per history (means of 5 alternating runs each,
    bench/results/extract-history.md).
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


async def gather_or_cancel(coroutines: Iterable[Awaitable[T]]) -> list[T]:
    """Await all; if one raises (e.g. a budget hook), cancel the rest rather than orphan them."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
