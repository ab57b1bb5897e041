"""Extraction runs (extractor.run, extractor.cli) against real teacher servers over HTTP.

The teacher serves a tiny untrained SASRec over the synthetic dataset's catalogue. Expected
answers come from the model itself; the teacher's `/v1/usage` counter is the witness for what
was paid. Every test uses its own API key, so the counters do not mix.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest
from fastapi import FastAPI, Request, Response
from gate import Gate
from tiny_teacher import save_tiny_teacher
from typer.testing import CliRunner

from extractor.budget import Budget, read_spent
from extractor.cache import EmbeddedCache, cache_keys
from extractor.cli import extract as extract_command_function
from extractor.config import ExtractConfig, parse_scales
from extractor.probeset import read_probe_set
from extractor.run import LEDGER_FILENAME, SUMMARY_FILENAME, ExtractSummary, extract, load_seeded
from extractor.views import VIEW_SCALES
from seqrec.artifacts import Artifact, load_artifact
from seqrec.data.dataset import leave_one_out
from seqrec.data.loading import load_dataset
from seqrec.data.sequences import Sequences
from seqrec.inference import top_k
from service.cli import app, main
from teacher_mock.app import create_app
from teacher_mock.server import running
from teacher_mock.settings import TeacherSettings

DATASET = "synthetic:30:20"
K = 10
KEYS = [f"extract-test-key-{i}" for i in range(19)]
StartTeacher = Callable[..., str]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def artifact_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    item_ids = load_dataset(DATASET).item_ids.tolist()
    return save_tiny_teacher(tmp_path_factory.mktemp("teacher"), item_ids)


@pytest.fixture(scope="module")
def reference(artifact_dir: Path) -> Artifact:
    return load_artifact(artifact_dir)


@pytest.fixture(scope="module")
def start_teacher(artifact_dir: Path) -> Iterator[StartTeacher]:
    """Start a teacher with some settings (and optional middleware); all stop with the module."""
    with ExitStack() as stack:

        def start(middleware: Callable[[FastAPI], None] | None = None, **overrides: Any) -> str:
            settings = TeacherSettings(model_dir=artifact_dir, api_keys=KEYS, **overrides)
            app = create_app(settings)
            if middleware is not None:
                middleware(app)
            return stack.enter_context(running(app))

        yield start


@pytest.fixture(scope="module")
def clean(start_teacher: StartTeacher) -> str:
    return start_teacher()


@pytest.fixture(scope="module")
def capped(start_teacher: StartTeacher) -> str:
    """A black box that refuses histories of more than 4 items (a 422, free)."""
    return start_teacher(max_history=4)


def config(url: str, key: str, out: Path, **overrides: Any) -> ExtractConfig:
    settings: dict[str, Any] = dict(
        source="seeded", dataset=DATASET, prefixes=4, k=K, scales=VIEW_SCALES
    )
    settings.update(overrides)
    return ExtractConfig(teacher_url=url, api_key=key, out=out, **settings)


def run(cfg: ExtractConfig) -> ExtractSummary:
    return asyncio.run(extract(cfg, progress=False))


def usage(url: str, key: str) -> int:
    reply = httpx.get(f"{url}/v1/usage", headers={"Authorization": f"Bearer {key}"})
    return reply.json()["used"]


def expected(reference: Artifact, histories: list[list[str]]) -> list[list[str]]:
    ids = reference.info.item_ids
    dense = {raw: i for i, raw in enumerate(ids, start=1)}
    seqs = Sequences.from_lists([[dense[item] for item in h] for h in histories])
    rows = top_k(reference.model, seqs, K).tolist()
    return [[ids[i - 1] for i in row if i] for row in rows]


def distinct_views(table: pa.Table) -> set[tuple[str, ...]]:
    views = set()
    for history, lengths in zip(
        table.column("history").to_pylist(), table.column("view_lengths").to_pylist(), strict=True
    ):
        views.add(tuple(history))
        views.update(tuple(history[-n:]) for n in lengths)
    return views


def assert_answers_are_the_teachers(table: pa.Table, reference: Artifact) -> None:
    """Every answered full view and truncated view equals the model's own top-k."""
    rows = table.to_pylist()
    full = [row for row in rows if row["items"] is not None]
    assert [row["items"] for row in full] == expected(reference, [row["history"] for row in full])
    views = [
        (row["history"][-n:], items)
        for row in rows
        for n, items in zip(row["view_lengths"], row["view_items"], strict=True)
        if items is not None
    ]
    assert [items for _, items in views] == expected(reference, [h for h, _ in views])


# --- clean teacher ------------------------------------------------------------------------


def test_seeded_run_writes_the_teachers_answers_and_pays_each_history_once(
    clean: str, reference: Artifact, tmp_path: Path
) -> None:
    key = KEYS[0]
    cfg = config(clean, key, tmp_path / "run", budget=10_000, chunk_size=50)
    summary = run(cfg)
    assert gc.get_freeze_count() == 0  # objects frozen for the run are handed back to the gc
    table = read_probe_set(cfg.out)
    queries = load_seeded(cfg)
    assert table.column("query_id").to_pylist() == list(range(len(queries)))
    assert table.column("history").to_pylist() == queries
    assert set(table.column("status").to_pylist()) == {"answered"}
    assert_answers_are_the_teachers(table, reference)
    assert table.column("view_scales").to_pylist()[0] == [0.5, 0.25]
    paid = len(distinct_views(table))
    assert summary.paid == paid == usage(clean, key)
    assert summary.queries_written == len(queries) and summary.queries_left == 0
    assert summary.stopped is None and summary.model_tag == reference.version
    assert summary.budget_left == 10_000 - paid
    assert json.loads((cfg.out / SUMMARY_FILENAME).read_text()) == summary.to_dict()

    again = run(cfg)  # same directory: everything is on disk already
    assert (again.paid, again.queries_written, usage(clean, key)) == (0, 0, paid)
    assert read_probe_set(cfg.out).equals(table)

    shared = replace(cfg, out=tmp_path / "copy", cache=str(cfg.out / "answers.sqlite3"))
    copy = run(shared)  # a new directory answered from the first run's cache
    assert (copy.paid, usage(clean, key)) == (0, paid) and copy.cached >= paid
    assert read_probe_set(shared.out).equals(table)


def part_files(directory: Path) -> list[bytes]:
    return [path.read_bytes() for path in sorted(directory.glob("part-*.parquet"))]


def test_by_default_each_query_is_asked_once_without_views(
    clean: str, reference: Artifact, tmp_path: Path
) -> None:
    key = KEYS[18]
    before = usage(clean, key)
    cfg = ExtractConfig(
        teacher_url=clean,
        api_key=key,
        out=tmp_path / "run",
        budget=10_000,
        source="seeded",
        dataset=DATASET,
        prefixes=4,
        k=K,
    )
    summary = run(cfg)
    table = read_probe_set(cfg.out)
    assert table.column("view_scales").to_pylist() == [[]] * len(load_seeded(cfg))
    assert_answers_are_the_teachers(table, reference)
    distinct = {tuple(history) for history in table.column("history").to_pylist()}
    assert summary.paid == len(distinct) == usage(clean, key) - before


def test_a_repeated_run_copies_the_parts_it_remembered_without_reading_answers(
    clean: str, tmp_path: Path
) -> None:
    """Every chunk of a fresh seeded run leaves its part in the cache; a run of the same
    settings into a new directory copies them, byte for byte, so it needs no answer at all
    (they are deleted here: rebuilding would have to pay for them)."""
    key = KEYS[10]
    cfg = config(clean, key, tmp_path / "first", budget=10_000, chunk_size=16)
    first = run(cfg)
    cache_file = cfg.out / "answers.sqlite3"
    with sqlite3.connect(cache_file) as db:
        parts = db.execute("SELECT count(*) FROM parts").fetchone()[0]
        db.execute("DELETE FROM answers")
    db.close()
    assert parts == -(-first.queries_written // 16)  # one per chunk

    copy = run(replace(cfg, out=tmp_path / "copy", cache=str(cache_file)))
    assert (copy.paid, usage(clean, key)) == (0, first.paid)
    assert copy.cached == first.paid + first.cached  # each chunk's distinct histories
    assert copy.queries_written == first.queries_written
    assert part_files(tmp_path / "copy") == part_files(cfg.out)
    assert read_probe_set(tmp_path / "copy").equals(read_probe_set(cfg.out))

    other_k = run(replace(cfg, out=tmp_path / "k5", cache=str(cache_file), k=5))
    assert other_k.paid > 0  # other settings, other parts: none is copied


def flip_a_byte(data: bytes) -> bytes:
    """One bit of the Parquet bytes a third of the way in, where it still reads as a part."""
    damaged = bytearray(data)
    damaged[len(data) // 3] ^= 0x01
    return bytes(damaged)


@pytest.mark.parametrize("damage", ["cut", "flip"])
def test_a_damaged_remembered_part_is_rebuilt_from_the_answers(
    clean: str, tmp_path: Path, damage: str
) -> None:
    """Cut short, or one bit flipped (which Parquet alone would read back as other ids, and
    which a copy would write to disk with a fresh, matching checksum): a miss either way."""
    key = KEYS[12]
    cfg = config(clean, key, tmp_path / "first", budget=10_000, chunk_size=16)
    run(cfg)
    cache_file = cfg.out / "answers.sqlite3"
    with sqlite3.connect(cache_file) as db:
        if damage == "cut":
            db.execute("UPDATE parts SET data = substr(data, 1, length(data) - 100)")
        else:
            rows = db.execute("SELECT rowid, data FROM parts").fetchall()
            for rowid, data in rows:
                db.execute("UPDATE parts SET data = ? WHERE rowid = ?", (flip_a_byte(data), rowid))
    db.close()
    paid = usage(clean, key)
    copy = run(replace(cfg, out=tmp_path / "copy", cache=str(cache_file)))
    assert (copy.paid, usage(clean, key)) == (0, paid)
    assert read_probe_set(tmp_path / "copy").equals(read_probe_set(cfg.out))


def test_only_chunks_answered_in_full_are_remembered(capped: str, tmp_path: Path) -> None:
    """A failed query is asked again by a later run, so its chunk's part is not kept."""
    cfg = config(capped, KEYS[11], tmp_path / "first", budget=1000, chunk_size=4, scales=(1.0,))
    first = run(cfg)
    long = [len(query) > 4 for query in load_seeded(cfg)]
    whole_chunks = sum(not any(long[i : i + 4]) for i in range(0, len(long), 4))
    assert first.failed == sum(long) and 0 < whole_chunks < len(long) / 4
    cache_file = cfg.out / "answers.sqlite3"
    with sqlite3.connect(cache_file) as db:
        assert db.execute("SELECT count(*) FROM parts").fetchone()[0] == whole_chunks
    db.close()
    copy = run(replace(cfg, out=tmp_path / "copy", cache=str(cache_file)))
    assert (copy.paid, copy.failed) == (0, first.failed)
    assert read_probe_set(tmp_path / "copy").equals(read_probe_set(cfg.out))


def test_a_cache_failure_in_one_of_the_overlapping_chunks_is_raised_as_it_is(
    clean: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks run two at a time and wait on each other's claimed histories: the chunk whose
    cache fails must surface its CacheError, not a cancellation of the chunk waiting on it."""
    import extractor.run as run_module
    from extractor.cache import CacheError, EmbeddedCache

    class FailingCache(EmbeddedCache):
        async def put_many(self, items: Any) -> None:
            raise CacheError("disk full")

    async def open_failing(url: str | None, out: Path) -> EmbeddedCache:
        return FailingCache(out / "answers.sqlite3")

    monkeypatch.setattr(run_module, "open_cache", open_failing)
    cfg = config(clean, KEYS[9], tmp_path / "run", budget=10_000, chunk_size=8, batch_size=4)
    with pytest.raises(CacheError, match="disk full"):
        run(cfg)


def test_the_budget_is_a_hard_limit_and_a_resume_pays_nothing_twice(
    clean: str, reference: Artifact, tmp_path: Path
) -> None:
    key = KEYS[1]
    cfg = config(clean, key, tmp_path / "run", budget=60, chunk_size=16, batch_size=8)
    first = run(cfg)
    assert first.paid == 60 == usage(clean, key)
    assert first.budget_left == 0 and first.stopped == "budget exhausted"
    assert first.queries_left > 0 and first.failed == 0
    written = read_probe_set(cfg.out)
    assert written.num_rows == first.queries_written
    assert set(written.column("status").to_pylist()) == {"answered"}

    same = run(cfg)  # the ledger remembers: nothing more is paid
    assert (same.paid, usage(clean, key)) == (0, 60)
    # Chunks overlap: a view refused to one query may have been paid later in the run for
    # another, which leaves the first query with every answer in the cache: written now, free.
    assert same.queries_written == read_probe_set(cfg.out).num_rows - first.queries_written

    more = run(replace(cfg, budget=10_000))
    table = read_probe_set(cfg.out)
    assert more.stopped is None and more.queries_left == 0
    assert table.num_rows == len(load_seeded(cfg))
    assert_answers_are_the_teachers(table, reference)
    assert usage(clean, key) == len(distinct_views(table)) == first.paid + more.paid


def test_max_history_asks_a_capped_black_box_the_most_recent_items(
    capped: str, reference: Artifact, tmp_path: Path
) -> None:
    """A black box that refuses long histories (a 4xx, free) fails those queries; with
    `max_history` each query is cut to its most recent items and every one is answered."""
    whole = config(capped, KEYS[8], tmp_path / "whole", budget=1000, scales=(1.0,))
    summary = run(whole)
    queries = load_seeded(whole)
    long = [query for query in queries if len(query) > 4]
    assert long and summary.failed == len(long) and summary.queries_written == len(queries)
    short = {tuple(query) for query in queries if len(query) <= 4}
    assert usage(capped, KEYS[8]) == summary.paid == len(short)  # the refusals cost nothing

    cut = replace(whole, out=tmp_path / "cut", max_history=4)
    assert run(cut).failed == 0
    table = read_probe_set(cut.out)
    histories = table.column("history").to_pylist()
    assert histories == [query[-4:] for query in load_seeded(whole)]
    assert_answers_are_the_teachers(table, reference)
    run_info = json.loads(table.schema.metadata[b"recmimic.run_info"])
    assert run_info["max_history"] == 4 and "max_history" not in whole.query_source()


def test_answers_from_a_model_changed_mid_run_are_cached_under_its_own_tag(
    start_teacher: StartTeacher, tmp_path: Path
) -> None:
    """The catalogue comes under one model version, every answer under another: the answers
    are kept, under the new version's keys, and the run's own keys stay empty."""

    def retrained(app: FastAPI) -> None:
        @app.middleware("http")
        async def new_version(request: Request, call_next: Callable[..., Any]) -> Response:
            response = await call_next(request)
            if request.url.path.startswith("/v1/recommend"):
                response.headers["X-Model-Version"] = "retrained"
            return response

    url = start_teacher(middleware=retrained)
    cfg = config(url, KEYS[8], tmp_path, budget=1000, prefixes=2, scales=(1.0, 0.5))
    summary = run(cfg)
    assert summary.paid > 0 and summary.model_tag != "retrained"
    answers = {}  # every asked history -> the answer written for it
    for row in read_probe_set(tmp_path).to_pylist():
        answers[tuple(row["history"])] = row["items"]
        for n, items in zip(row["view_lengths"], row["view_items"], strict=True):
            answers[tuple(row["history"][-n:])] = items
    histories = sorted(answers)
    new_keys = cache_keys(url, K, [list(h) for h in histories], "retrained")
    run_keys = cache_keys(url, K, [list(h) for h in histories], summary.model_tag)

    async def look_up() -> tuple[list[Any], list[Any]]:
        cache = EmbeddedCache(tmp_path / "answers.sqlite3")
        try:
            return await cache.get_many(new_keys), await cache.get_many(run_keys)
        finally:
            await cache.close()

    under_new, under_run = asyncio.run(look_up())
    assert under_new == [answers[h] for h in histories] and len(under_new) == summary.paid
    assert under_run == [None] * len(run_keys)


def test_a_model_named_only_in_answers_is_found_again_by_the_next_run(
    start_teacher: StartTeacher, tmp_path: Path
) -> None:
    """A black box that sends its model version on the recommend routes but not on its
    catalogue: the second extraction into a new directory, with the same cache, paid every
    answer again (it looked them up without a tag); now it pays nothing, and a resume of the
    first directory is accepted."""

    def versioned_answers_only(app: FastAPI) -> None:
        @app.middleware("http")
        async def strip(request: Request, call_next: Callable[..., Any]) -> Response:
            response = await call_next(request)
            if not request.url.path.startswith("/v1/recommend"):
                del response.headers["X-Model-Version"]
            return response

    url = start_teacher(middleware=versioned_answers_only)
    key, cache = KEYS[13], str(tmp_path / "shared.sqlite3")
    first = run(config(url, key, tmp_path / "a", budget=1000, prefixes=2, cache=cache))
    assert first.paid > 0 and first.model_tag is not None  # learnt from the answers
    second = run(config(url, key, tmp_path / "b", budget=1000, prefixes=2, cache=cache))
    assert second.paid == 0 and second.model_tag == first.model_tag
    assert usage(url, key) == first.paid
    assert read_probe_set(tmp_path / "b").equals(read_probe_set(tmp_path / "a"))
    again = run(config(url, key, tmp_path / "a", budget=1000, prefixes=2, cache=cache))
    assert again.paid == 0 and again.queries_written == 0


def test_whole_first_spends_a_small_budget_on_the_users_current_histories(
    clean: str, tmp_path: Path
) -> None:
    whole = sorted(leave_one_out(load_dataset(DATASET)).train.lengths.tolist())
    n = len(whole)  # the first chunk: the whole histories, the second: shorter prefixes
    cfg = config(clean, KEYS[17], tmp_path / "run", budget=2 * n, scales=(1.0,), chunk_size=n)
    summary = run(replace(cfg, whole_first=True))
    assert summary.stopped == "budget exhausted" and summary.paid == 2 * n
    rows = read_probe_set(tmp_path / "run").to_pylist()
    assert sorted(len(row["history"]) for row in rows if row["query_id"] < n) == whole
    assert all(row["status"] == "answered" for row in rows)


def test_a_redis_cache_serves_a_second_run(clean: str, tmp_path: Path) -> None:
    """Keys hold the teacher's URL (a fresh port), so nothing from another run is reused."""
    cache = "redis://127.0.0.1:6379/0"
    key = KEYS[2]
    first = run(config(clean, key, tmp_path / "a", budget=10_000, prefixes=2, cache=cache))
    second = run(config(clean, key, tmp_path / "b", budget=10_000, prefixes=2, cache=cache))
    assert first.paid > 0 and second.paid == 0 and usage(clean, key) == first.paid
    assert read_probe_set(tmp_path / "a").equals(read_probe_set(tmp_path / "b"))


def test_a_data_free_run_stops_cleanly_when_the_budget_runs_out(
    clean: str, reference: Artifact, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = KEYS[8]
    cfg = ExtractConfig(
        teacher_url=clean,
        api_key=key,
        budget=40,
        out=tmp_path,
        source="frequency",
        n_sequences=10,
        max_length=8,
        k=K,
        batch_size=4,
        seed=1,
    )
    summary = asyncio.run(extract(cfg, progress=True))
    assert "budget_left=0" in capsys.readouterr().err  # the progress bar
    assert summary.paid == 40 == usage(clean, key) and summary.stopped == "budget exhausted"
    table = read_probe_set(tmp_path)
    assert table.num_rows == summary.queries_written > 0 and summary.queries_left > 0
    assert_answers_are_the_teachers(table, reference)


def test_k_beyond_the_catalogue_is_refused_before_anything_is_paid(
    clean: str, reference: Artifact, tmp_path: Path
) -> None:
    key = KEYS[0]
    before = usage(clean, key)
    too_many = reference.model.n_items + 1
    with pytest.raises(ValueError, match="exceeds the black box's catalogue"):
        run(config(clean, key, tmp_path, budget=10, source="autoregressive", k=too_many))
    assert usage(clean, key) == before


# --- faults -------------------------------------------------------------------------------


def test_a_faulty_rate_limited_teacher_never_gets_past_the_budget(
    start_teacher: StartTeacher, reference: Artifact, tmp_path: Path
) -> None:
    statuses: Counter[int] = Counter()

    def record(app: FastAPI) -> None:
        @app.middleware("http")
        async def count(request: Request, call_next: Callable[..., Any]) -> Response:
            response = await call_next(request)
            statuses[response.status_code] += 1
            return response

    url = start_teacher(
        middleware=record,
        error_rate=0.2,
        timeout_rate=0.05,
        timeout_hang_s=1.0,
        truncate_rate=0.05,
        fault_seed=3,
        rate=40,
        burst=8,
    )
    key = KEYS[3]
    budget = 700
    cfg = config(url, key, tmp_path / "run", budget=budget, prefixes=3, batch_size=8, timeout_s=0.4)
    summary = run(cfg)
    table = read_probe_set(cfg.out)
    assert summary.stopped is None and summary.queries_left == 0
    assert table.num_rows == len(load_seeded(cfg)) == summary.queries_written
    assert usage(url, key) <= summary.paid <= budget
    assert usage(url, key) > len(distinct_views(table))  # lost answers were paid for
    assert_answers_are_the_teachers(table, reference)
    assert statuses[429] and statuses[503]  # rate limited and faulted (lost answers: above)


# --- kill and resume ----------------------------------------------------------------------


def extract_command(url: str, out: Path) -> list[str]:
    options = {
        "--teacher-url": url,
        "--budget": "100000",
        "--out": str(out),
        "--source": "autoregressive",
        "--n-sequences": "12",
        "--min-length": "3",
        "--max-length": "10",
        "--k": str(K),
        "--concurrency": "1",
        "--batch-size": "8",
        "--chunk-size": "6",
        "--seed": "5",
        "--scales": ",".join(map(str, VIEW_SCALES)),  # views: the resume reads some from the cache
    }
    args = [part for option in options.items() for part in option]
    # The extract command alone: `service.cli` would import torch first (seconds per start).
    entry = "import typer; from extractor.cli import extract; typer.run(extract)"
    return [sys.executable, "-c", entry, *args, "--no-progress"]


def test_a_killed_run_resumes_to_the_same_probe_set_without_paying_twice(
    start_teacher: StartTeacher, reference: Artifact, tmp_path: Path
) -> None:
    key, reference_key = KEYS[4], KEYS[5]
    gate = Gate(key, hold_at=8)
    url = start_teacher(middleware=gate.install)
    out = tmp_path / "killed"
    env = {**os.environ, "RECMIMIC_API_KEY": key}
    process = subprocess.Popen(extract_command(url, out), env=env, cwd=ROOT)
    try:
        assert gate.holding.wait(60), "the extractor never reached the gate"
        time.sleep(0.5)  # answers already received reach the cache
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        gate.release.set()
        if process.poll() is None:
            process.kill()
    assert not (out / SUMMARY_FILENAME).exists()
    assert usage(url, key) > 0
    assert read_probe_set(out).num_rows > 0  # some parts made it to disk

    cfg = ExtractConfig(
        teacher_url=url,
        api_key=key,
        budget=100_000,
        out=out,
        source="autoregressive",
        n_sequences=12,
        min_length=3,
        max_length=10,
        k=K,
        batch_size=8,
        chunk_size=6,
        seed=5,
        scales=VIEW_SCALES,
    )
    resumed = run(cfg)  # the same run, to completion
    assert resumed.stopped is None and resumed.cached > 0
    uninterrupted = run(replace(cfg, api_key=reference_key, out=tmp_path / "uninterrupted"))
    table = read_probe_set(out)
    assert table.equals(read_probe_set(tmp_path / "uninterrupted"))
    assert_answers_are_the_teachers(table, reference)
    assert usage(url, key) == uninterrupted.paid == usage(url, reference_key)
    assert usage(url, key) == len(distinct_views(table))


def test_sigterm_flushes_complete_queries_and_writes_a_summary(
    start_teacher: StartTeacher, tmp_path: Path
) -> None:
    key = KEYS[7]
    gate = Gate(key, hold_at=8)
    url = start_teacher(middleware=gate.install)
    out = tmp_path / "stopped"
    env = {**os.environ, "RECMIMIC_API_KEY": key}
    process = subprocess.Popen(
        extract_command(url, out), env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert gate.holding.wait(60), "the extractor never reached the gate"
        process.send_signal(signal.SIGTERM)
        stdout, _ = process.communicate(timeout=20)
    finally:
        gate.release.set()
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0
    summary = json.loads((out / SUMMARY_FILENAME).read_text())
    assert summary["stopped"] == "interrupted" and "interrupted" in stdout
    assert read_probe_set(out).num_rows == summary["queries_written"] > 0
    assert usage(url, key) <= summary["paid"]


def test_a_run_killed_against_a_rate_limited_teacher_holds_only_what_was_billed(
    start_teacher: StartTeacher, tmp_path: Path
) -> None:
    """Seven of every eight requests are refused (429, free) and wait a second to retry: their
    units must leave the ledger when they are refused, so a kill during the wait leaves in it
    what the teacher billed and at most one request more (before, each refused reservation
    stayed until the next one: the whole budget of 16 against 8 billed)."""
    key = KEYS[14]
    url = start_teacher(rate=1.0, burst=1)
    out = tmp_path / "limited"
    batch_size, budget = 4, 16
    args = ["--teacher-url", url, "--budget", str(budget), "--out", str(out)]
    args += ["--dataset", DATASET, "--prefixes", "4", "--k", str(K), "--concurrency", "8"]
    args += ["--batch-size", str(batch_size), "--timeout", "1", "--no-progress"]
    entry = "import typer; from extractor.cli import extract; typer.run(extract)"
    env = {**os.environ, "RECMIMIC_API_KEY": key}
    process = subprocess.Popen([sys.executable, "-c", entry, *args], env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while usage(url, key) < 2 * batch_size and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)  # the refused requests wait out their Retry-After
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
    billed = usage(url, key)
    spent = read_spent(out / LEDGER_FILENAME)
    assert spent is not None and billed <= spent <= billed + batch_size < budget

    time.sleep(1.0)  # a request's timeout: the killed run's requests are all over
    resumed = run(config(url, key, out, budget=budget, batch_size=batch_size, timeout_s=1.0))
    assert resumed.usage is not None and ("matches" in resumed.usage or "settled" in resumed.usage)
    assert resumed.spent_total == usage(url, key) == budget


def _kill_with_unsent_requests(out: Path, units: int) -> None:
    """What a run killed with `units` reserved whose requests never reached the black box
    leaves in its ledger (their units stay spent)."""
    budget = Budget(10_000, out / LEDGER_FILENAME)
    budget.reserve(units)
    budget.close()


@pytest.mark.parametrize("quiet", [True, False])
def test_a_resumed_run_settles_its_ledger_with_the_teachers_usage(
    clean: str, tmp_path: Path, quiet: bool
) -> None:
    key = KEYS[15] if quiet else KEYS[16]
    out = tmp_path / "run"
    first = run(config(clean, key, out, budget=30))
    assert first.usage is None and first.spent_total == usage(clean, key) == 30
    _kill_with_unsent_requests(out, 7)
    if quiet:  # the killed run stopped longer ago than a request's timeout
        old = time.time() - 60
        os.utime(out / LEDGER_FILENAME, (old, old))
    resumed = run(config(clean, key, out, budget=60, timeout_s=5.0))
    billed = usage(clean, key)
    if quiet:
        assert resumed.usage == (
            "settled with the black box's usage: 7 units the ledger held as spent were never "
            "billed and are given back (spent 37 -> 30)"
        )
        assert resumed.spent_total == billed == 60 and resumed.paid == 30
    else:
        assert resumed.usage is not None and resumed.usage.startswith("not settled yet")
        assert resumed.spent_total == 60 and billed == 53  # the 7 stay spent, for now


def test_a_cached_rerun_of_the_command_imports_neither_pandas_nor_redis(
    clean: str, tmp_path: Path
) -> None:
    """pandas took a third of a fully cached re-run (extractor/arrow_build.py): loading a
    processed dataset and writing the probe set must not pull it in (pyarrow's converters do).
    Nor does a run with the embedded cache need redis-py."""
    frame = load_dataset(DATASET).sequences.to_lists()
    rows = [f"{user},{item},{t}" for user, seq in enumerate(frame) for t, item in enumerate(seq)]
    interactions = tmp_path / "interactions.csv"
    interactions.write_text("user,item,timestamp\n" + "\n".join(rows) + "\n")
    entry = (
        "import atexit, sys, typer; from extractor.cli import extract; atexit.register(lambda:"
        " print('imported:', 'pandas' in sys.modules, 'redis' in sys.modules));"
        " typer.run(extract)"
    )
    env = {**os.environ, "RECMIMIC_API_KEY": KEYS[8], "RECMIMIC_CACHE": str(tmp_path / "data")}

    def extract_into(out: str) -> tuple[dict[str, Any], str]:
        args = ["--teacher-url", clean, "--budget", "1000", "--out", str(tmp_path / out)]
        args += ["--dataset", str(interactions), "--prefixes", "3", "--k", str(K)]
        args += ["--cache", str(tmp_path / "answers.sqlite3"), "--no-progress"]
        done = subprocess.run(
            [sys.executable, "-c", entry, *args], env=env, cwd=ROOT, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return json.loads((tmp_path / out / SUMMARY_FILENAME).read_text()), done.stdout

    first, first_output = extract_into("first")
    assert first["paid"] > 0 and "imported: True False" in first_output  # pandas parsed the file
    again, output = extract_into("again")
    assert again["paid"] == 0 and again["queries_written"] == first["queries_written"]
    assert "imported: False False" in output
    assert read_probe_set(tmp_path / "again").equals(read_probe_set(tmp_path / "first"))


# --- command line -------------------------------------------------------------------------


def options(url: str, out: Path, **overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = dict(
        teacher_url=url,
        budget=1000,
        out=out,
        api_key=KEYS[6],
        dataset=DATASET,
        k=K,
        prefixes="1",
        progress=False,
    )
    settings.update(overrides)
    return settings


def test_the_command_prints_a_summary_without_the_key(clean: str, tmp_path: Path) -> None:
    args = ["extract", "--teacher-url", clean, "--budget", "1000", "--out", str(tmp_path)]
    args += ["--dataset", DATASET, "--prefixes", "1", "--k", str(K), "--no-progress"]
    result = CliRunner().invoke(app, args, env={"RECMIMIC_API_KEY": KEYS[6]})
    assert result.exit_code == 0, result.output
    assert "queries_written" in result.output and KEYS[6] not in result.output
    assert (tmp_path / LEDGER_FILENAME).exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"dataset": None}, "needs a dataset"),
        ({"scales": "1,half"}, "bad scales"),
        ({"scales": "0.5"}, "must include 1"),
        ({"prefixes": "0"}, "bad --prefixes"),
        ({"max_history": 0}, "max_history must be at least 1"),
        ({"source": "autoregressive", "whole_first": True}, "applies to the seeded source"),
        ({"api_key": "nope"}, "refused the API key"),
        ({"teacher_url": "http://127.0.0.1:9"}, "cannot reach the teacher"),
    ],
)
def test_the_command_refuses_bad_input_with_one_line(
    clean: str, tmp_path: Path, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        extract_command_function(**options(clean, tmp_path, **overrides))
    assert "\n" not in str(caught.value) and "nope" not in str(caught.value)


def test_an_unusable_dataset_or_out_directory_fails_before_anything_is_written(
    tmp_path: Path,
) -> None:
    """The dataset is read first: no teacher is asked (none listens at the URL) and the out
    directory is not made; an out path under a file is one line, not an errno tuple."""
    out = tmp_path / "run"
    unreachable = "http://127.0.0.1:9"
    with pytest.raises(ValueError, match="file not found: no-such-file.csv"):
        extract_command_function(**options(unreachable, out, dataset="no-such-file.csv"))
    assert not out.exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError, match="^cannot create the out directory .*file/run"):
        extract_command_function(**options(unreachable, tmp_path / "file" / "run"))


def test_a_refused_key_exits_2_with_one_line_on_stderr(
    clean: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RECMIMIC_TEACHER_API_KEY", "not-a-key")
    monkeypatch.delenv("RECMIMIC_API_KEY", raising=False)
    args = ["recmimic", "extract", "--teacher-url", clean, "--budget", "5", "--out", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", [*args, "--dataset", DATASET])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("error: ") and len(stderr.strip().splitlines()) == 1
    assert "not-a-key" not in stderr


def test_a_quota_stopped_run_exits_2_with_one_line_and_keeps_what_was_paid(
    start_teacher: StartTeacher,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The black box's quota (403) runs out before the budget: the command fails, after its
    summary, and the queries answered before the refusal stay in the probe set."""
    key, quota = KEYS[13], 6
    url = start_teacher(quota=quota)
    monkeypatch.setenv("RECMIMIC_API_KEY", key)
    args = ["recmimic", "extract", "--teacher-url", url, "--budget", "1000", "--out", str(tmp_path)]
    args += ["--dataset", DATASET, "--prefixes", "4", "--k", str(K), "--no-progress"]
    args += ["--scales", "1", "--batch-size", "1", "--concurrency", "1"]
    monkeypatch.setattr(sys, "argv", args)
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and len(captured.err.strip().splitlines()) == 1
    assert "refused the quota (403)" in captured.err and key not in captured.err
    summary = json.loads((tmp_path / SUMMARY_FILENAME).read_text())
    assert summary["stopped"].startswith("403") and summary["paid"] == quota == usage(url, key)
    assert f"after {quota} paid answers" in captured.err
    assert "queries_written" in captured.out  # the summary is still shown
    table = read_probe_set(tmp_path)
    assert table.num_rows == summary["queries_written"] == quota
    assert all(items is not None for items in table.column("items").to_pylist())


def test_config_keeps_the_key_secret_and_checks_scales() -> None:
    cfg = ExtractConfig(
        teacher_url="http://x/",
        api_key="s3cret",
        budget=1,
        out=Path("o"),
        dataset="d",
        cache="redis://:pw@localhost:6379/0",
    )
    assert "s3cret" not in repr(cfg) and "s3cret" not in json.dumps(cfg.to_dict())
    assert "pw" not in json.dumps(cfg.to_dict()) and cfg.teacher_url == "http://x"
    assert parse_scales("1, 0.5,0.25") == (1.0, 0.5, 0.25)
    with pytest.raises(ValueError, match="scales"):
        parse_scales("one")
    with pytest.raises(ValueError, match="dataset"):
        ExtractConfig(teacher_url="http://x", api_key="k", budget=1, out=Path("o"))
