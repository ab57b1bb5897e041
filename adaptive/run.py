"""The adaptive extraction's rounds: pay, train, score the unpaid candidates, pay for the best.

Everything lives under one directory: `probes/` (the extraction's probe set, cache and budget
ledger, as a one-shot run keeps them: a round is a set of parts), `rounds/rN.json` (the
queries round N chose and the ids they are written under, saved before anything is paid for
them), `students/rN` (the student trained after round N), `student/` (the final one, trained
on everything paid) and `adaptive.json` (each round's end, paid total, held-out agreement and
times). A killed run started again reads `adaptive.json` and the round files back: it resumes
in the round it was in, asks the same queries, and pays nothing twice (the ledger and cache
are the extraction's own; the budget stays a hard ceiling over every round).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from adaptive.candidates import (
    Candidates,
    answer_candidates,
    choose,
    dense,
    dense_hints,
    grown_candidates,
    seeded_candidates,
    with_nearest_answers,
)
from adaptive.config import AdaptiveConfig, StealError
from adaptive.informativeness import TOP, informativeness
from distill.config import DistillConfig
from distill.run import distill
from extractor.client import BUDGET_REFUSED
from extractor.config import ExtractConfig
from extractor.prefixes import Prefixes
from extractor.probeset import read_probe_set
from extractor.run import ChosenQueries, ExtractSummary, extract
from extractor.tasks import run_event_loop
from seqrec.artifacts import load_artifact
from seqrec.hashing import write_atomically
from seqrec.models.base import SequentialRecommender

STATE_FILENAME = "adaptive.json"


@dataclass
class StealConfig:
    """An adaptive run: how to extract (its `out` and `budget` are set here), how to distill
    (its `probes`, `out` and `init_from` are set here) and how to split the rounds."""

    out: Path
    extract: ExtractConfig
    distill: DistillConfig
    adaptive: AdaptiveConfig = field(default_factory=AdaptiveConfig)

    def __post_init__(self) -> None:
        problem = self.adaptive.problem_with(self.extract.source)
        if problem is not None:
            raise ValueError(problem)
        self.out = Path(self.out)
        self.extract = replace(self.extract, out=self.out / "probes")
        self.distill = replace(self.distill, probes=self.out / "probes", out=self.out / "student")


@dataclass
class RoundRecord:
    """One round as `adaptive.json` keeps it."""

    round: int
    ends_at: int  # the paid total the round may reach
    chosen: int | None = None  # queries chosen (None: the source's own, round 0 data-free)
    paid_total: int | None = None  # set once the round's extraction is done
    heldout: dict[str, float] | None = None  # of the student trained after it
    seconds: dict[str, float] = field(default_factory=dict)  # choose, extract, distill

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RoundHooks:
    """How a caller runs, follows and stops the rounds: `run_extraction` runs each round's
    extraction coroutine (the service's worker cancels it when the job must stop),
    `should_stop` is handed to every distillation, `on_round` hears of each round as it ends
    (and of the rounds a resumed run finds done)."""

    run_extraction: Callable[[Coroutine[Any, Any, ExtractSummary]], ExtractSummary] = run_event_loop
    should_stop: Callable[[], bool] | None = None
    on_round: Callable[[RoundRecord], None] | None = None


def steal(
    config: StealConfig, progress: bool = False, hooks: RoundHooks | None = None
) -> list[RoundRecord]:
    """Run (or resume) every round and train the final student; returns the rounds."""
    hooks = hooks or RoundHooks()
    ends = config.adaptive.schedule(config.extract.budget)
    records = _load_records(config, ends)
    for record in records:
        last = record.round == len(ends) - 1
        if record.paid_total is None:
            started = time.monotonic()
            before = records[record.round - 1].paid_total if record.round else 0
            chosen = _chosen(config, record, before or 0)
            record.seconds["choose"] = time.monotonic() - started
            started = time.monotonic()
            extraction = replace(config.extract, budget=record.ends_at)
            summary = hooks.run_extraction(extract(extraction, progress=progress, chosen=chosen))
            if summary.stopped not in (None, BUDGET_REFUSED):
                raise StealError(
                    f"round {record.round} stopped ({summary.stopped}); what it paid is kept "
                    f"in {config.out} and a rerun resumes"
                )
            record.paid_total = summary.spent_total
            record.seconds["extract"] = time.monotonic() - started
            _save_records(config, records)
        if record.heldout is None:
            started = time.monotonic()
            trained = distill(_round_distill(config, record.round, last), hooks.should_stop)
            record.heldout = trained.heldout
            record.seconds["distill"] = time.monotonic() - started
            _save_records(config, records)
        if hooks.on_round is not None:
            hooks.on_round(record)
    return records


def _round_distill(config: StealConfig, round_: int, last: bool) -> DistillConfig:
    """The final student trains on the full schedule, the others for a few epochs; each
    starts from the previous round's student."""
    earlier = None if round_ == 0 else _student_dir(config, round_ - 1)
    if last:
        return replace(config.distill, init_from=earlier)
    return replace(
        config.distill,
        out=_student_dir(config, round_),
        init_from=earlier,
        max_epochs=min(config.adaptive.round_epochs, config.distill.max_epochs),
        patience=config.adaptive.round_patience,
        progress=False,
    )


def _student_dir(config: StealConfig, round_: int) -> Path:
    """The student trained after round `round_`, any round but the last (whose student is
    `config.distill.out`)."""
    return config.out / "students" / f"r{round_}"


def _chosen(config: StealConfig, record: RoundRecord, paid_before: int) -> ChosenQueries | None:
    """The round's queries: read back when a killed run chose them already, else chosen and
    saved before any is paid for. Round 0 is a one-shot run's first share (data-free: the
    source's own sequences, None)."""
    path = config.out / "rounds" / f"r{record.round}.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        record.chosen = len(saved["ids"])
        return ChosenQueries(np.asarray(saved["ids"], np.int64), Prefixes.of(saved["queries"]))
    seeded = config.extract.source == "seeded"
    if record.round == 0 and not seeded:
        return None
    paid = _paid(config)
    if record.round == 0:
        picks = seeded_candidates(config.extract).queries[: record.ends_at]
    else:
        picks = _best(config, record.round, paid, record.ends_at - paid_before)
    first = int(max(paid.ids, default=-1)) + 1
    chosen = ChosenQueries(np.arange(first, first + len(picks)), picks)
    payload = {"ids": chosen.ids.tolist(), "queries": [list(q) for q in picks]}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(payload).encode())
    record.chosen = len(picks)
    return chosen


@dataclass(frozen=True)
class PaidQueries:
    """Every query on disk and its answer's items (None where it failed), read once a round."""

    ids: list[int]
    queries: Prefixes
    answers: list[list[str] | None]


def _paid(config: StealConfig) -> PaidQueries:
    if not (config.extract.out).is_dir():
        return PaidQueries([], Prefixes.of([]), [])
    table = read_probe_set(config.extract.out, columns=["query_id", "history", "items"])
    return PaidQueries(
        table.column("query_id").to_pylist(),
        Prefixes.of(table.column("history").to_pylist()),
        table.column("items").to_pylist(),
    )


def _best(config: StealConfig, round_: int, paid: PaidQueries, want: int) -> Prefixes:
    """The `want` most informative candidates, by the last round's student. Only histories
    not paid for yet and each once: a repeat would be answered by the cache, free, and leave
    the round short of its end."""
    settings = config.adaptive
    rng = np.random.default_rng([config.extract.seed, round_])
    student = load_artifact(_student_dir(config, round_ - 1))
    item_ids = student.info.item_ids
    paid_texts = paid.queries.texts()
    if config.extract.source == "seeded":
        pool = seeded_candidates(config.extract)
        if settings.score == "neighbour":
            answers = dict(zip(paid_texts, paid.answers, strict=True))
            pool = with_nearest_answers(pool, answers)
    elif settings.grow_from == "teacher":
        pool = answer_candidates(
            paid.queries, paid.answers, settings.pool, config.extract.max_length, rng
        )
    else:
        pool = grown_candidates(
            student.model, item_ids, settings.pool, config.extract.max_length, rng
        )
    seen, fresh_positions = set(paid_texts), []
    for position, text in enumerate(pool.queries.texts()):
        if text not in seen:
            seen.add(text)
            fresh_positions.append(position)
    fresh = np.asarray(fresh_positions, np.int64)
    if len(fresh) > settings.pool:
        fresh = np.sort(rng.choice(fresh, size=settings.pool, replace=False))
    return _score_and_choose(settings, student.model, item_ids, pool.subset(fresh), want, rng)


def _score_and_choose(
    settings: AdaptiveConfig,
    model: SequentialRecommender,
    item_ids: list[str],
    pool: Candidates,
    want: int,
    rng: np.random.Generator,
) -> Prefixes:
    histories, scorable = dense(pool.queries, item_ids)
    hints = None
    if settings.score == "neighbour":
        hints = dense_hints(pool, item_ids, TOP)[scorable]
    scores = np.full(len(pool), -np.inf)
    scores[scorable] = informativeness(settings.score, model, histories, rng, hints)
    picks = choose(scores, pool.groups, want, settings.group_share)
    return pool.queries.subset(picks)


def _load_records(config: StealConfig, ends: list[int]) -> list[RoundRecord]:
    """Rounds read back from `adaptive.json` (their ends must be this run's), else new ones."""
    path = config.out / STATE_FILENAME
    if not path.is_file():
        return [RoundRecord(round=r, ends_at=end) for r, end in enumerate(ends)]
    saved = json.loads(path.read_text())
    if saved["ends"] != ends:
        raise ValueError(
            f"{config.out} holds an adaptive run whose rounds end at {saved['ends']}, not "
            f"{ends}: use another directory, or the same budget and round settings"
        )
    return [RoundRecord(**record) for record in saved["rounds"]]


def _save_records(config: StealConfig, records: list[RoundRecord]) -> None:
    ends = [record.ends_at for record in records]
    payload = {
        "ends": ends,
        "adaptive": config.adaptive.to_dict(),
        "rounds": [record.to_dict() for record in records],
    }
    write_atomically(config.out / STATE_FILENAME, (json.dumps(payload, indent=2) + "\n").encode())
