"""The service's student LRU owns one micro-batcher per loaded student and stops it on eviction.

No server: `StudentModels` is driven on an event loop directly, over tiny saved artifacts, and
the only task left when everything is closed must be the test's own.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tiny_teacher import save_tiny_teacher

from seqrec.artifacts import load_artifact
from seqrec.data.sequences import Sequences
from seqrec.inference import top_k
from service.db.models import Student
from service.errors import Gone
from service.settings import ServiceSettings
from service.students import StudentModels

ITEM_IDS = [str(100 + i) for i in range(30)]
HISTORY = ["100", "105", "117"]


@pytest.fixture(scope="module")
def artifact_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_teacher(tmp_path_factory.mktemp("student"), ITEM_IDS)


@pytest.fixture
def settings(tmp_path: Path) -> ServiceSettings:
    return ServiceSettings(home=tmp_path)


def student(student_id: str, artifact_dir: Path) -> Student:
    return Student(id=student_id, tenant="t", artifact_path=str(artifact_dir))


def test_eviction_waits_for_requests_in_flight_then_stops_the_batcher(
    artifact_dir: Path, settings: ServiceSettings
) -> None:
    dense = [ITEM_IDS.index(item) + 1 for item in HISTORY]
    model = load_artifact(artifact_dir).model
    want = [ITEM_IDS[i - 1] for i in top_k(model, Sequences.from_lists([dense]), 5)[0].tolist()]

    async def scenario() -> None:
        models = StudentModels(capacity=1)
        a, b = student("a", artifact_dir), student("b", artifact_dir)
        # b's load evicts a, which is still in use: a answers, and closes once released.
        async with models.use(a, settings) as first, models.use(b, settings) as second:
            assert first.evicted and not second.evicted
            assert await first.recommend([HISTORY], 5, batch=False, settings=settings) == [want]
        with pytest.raises(RuntimeError, match="batcher stopped"):
            await first.batcher.rank([dense], 5)
        async with models.use(b, settings) as again:
            assert again is second  # still cached: no reload, same batcher
            assert await again.recommend([HISTORY], 5, batch=False, settings=settings) == [want]
        await models.close()  # app shutdown
        with pytest.raises(RuntimeError, match="batcher stopped"):
            await second.batcher.rank([dense], 5)
        assert asyncio.all_tasks() == {asyncio.current_task()}

    asyncio.run(scenario())


def test_unreadable_artifact_is_gone_and_loads_nothing(
    tmp_path: Path, settings: ServiceSettings
) -> None:
    async def scenario() -> None:
        models = StudentModels(capacity=1)
        with pytest.raises(Gone, match="cannot be loaded"):
            async with models.use(student("x", tmp_path / "missing"), settings):
                pass
        assert asyncio.all_tasks() == {asyncio.current_task()}

    asyncio.run(scenario())
