"""Student models in memory: loaded on first use, the least recently used dropped beyond a few.

A student answers the teacher's contract (`seqrec.serving`): raw ids in, the top-k unseen raw
ids out, with the same request checks and the same ranking code as the black box, so a student
can stand in for the teacher.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from seqrec.artifacts import ArtifactError, load_artifact
from seqrec.models import SequentialRecommender
from seqrec.serving.batcher import rank_histories
from seqrec.serving.catalogue import Catalogue
from seqrec.serving.contract import check_request
from service.db.models import Student
from service.errors import Gone
from service.settings import ServiceSettings

log = logging.getLogger("service.students")


@dataclass(frozen=True)
class LoadedStudent:
    model: SequentialRecommender
    catalogue: Catalogue
    version: str  # sha256 of the weights, sent as X-Model-Version like the teacher does

    def recommend(
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
        return [self.catalogue.to_raw(r.items) for r in rank_histories(self.model, dense, k)]


class StudentModels:
    """An LRU of loaded students, shared by the request threads.

    Loading happens under the lock: loads are rare (once per student while it stays cached) and
    this keeps two requests from loading the same artifact twice.
    """

    def __init__(self, capacity: int, device: str = "cpu") -> None:
        self.capacity = capacity
        self.device = device
        self._loaded: OrderedDict[str, LoadedStudent] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, student: Student) -> LoadedStudent:
        """The student's model, loading it if needed; `Gone` when its artifact cannot load."""
        with self._lock:
            loaded = self._loaded.get(student.id)
            if loaded is None:
                loaded = self._load(student)
                self._loaded[student.id] = loaded
                while len(self._loaded) > self.capacity:
                    self._loaded.popitem(last=False)
            self._loaded.move_to_end(student.id)
            return loaded

    def _load(self, student: Student) -> LoadedStudent:
        try:
            artifact = load_artifact(student.artifact_path, self.device)
        except ArtifactError as exc:
            log.error("student artifact unreadable", extra={"student": student.id, "why": str(exc)})
            raise Gone(f"student {student.id}'s model cannot be loaded") from None
        log.info("student loaded", extra={"student": student.id, "version": artifact.version})
        return LoadedStudent(artifact.model, Catalogue(artifact.info.item_ids), artifact.version)
