"""What the black box does with a request, apart from HTTP: check, charge, fault, rank.

Order for /v1/recommend*: key (401) -> rate limit (429) -> body (413, 422) -> quota (403) ->
injected fault -> micro-batched top-k. Quota is charged per answered history (a batch of n costs
n). It is reserved before the model runs, so concurrent requests can never push a key past its
quota, and refunded when no answer was produced: an injected 503, an internal error, a request
cancelled before ranking. Injected timeouts and truncated bodies are charged: the answer was
produced and lost on the way, which a paid API bills all the same.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from seqrec.artifacts import Artifact
from seqrec.serving.batcher import MicroBatcher, Ranking
from seqrec.serving.catalogue import Catalogue, ContractError
from seqrec.serving.contract import Recommendation, check_request
from teacher_mock.errors import InjectedFault, InvalidRequest, Unauthorized
from teacher_mock.faults import Fault, FaultInjector
from teacher_mock.limits import QuotaBook, RateLimiter
from teacher_mock.sessions import SessionStore
from teacher_mock.settings import TeacherSettings


@dataclass(frozen=True)
class Answer:
    """One recommendation per history, and whether the body must be cut in half (a fault)."""

    results: list[Recommendation]
    truncate: bool


class Teacher:
    """A trained model behind keys, limits and faults; one per process."""

    def __init__(self, settings: TeacherSettings, artifact: Artifact) -> None:
        self.settings = settings
        self.version = artifact.version
        self.catalogue = Catalogue(artifact.info.item_ids)
        self.max_k = min(settings.max_k, len(self.catalogue))
        self.batcher = MicroBatcher(
            artifact.model, settings.batch_max_rows, settings.batch_wait_ms / 1000
        )
        self.limiter = RateLimiter(settings.rate, settings.bucket_size())
        self.quota = QuotaBook(settings.quota)
        self.faults = FaultInjector(settings)
        self.sessions = SessionStore(settings.max_sessions, settings.max_history)
        self._keys = [key.encode() for key in settings.key_values()]

    def authenticate(self, token: str | None) -> str:
        """The caller's key, or 401; compared in constant time."""
        if not token:
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        if not any(hmac.compare_digest(token.encode(), key) for key in self._keys):
            raise Unauthorized("invalid API key")
        return token

    async def recommend(
        self, key: str, histories: Sequence[Sequence[str]], k: int, batch: bool
    ) -> Answer:
        """Validate, charge and rank; raises a `TeacherError` for anything refused."""
        dense = self._validate(histories, k, batch)
        self.quota.reserve(key, len(dense))
        try:
            fault = await self.faults.draw()
            if fault is Fault.ERROR:
                raise InjectedFault("injected fault: service unavailable", 503)
            rankings = [] if fault is Fault.TIMEOUT else await self.batcher.rank(dense, k)
        except BaseException:
            self.quota.refund(key, len(dense))
            raise
        if fault is Fault.TIMEOUT:
            await self.faults.hang()
            raise InjectedFault("injected fault: timed out", 504)
        return Answer([self._render(r) for r in rankings], truncate=fault is Fault.TRUNCATE)

    def check_items(self, items: Sequence[str], where: str) -> None:
        """422 naming the unknown ids, if any: a session wire refuses a write it cannot rank."""
        try:
            self.catalogue.to_dense(items, where)
        except ContractError as exc:
            raise InvalidRequest(str(exc)) from None

    def _render(self, ranking: Ranking) -> Recommendation:
        scores = ranking.scores if self.settings.scores else None
        return Recommendation(items=self.catalogue.to_raw(ranking.items), scores=scores)

    def _validate(self, histories: Sequence[Sequence[str]], k: int, batch: bool) -> list[list[int]]:
        try:
            return check_request(
                self.catalogue,
                histories,
                k,
                batch=batch,
                max_k=self.max_k,
                max_history=self.settings.max_history,
                max_batch=self.settings.max_batch,
            )
        except ContractError as exc:
            raise InvalidRequest(str(exc)) from None
