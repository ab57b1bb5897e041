"""The event loop that extraction runs on: uvloop where installed, asyncio's otherwise."""

from __future__ import annotations

import asyncio
import sys

import pytest

from extractor.tasks import run_event_loop


async def _loop_module() -> str:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop()).__module__


def test_runs_on_uvloop_where_it_is_installed() -> None:
    pytest.importorskip("uvloop", reason="uvloop is not installed here (Windows)")
    assert run_event_loop(_loop_module()).startswith("uvloop")


def test_falls_back_to_asyncio_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # makes `import uvloop` raise ImportError
    assert run_event_loop(_loop_module()).startswith("asyncio")
