"""An extraction run: a black box and a budget in, a probe set on disk out (DESIGN.md section 5).

Every history a query needs (its multi-scale views) goes cache -> budget -> client: cached
answers are free, misses are paid for under the budget and stored in the cache as soon as they
arrive, before any probe row is written. A query is written only when all its views are
answered or failed; a view the budget refused was never asked, so its query is left for a
later run rather than written as failed.

Everything a restart needs lives in the out directory: the budget ledger (so restarts never pay
past the budget), the embedded cache (unless a Redis URL is given) and the probe-set parts. A
resumed run skips queries already on disk and replays the rest through the cache, so answers
paid for before a kill cost nothing. SIGINT/SIGTERM cancel the run; complete queries are
flushed and a summary is still written.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import signal
import time
from collections.abc import Collection, Coroutine, Iterator, Sequence
from concurrent.futures import Future
from contextlib import AsyncExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from extractor.budget import Budget
from extractor.cache import (
    AnswerCache,
    json_cache_keys,
    open_cache,
    remember_model_tag,
    remembered_model_tag,
)
from extractor.catalogue import catalogue
from extractor.client import BUDGET_REFUSED, BlackBoxClient, ClientConfig, Outcome
from extractor.config import TEST_HISTORIES, ExtractConfig
from extractor.part_memo import RememberedPart, pack, part_key, unpack
from extractor.prefixes import History, Prefixes
from extractor.probeset import ProbeSetWriter, probe_table
from extractor.scores import get_scores, put_scores
from extractor.sources import Answer, AutoregressiveConfig, autoregressive, seeded_queries
from extractor.tasks import gather_or_cancel
from extractor.usage import settle_with_usage
from extractor.views import ProbePlan, plan_probes
from seqrec.hashing import write_atomically

LEDGER_FILENAME = "budget.ledger"
SUMMARY_FILENAME = "summary.json"
CATALOGUE_FILENAME = "catalogue.json"  # the black box's item ids, for the student's catalogue
FREQUENCY_BETA = 1.0  # the "frequency" source's preference for rarely chosen items
CHUNKS_IN_FLIGHT = 2  # one draining and being written while the next one's requests go out
_CLAIMED = Outcome(reason="claimed by another chunk")  # a placeholder, replaced before use
log = logging.getLogger("extractor.run")


class BudgetGate:
    """The client's `BudgetHook` over a durable `Budget`: all of a request's units or none."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.calls = 0  # requests paid for (answered, or charged without an answer)

    async def on_send(self, n_histories: int) -> bool:
        granted = self.budget.reserve(n_histories)
        if granted < n_histories:
            if granted:
                self.budget.settle(granted, 0, 0)
            return False
        return True

    async def on_result(self, n_histories: int, charged: bool | None, answered: int) -> None:
        paid = 0 if charged is False else n_histories  # unknown counts as paid
        self.calls += paid > 0
        self.budget.settle(n_histories, answered, paid)


@dataclass(frozen=True)
class ExtractSummary:
    """What one run did; also written to `summary.json` in the out directory."""

    paid: int  # budget units this run spent (answered, or charged without an answer)
    cached: int  # view histories answered by the cache, free
    failed: int  # queries written as failed
    queries_written: int  # queries written by this run, answered or failed
    queries_left: int  # queries not asked: budget spent, interrupted or refused
    budget_left: int
    budget: int  # the run's ceiling, all runs of this out directory together
    spent_total: int  # units spent by every run of this out directory
    wall_s: float
    model_tag: str | None
    stopped: str | None  # why the run ended before its last query; None when it finished
    usage: str | None = None  # what settling with the black box's usage count found on resume
    calls: int = 0  # recommendation requests this run paid for (a batch request is one)
    # distinct ids this run's answers named that the black box's listing lacks (None: it lists
    # none; answers copied whole from a remembered part are not looked at again)
    unlisted_items: int | None = None
    cost: float | None = None  # calls times the API profile's cost per call, when it has one

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Counts:
    cached: int = 0
    asked: int = 0
    written: int = 0
    failed: int = 0
    left: int = 0


class _Run:
    """The state of one run: where answers come from and where complete queries go."""

    def __init__(
        self,
        config: ExtractConfig,
        client: BlackBoxClient,
        cache: AnswerCache,
        gate: BudgetGate,
        writer: ProbeSetWriter,
        bar: tqdm,
        tag: str | None,
    ) -> None:
        self.config = config
        self.client = client
        self.cache = cache
        self.gate = gate  # the client's budget hook: it also counts the paid requests
        self.budget = gate.budget
        self.writer = writer
        self.bar = bar
        self.start_tag = tag  # the model tag the probe set's settings name (run_info)
        self.tag = tag  # the one cache keys are made with: the start tag, or the first answer's
        self.remembered_tag = tag
        self.done = writer.done_ids()
        self.counts = _Counts()
        self.stopped: str | None = None
        # cache key -> the outcome another chunk awaits (None: claimed, nobody waits yet)
        self._claims: dict[str, asyncio.Future[Outcome] | None] = {}
        self._remembering: list[asyncio.Future[None]] = []  # parts on their way to the cache
        self.scored = config.profile is not None and config.profile.keeps_scores
        self.listed: frozenset[str] | None = None  # the black box's catalogue, if it lists one
        self.unlisted: set[str] = set()  # ids this run's answers named that it lacks

    async def known(self, ids: np.ndarray, queries: Prefixes) -> None:
        """Every query known up front (query `ids[i]` is `queries[i]`); the ones already on
        disk are skipped. Chunks whose parts were remembered by an earlier run are copied
        (`extractor.part_memo`)."""
        done = np.fromiter(self.done, np.int64, len(self.done))
        fresh = np.flatnonzero(~np.isin(ids, done))
        self.bar.reset(total=len(fresh))
        try:
            await self.queries(ids[fresh].tolist(), queries.subset(fresh), keep_answers=False)
        except BaseException:
            await asyncio.gather(*self._remembering, return_exceptions=True)
            raise
        await asyncio.gather(*self._remembering)  # a cache that cannot store them fails the run

    async def data_free(self, items: Sequence[str]) -> None:
        """Grow sequences step by step; each step's prefixes are the next query ids."""
        config = self.config
        source = AutoregressiveConfig(
            n_sequences=config.n_sequences,
            group_size=config.group_size,
            min_length=config.min_length,
            max_length=config.max_length,
            frequency_beta=FREQUENCY_BETA if config.source == "frequency" else 0.0,
            seed=config.seed,
        )
        next_id = 0

        cap = config.history_cap

        async def ask(histories: list[History]) -> list[Answer]:
            nonlocal next_id
            ids = list(range(next_id, next_id + len(histories)))
            next_id += len(histories)
            asked = histories if cap is None else [history[-cap:] for history in histories]
            return await self.queries(ids, Prefixes.of(asked))

        steps = autoregressive(source, items, ask)
        try:
            async for _ in steps:
                if self.stopped:
                    break
        finally:
            await steps.aclose()

    async def queries(
        self, ids: list[int], queries: Prefixes, keep_answers: bool = True
    ) -> list[Answer]:
        """Full-view answers of `queries`, chunk by chunk; None where failed or not asked.

        `CHUNKS_IN_FLIGHT` chunks run at once, so the next chunk's requests fill the connection
        slots while one drains and its rows are written (a pause of about 0.3 s per chunk on the
        single endpoint when they ran one after the other). `keep_answers=False` returns none: a
        seeded run needs none, and holding every answer to the end made each of the garbage
        collector's full passes walk them all.
        """
        size = self.config.chunk_size
        window = asyncio.Semaphore(CHUNKS_IN_FLIGHT)

        async def chunk(start: int) -> list[Answer]:
            end = min(start + size, len(queries))
            async with window:
                if self.stopped:
                    self.counts.left += end - start
                    return [None] * (end - start)
                answers = await self._chunk(ids[start:end], queries[start:end], not keep_answers)
            return answers if keep_answers else []

        chunks = await gather_or_cancel(chunk(start) for start in range(0, len(queries), size))
        return [answer for answers in chunks for answer in answers] if keep_answers else []

    async def _chunk(self, ids: list[int], queries: Prefixes, memo: bool) -> list[Answer]:
        """Write the probe rows of a chunk's queries not yet on disk; `memo`: copy the chunk's
        part from the cache when an earlier run remembered it, and remember it otherwise
        (only where no answers are wanted back: a seeded run)."""
        fresh = [i for i, query_id in enumerate(ids) if query_id not in self.done]
        replay = [i for i, query_id in enumerate(ids) if query_id in self.done]
        answers: list[Answer] = [None] * len(queries)
        # A query already on disk only feeds a data-free source its answer: from the cache.
        known = await self.cache.get_many(self._keys(queries.subset(replay), self.tag))
        for i, items in zip(replay, known, strict=True):
            answers[i] = items
        if None in known:  # failed queries, or a cache that lost entries (evicted, moved)
            log.info(
                "%d queries on disk have no cached answer; they grow no further", known.count(None)
            )
        if not fresh:
            return answers
        part = None
        if memo and not replay and self.writer.run_info is not None:  # settings name the part
            part = part_key(self.writer.run_info, ids, queries.texts())
            if await self._copy_remembered(part, len(ids)):
                return answers
        plan = plan_probes(queries.subset(fresh), self.config.scales)
        results = await self._resolve(plan.histories, plan.texts)
        unasked = [row for row, outcome in enumerate(results) if self._unasked(outcome)]
        complete = ~np.isin(plan.index, unasked).any(axis=1)
        if unasked:  # those queries are left for a later run, not written as failed
            self.stopped = self.stopped or results[unasked[0]].reason
            self.counts.left += int((~complete).sum())
        kept = np.flatnonzero(complete)
        table, items = _chunk_table(
            [ids[fresh[q]] for q in kept.tolist()], plan, kept, results, self.scored
        )
        self._note_unlisted(table)
        if part is not None and len(kept) == len(ids) and self._all_answered(results):
            written = self.writer.add_part(table)
            remember = self._remember(part, len(results), written)
            self._remembering.append(asyncio.ensure_future(remember))
        else:
            self.writer.add_table(table)
        for q, answer in zip(kept.tolist(), items, strict=True):
            answers[fresh[q]] = answer
        self.counts.written += len(kept)
        self.counts.failed += sum(answer is None for answer in items)  # no list __eq__
        self._progress(len(kept))
        return answers

    def _note_unlisted(self, table: pa.Table) -> None:
        """Remember the ids a chunk's answers name that the listing lacks: the student learns
        them all the same (`distill.probes`), and the summary says how many there were. Each
        chunk's distinct ids by Arrow's kernels, then a set difference (`is_in` would import
        pandas, which a cached rerun never loads)."""
        if self.listed is None:
            return
        named = pc.list_flatten(table.column("items"))
        views = pc.list_flatten(pc.list_flatten(table.column("view_items")))
        for ids in (named, views):
            self.unlisted.update(set(pc.unique(ids).to_pylist()) - self.listed)

    async def _copy_remembered(self, key: str, rows: int) -> bool:
        """Write the part an earlier run remembered under `key`, if the cache has it whole."""
        value = await self.cache.get_part(key)
        part = None if value is None else unpack(value, rows)
        if part is None:
            return False
        self.writer.add_part(part.data, sha256=part.sha256)  # checked by `unpack`
        self.counts.cached += part.lookups
        self.counts.written += rows
        self._progress(rows)
        return True

    async def _remember(self, key: str, lookups: int, written: Future[bytes]) -> None:
        """Store a part in the cache once the writer has it on disk."""
        try:
            data = await asyncio.wrap_future(written)
        except Exception:  # the writer raises the same error from `close`
            return
        await self.cache.put_part(key, pack(RememberedPart(lookups, data)))

    def _all_answered(self, outcomes: list[Outcome]) -> bool:
        """Every history answered under the run's model tag, so that a copy of the chunk's
        part says what a rebuild from the cache would."""
        return all(outcome.ok and outcome.model_tag == self.start_tag for outcome in outcomes)

    async def _resolve(self, histories: Prefixes, texts: list[str]) -> list[Outcome]:
        """One outcome per history (`texts`: their `history_json`): from the cache, else paid
        for in batch-sized pieces.

        Chunks overlap, so a history can be wanted by two at once: the first claims its key
        before looking it up, and the other awaits that claim's outcome instead of paying again.
        """
        tag = self.tag
        keys = json_cache_keys(self.config.teacher_url, self.config.k, texts, tag)
        loop = asyncio.get_running_loop()
        claimed: dict[int, asyncio.Future[Outcome]] = {}
        mine: list[int] = []
        for i, key in enumerate(keys):
            if key not in self._claims:
                self._claims[key] = None  # a waiter's future is made only if one comes
                mine.append(i)
                continue
            waiter = self._claims[key]
            if waiter is None:
                waiter = self._claims[key] = loop.create_future()
            claimed[i] = waiter
        outcomes: list[Outcome] | None = None
        try:
            outcomes = await self._look_up_or_pay(histories, keys, tag, claimed.keys())
        finally:
            for i in mine:
                waiter = self._claims.pop(keys[i])
                if waiter is not None and outcomes is None:
                    waiter.cancel()  # the waiters share this failure
                elif waiter is not None:
                    waiter.set_result(outcomes[i])
        for i, claim in claimed.items():
            outcomes[i] = await claim
        # Answered by the other chunk: free for this one. A claim that failed is no cache hit.
        self.counts.cached += sum(outcomes[i].ok for i in claimed)
        return outcomes

    async def _look_up_or_pay(
        self, histories: Prefixes, keys: list[str], tag: str | None, skip: Collection[int]
    ) -> list[Outcome]:
        """Outcomes of the histories not in `skip` (claimed elsewhere; theirs are placeholders
        here): cached answers free, the misses paid for in batch-sized pieces. `keys` are made
        with the model tag `tag`."""
        own = [i for i in range(len(histories)) if i not in skip]
        hits = await self.cache.get_many([keys[i] for i in own])
        misses = [i for i, items in zip(own, hits, strict=True) if items is None]
        self.counts.cached += len(own) - len(misses)
        size = self.client.config.batch_size
        pieces = [misses[start : start + size] for start in range(0, len(misses), size)]
        answered = await gather_or_cancel(
            [self._pay(histories.subset(piece), [keys[i] for i in piece], tag) for piece in pieces]
        )
        outcomes = [_CLAIMED] * len(histories)
        found = [(i, items) for i, items in zip(own, hits, strict=True) if items is not None]
        scores = await get_scores(self.cache, [keys[i] for i, _ in found]) if self.scored else []
        for n, (i, items) in enumerate(found):
            outcomes[i] = Outcome(items, model_tag=tag, scores=scores[n] if scores else None)
        for piece, outs in zip(pieces, answered, strict=True):
            for i, outcome in zip(piece, outs, strict=True):
                outcomes[i] = outcome
        return outcomes

    async def _pay(self, histories: Prefixes, keys: list[str], tag: str | None) -> list[Outcome]:
        """Ask the black box, then cache what it answered before anything else happens.

        `keys` are the histories' cache keys under the model tag `tag`; an answer given under
        another tag (the model changed mid-run, or named itself only in its answers) is stored
        under that tag's key.
        """
        outcomes = await self.client.recommend_many(histories, self.config.k)
        self.counts.asked += len(histories)
        answered: dict[str, int] = {}  # cache key -> the outcome it stores
        retagged: dict[str | None, list[int]] = {}
        for i, outcome in enumerate(outcomes):
            if outcome.items is None:
                continue
            if outcome.model_tag == tag:
                answered[keys[i]] = i
            else:
                retagged.setdefault(outcome.model_tag, []).append(i)
        for tag, rows in retagged.items():
            answered.update(zip(self._keys(histories.subset(rows), tag), rows, strict=True))
        await self.cache.put_many({key: outcomes[i].items for key, i in answered.items()})
        if self.scored:
            scored = {key: outcomes[i].scores for key, i in answered.items()}
            await put_scores(self.cache, {key: s for key, s in scored.items() if s is not None})
        await self._learn_tag(outcomes)
        return outcomes

    async def _learn_tag(self, outcomes: list[Outcome]) -> None:
        """Take the model tag an answer names when the run began without one (a black box that
        names its model only in answers), so later lookups find what was paid under it; and
        remember it in the cache, for the next run of this endpoint to start with."""
        named = [o.model_tag for o in outcomes if o.items is not None and o.model_tag]
        if not named:
            return
        if self.tag is None:
            self.tag = named[-1]
            log.info("the black box names its model in its answers: %s", self.tag)
        if named[-1] != self.remembered_tag:
            self.remembered_tag = named[-1]
            await remember_model_tag(self.cache, self.config.teacher_url, named[-1])

    def _keys(self, histories: Prefixes, tag: str | None) -> list[str]:
        return json_cache_keys(self.config.teacher_url, self.config.k, histories.texts(), tag)

    def _unasked(self, outcome: Outcome) -> bool:
        """Refused before reaching the black box for good: the budget, or a 401/403 stop."""
        stopped = self.client.stopped
        return outcome.reason == BUDGET_REFUSED or (
            stopped is not None and outcome.reason == stopped
        )

    def _progress(self, written: int) -> None:
        looked_up = self.counts.cached + self.counts.asked
        hit_rate = self.counts.cached / looked_up if looked_up else 0.0
        self.bar.set_postfix(hits=f"{hit_rate:.0%}", budget_left=self.budget.remaining)
        self.bar.update(written)

    def summary(
        self, spent_before: int, wall_s: float, interrupted: bool, settled: str | None
    ) -> ExtractSummary:
        counts = self.counts
        profile = self.config.profile
        price = profile.limits.cost_per_call if profile is not None else None
        return ExtractSummary(
            paid=self.budget.spent - spent_before,
            cached=counts.cached,
            failed=counts.failed,
            queries_written=counts.written,
            queries_left=counts.left,
            budget_left=self.budget.remaining,
            budget=self.budget.limit,
            spent_total=self.budget.spent,
            wall_s=round(wall_s, 3),
            model_tag=self.tag,
            stopped="interrupted" if interrupted else self.stopped,
            usage=settled,
            calls=self.gate.calls,
            cost=None if price is None else round(self.gate.calls * price, 6),
            unlisted_items=None if self.listed is None else len(self.unlisted),
        )


def _chunk_table(
    query_ids: list[int],
    plan: ProbePlan,
    queries: np.ndarray,
    results: list[Outcome],
    scored: bool = False,
) -> tuple[pa.Table, list[Answer]]:
    """Probe rows of `queries` (positions in `plan`) from the outcomes of `plan.histories`,
    and their full views' answers (None: failed). The histories go to the probe set as one
    Arrow column taken from the queries' ids (`Prefixes.column`); `scored`: with the full
    views' scores."""
    full = plan.scales.index(1.0)
    views = [s for s in range(len(plan.scales)) if s != full]
    full_rows = plan.index[queries, full]
    view_rows = plan.index[queries][:, views]
    lengths = plan.histories.length
    outcomes = [results[row] for row in full_rows.tolist()]
    items = [outcome.items for outcome in outcomes]
    table = probe_table(
        query_ids,
        plan.histories.subset(full_rows).column(),
        items,
        [None if outcome.ok else outcome.reason or "failed" for outcome in outcomes],
        [plan.scales[s] for s in views],
        lengths[view_rows],
        [results[row].items for row in view_rows.reshape(-1).tolist()],
        [outcome.scores for outcome in outcomes] if scored else None,
    )
    return table, items


def load_seeded(config: ExtractConfig) -> Prefixes:
    """Queries from the dataset, in the black box's raw ids: prefixes of its TRAINING split
    (the seeded source), or each test user's history before its test item, in user order
    (`TEST_HISTORIES`). With `max_history`, each is cut to its most recent items, as a black
    box that caps histories needs (the mock teacher refuses more than 1,000 with a 422)."""
    users = dataset_histories(config)
    queries = (
        users
        if config.source == TEST_HISTORIES
        else seeded_queries(
            users, config.prefixes, seed=config.seed, whole_first=config.whole_first
        )
    )
    return capped(queries, config.history_cap)


def dataset_histories(config: ExtractConfig) -> Prefixes:
    """Each user's training history (`TEST_HISTORIES`: its history before the test item),
    whole, in the black box's raw ids, in user order."""
    from seqrec.data.dataset import leave_one_out
    from seqrec.data.loading import load_dataset

    assert config.dataset is not None
    data = load_dataset(config.dataset)
    split = leave_one_out(data)
    catalogue = data.item_ids.astype(object)  # one str per item, shared by every query
    given = split.test_input if config.source == TEST_HISTORIES else split.train
    return Prefixes(catalogue[given.items - 1], given.offsets[:-1], given.lengths)


def capped(queries: Prefixes, cap: int | None) -> Prefixes:
    """Each query cut to its most recent `cap` ids (None: as it is)."""
    if cap is None:
        return queries
    return queries.tails(np.arange(len(queries)), np.minimum(queries.length, cap))


@contextmanager
def _older_objects_frozen() -> Iterator[None]:
    """Keep the objects that exist before the run out of the garbage collector's full passes.

    A process that has imported torch and pandas holds millions of objects, and the answers a
    run keeps alive trigger full collections that walk all of them: measured, five pauses of up
    to 0.4 s in a 23 s single-endpoint run, each stalling every request in flight. Frozen
    objects are only skipped, not kept: `gc.unfreeze` hands them back when the run ends.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


async def _until_signal(work: Coroutine[Any, Any, None]) -> bool:
    """Run `work`, cancelled by SIGINT or SIGTERM; True when a signal stopped it."""
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    signalled = False

    def stop() -> None:
        nonlocal signalled
        signalled = True
        task.cancel()

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, Windows
            pass
    try:
        await task
    except asyncio.CancelledError:
        if not signalled:
            raise
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
    return signalled


def _client_config(config: ExtractConfig) -> ClientConfig:
    profile = config.profile
    return ClientConfig(
        base_url=config.teacher_url,
        api_key=config.api_key,
        max_concurrency=config.concurrency,
        timeout_s=config.timeout_s,
        batch_size=min(
            config.batch_size,
            profile.limits.histories_per_request if profile is not None else config.batch_size,
        ),  # also the pieces the run pays for together
        batch=config.batch,
        jitter_seed=config.seed,
        profile=config.profile,
        rate=config.rate,
    )


def _run_info(config: ExtractConfig, model_tag: str | None) -> dict[str, Any]:
    """What makes a probe set's rows comparable; a resumed run must match it. `scores` only
    when kept, so that probe sets written before scores existed still resume."""
    info = {
        "endpoint": config.teacher_url,
        "model_tag": model_tag,
        "k": config.k,
        "scales": list(config.scales),
        **config.query_source(),
    }
    if config.profile is not None and config.profile.keeps_scores:
        info["scores"] = True
    return info


@dataclass(frozen=True)
class ChosenQueries:
    """Queries chosen by the caller instead of the source (an adaptive round): `ids[i]` is the
    query id `queries[i]` is written under; ids already on disk are skipped."""

    ids: np.ndarray
    queries: Prefixes


async def extract(
    config: ExtractConfig, progress: bool = True, chosen: ChosenQueries | None = None
) -> ExtractSummary:
    """Run (or resume) an extraction into `config.out`; returns and writes its summary.
    `chosen`: ask those queries rather than the source's (whose settings still name the run).

    Raises `BlackBoxError` when the black box cannot be reached or refuses the key,
    `BudgetError` when another live run holds the out directory, `CacheError` when the cache
    cannot be used, and `ValueError` for a source that cannot start (no catalogue, bad data).
    """
    started = time.monotonic()
    # A dataset that cannot be read fails here, before the out directory or the black box.
    seeded = (
        load_seeded(config)
        if chosen is None and config.source in ("seeded", TEST_HISTORIES)
        else None
    )
    try:
        config.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(f"cannot create the out directory {config.out}: {exc.strerror}") from None
    async with AsyncExitStack() as stack:
        budget = Budget(config.budget, config.out / LEDGER_FILENAME)
        stack.callback(budget.close)
        cache = await open_cache(config.cache, config.out)
        stack.push_async_callback(cache.close)
        gate = BudgetGate(budget)
        client = BlackBoxClient(_client_config(config), gate)
        stack.push_async_callback(client.aclose)
        items = await catalogue(client)  # also learns the model tag, for the cache keys
        if seeded is None and chosen is None and not items:
            raise ValueError(
                "the black box lists no catalogue (GET /v1/items, or the API profile's "
                "catalogue path); use --source seeded"
            )
        if items and config.k > len(items):
            raise ValueError(
                f"k={config.k} exceeds the black box's catalogue of {len(items)} items; "
                f"use --k {len(items)} or less"
            )
        if items:
            _write_json(config.out / CATALOGUE_FILENAME, items)
        settled = await settle_with_usage(client, budget, config.out, quiet_s=config.timeout_s)
        if settled:
            log.info("%s", settled)
        spent_before = budget.spent
        # Where neither the catalogue nor anything before named the model: the tag this
        # endpoint's answers named last time, so what was paid under it is found again.
        tag = client.model_tag or await remembered_model_tag(cache, config.teacher_url)
        writer = ProbeSetWriter(
            config.out,
            rows_per_part=config.chunk_size,
            run_info=_run_info(config, tag),
            background=True,
        )
        stack.callback(writer.close)
        bar = stack.enter_context(tqdm(desc="extract", unit="q", disable=not progress))
        run = _Run(config, client, cache, gate, writer, bar, tag)
        if items:
            run.listed = frozenset(items)
        if chosen is not None:
            work = run.known(chosen.ids, chosen.queries)
        elif seeded is not None:
            work = run.known(np.arange(len(seeded)), seeded)
        else:
            work = run.data_free(items or [])
        with _older_objects_frozen():
            interrupted = await _until_signal(work)
        summary = run.summary(spent_before, time.monotonic() - started, interrupted, settled)
    _write_json(config.out / SUMMARY_FILENAME, summary.to_dict())
    return summary


def _write_json(path: Path, payload: Any) -> None:
    """Write through a temp file and rename, so a kill never leaves half a file."""
    write_atomically(path, (json.dumps(payload, indent=2) + "\n").encode())
