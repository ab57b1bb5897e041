"""Student models in memory: loaded on first use, the least recently used dropped beyond a few.

A student answers the teacher's contract (`seqrec.serving`): raw ids in, the top-k unseen raw
ids out, with the same request checks and the same micro-batched ranking as the black box, so a
student can stand in for the teacher.

Everything here runs on the event loop (loads go to a thread), so the LRU needs no thread lock.
Each loaded student owns a `MicroBatcher`, whose consumer task lives on that loop; an evicted
student's batcher is closed once the requests still using it are answered.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from seqrec.artifacts import ArtifactError, load_artifact
from seqrec.serving.batcher import MicroBatcher
from seqrec.serving.catalogue import Catalogue
from seqrec.serving.contract import check_request
from service.db.models import Student
from service.errors import Gone
from service.settings import ServiceSettings

log = logging.getLogger("service.students")


@dataclass(eq=False)
class LoadedStudent:
    catalogue: Catalogue
    version: str  # sha256 of the weights, sent as X-Model-Version like the teacher does
    batcher: MicroBatcher
    users: int = field(default=0, init=False)  # requests holding it; eviction waits for them
    evicted: bool = field(default=False, init=False)

    async def recommend(
        self, histories: Sequence[Sequence[str]], k: int, batch: bool, settings: ServiceSettings
    ) -> list[list[str]]:
        """Raw top-k ids per history; `ContractError` for what the contract refuses."""
        dense = check_request(
            self.catalogue,
            histories,
            k,
            batch=batch,
            max_k=min(settings.max_k, len(self.catalogue)),
            max_history=settings.max_history,
            max_batch=settings.max_batch,
        )
        return [self.catalogue.to_raw(r.items) for r in await self.batcher.rank(dense, k)]


class StudentModels:
    """An LRU of loaded students, used from the event loop only.

    Loading happens under a lock: loads are rare (once per student while it stays cached) and
    this keeps two requests from loading the same artifact twice.
    """

    def __init__(self, capacity: int, device: str = "cpu") -> None:
        self.capacity = capacity
        self.device = device
        self._loaded: OrderedDict[str, LoadedStudent] = OrderedDict()
        self._loading = asyncio.Lock()

    @asynccontextmanager
    async def use(
        self, student: Student, settings: ServiceSettings
    ) -> AsyncIterator[LoadedStudent]:
        """The student's model for one request, loaded if needed; `Gone` when it cannot load.

        It stays usable until the block ends even if another load evicts it meanwhile.
        """
        loaded = self._loaded.get(student.id)
        if loaded is None:
            async with self._loading:
                loaded = self._loaded.get(student.id) or await self._load(student, settings)
        self._loaded.move_to_end(student.id)
        loaded.users += 1  # no await since the lookup: nothing can have evicted it in between
        try:
            yield loaded
        finally:
            loaded.users -= 1
            if loaded.evicted and loaded.users == 0:
                await loaded.batcher.close()

    async def close(self) -> None:
        """Stop every loaded student's batcher (app shutdown); later requests load afresh."""
        loaded, self._loaded = list(self._loaded.values()), OrderedDict()
        for student in loaded:
            student.evicted = True
            if student.users == 0:
                await student.batcher.close()

    async def _load(self, student: Student, settings: ServiceSettings) -> LoadedStudent:
        """Read the artifact off the loop, start its batcher, and make room in the LRU."""
        try:
            artifact = await asyncio.to_thread(load_artifact, student.artifact_path, self.device)
        except ArtifactError as exc:
            log.error("student artifact unreadable", extra={"student": student.id, "why": str(exc)})
            raise Gone(f"student {student.id}'s model cannot be loaded") from None
        log.info("student loaded", extra={"student": student.id, "version": artifact.version})
        batcher = MicroBatcher(artifact.model, settings.batch_max_rows)
        await batcher.start()
        loaded = LoadedStudent(Catalogue(artifact.info.item_ids), artifact.version, batcher)
        self._loaded[student.id] = loaded
        while len(self._loaded) > self.capacity:
            _, old = self._loaded.popitem(last=False)
            old.evicted = True
            if old.users == 0:
                await old.batcher.close()
        return loaded
