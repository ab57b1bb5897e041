"""Adaptive extraction: its schedule, choice, scores and warm start against small hand cases,
and whole runs against a real teacher over HTTP (budget, rounds, resume after kill -9)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from fastapi import FastAPI
from gate import Gate
from tiny_teacher import save_tiny_teacher

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
from adaptive.config import AdaptiveConfig
from adaptive.informativeness import informativeness, overlap, recent_halves
from adaptive.run import STATE_FILENAME, RoundHooks, StealConfig, steal
from distill.config import DistillConfig
from distill.warm import warm_start
from extractor.budget import read_spent
from extractor.config import ExtractConfig
from extractor.prefixes import Prefixes
from extractor.probeset import read_probe_set
from extractor.run import LEDGER_FILENAME, dataset_histories
from seqrec.artifacts import ArtifactInfo, load_artifact, save_artifact
from seqrec.data.loading import load_dataset
from seqrec.data.sequences import Sequences
from seqrec.models import ModelConfig, build_model
from teacher_mock.app import create_app
from teacher_mock.server import running
from teacher_mock.settings import TeacherSettings

DATASET = "synthetic:30:20"
K = 10
KEYS = [f"adaptive-test-key-{i}" for i in range(8)]
ROOT = Path(__file__).resolve().parents[1]
StartTeacher = Callable[..., str]

# --- schedule ------------------------------------------------------------------------------


def test_rounds_end_at_paid_totals_growing_geometrically_to_the_budget() -> None:
    assert AdaptiveConfig(first_share=0.2, rounds=4).schedule(10_000) == [2000, 3420, 5848, 10_000]
    assert AdaptiveConfig(first_share=0.5, rounds=2).schedule(100) == [50, 100]
    assert AdaptiveConfig(rounds=1).schedule(100) == [100]


def test_given_boundaries_end_the_rounds_below_the_budget() -> None:
    bench = AdaptiveConfig(boundaries=(1000, 2000, 5000, 10_000, 20_000))
    assert bench.schedule(10_000) == [1000, 2000, 5000, 10_000]
    assert bench.schedule(3000) == [1000, 2000, 3000]


@pytest.mark.parametrize(
    "settings",
    [
        {"first_share": 0.0},
        {"first_share": 1.5},
        {"rounds": 0},
        {"group_share": 0.5},
        {"score": "loudest"},
        {"grow_from": "oracle"},
        {"boundaries": (5, 5)},
        {"boundaries": (1,)},
    ],
)
def test_bad_settings_are_refused(settings: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        AdaptiveConfig(**settings)


def test_the_neighbour_score_needs_paid_answers_near_each_candidate() -> None:
    neighbour = AdaptiveConfig(score="neighbour")
    assert neighbour.problem_with("seeded") is None
    assert "grow_from" in (neighbour.problem_with("autoregressive") or "")
    assert replace(neighbour, grow_from="teacher").problem_with("autoregressive") is None
    assert AdaptiveConfig().problem_with("autoregressive") is None


# --- choice --------------------------------------------------------------------------------


def test_choose_caps_each_group_at_its_share_then_fills_with_the_best_of_the_rest() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.1, 0.5, 0.6])
    groups = np.array([0, 0, 0, 1, 1, 2])
    # 3 of 3 groups: one each, the best of each group
    assert choose(scores, groups, 3, group_share=1).tolist() == [0, 5, 4]
    # 4: two of a group at most, so 0.7 waits behind 0.6 and 0.5
    assert choose(scores, groups, 4, group_share=1).tolist() == [0, 1, 5, 4]
    # 6: the cap leaves 5 candidates; the sixth is the best of the rest
    assert choose(scores, groups, 6, group_share=1).tolist() == [0, 1, 5, 4, 3, 2]
    assert choose(scores, groups, 2, group_share=3).tolist() == [0, 1]
    assert len(choose(scores, groups, 10, group_share=2)) == 6


def test_unscorable_candidates_come_last() -> None:
    scores = np.array([-np.inf, 0.2, 0.1])
    assert choose(scores, np.arange(3), 2, group_share=1).tolist() == [1, 2]


# --- candidates ----------------------------------------------------------------------------


def test_seeded_candidates_are_every_prefix_grouped_by_its_user(tmp_path: Path) -> None:
    config = ExtractConfig(
        teacher_url="http://x", api_key="k", budget=1, out=tmp_path, dataset=DATASET
    )
    users = dataset_histories(config)
    pool = seeded_candidates(config)
    assert len(pool) == int(users.length.sum())
    for query, group in zip(pool.queries, pool.groups.tolist(), strict=True):
        assert users[group][: len(query)] == query
    capped = seeded_candidates(replace(config, max_history=2))
    assert capped.groups.tolist() == pool.groups.tolist()
    assert max(len(query) for query in capped.queries) == 2


def tiny_student(item_ids: list[str], seed: int = 0, dropout: float | None = None) -> Any:
    torch.manual_seed(seed)
    extra = {} if dropout is None else {"dropout": dropout}
    config = ModelConfig(n_items=len(item_ids), hidden=16, n_heads=2, max_len=20, **extra)
    return build_model(config).eval()


def test_grown_candidates_are_the_prefixes_of_sequences_grown_from_the_student() -> None:
    item_ids = [f"i{n}" for n in range(30)]
    model = tiny_student(item_ids)
    pool = grown_candidates(model, item_ids, 60, max_length=8, rng=np.random.default_rng(0))
    assert len(pool) >= 60 / 2 and max(pool.groups) >= 1
    for group in np.unique(pool.groups):
        queries = [pool.queries[int(q)] for q in np.flatnonzero(pool.groups == group)]
        whole = max(queries, key=len)
        assert len(whole) <= 8 and len(set(whole)) == len(whole)  # never an item twice
        assert sorted(map(len, queries)) == list(range(1, len(whole) + 1))
        assert all(whole[: len(query)] == query for query in queries)


def test_answer_candidates_extend_a_paid_query_by_an_item_of_its_answer() -> None:
    paid = Prefixes.of([["a"], ["a", "b"], ["c"], ["d", "e", "f"], ["g"]])
    answers = [["b", "x"], ["a", "b", "y"], ["z"], ["q"], None]  # the last one failed
    pool = answer_candidates(paid, answers, 200, max_length=3, rng=np.random.default_rng(0))
    grown = {tuple(query) for query in pool.queries}
    # ["a", "b"] + "a"/"b" would repeat an item, ["d", "e", "f"] is at the longest already
    assert grown == {("a", "b"), ("a", "x"), ("a", "b", "y"), ("c", "z")}
    pairs = {(query[0], int(group)) for query, group in zip(pool.queries, pool.groups, strict=True)}
    assert len(pairs) == len(set(pool.groups.tolist())) == 2  # one group per first item
    empty = answer_candidates(paid, [None] * 5, 10, max_length=3, rng=np.random.default_rng(0))
    assert len(empty) == 0


def test_each_candidate_is_hinted_with_its_users_nearest_paid_answer() -> None:
    queries = Prefixes.of([["a"], ["a", "b"], ["a", "b", "c"], ["a", "b", "c", "d"], ["e"]])
    pool = Candidates(queries, np.array([0, 0, 0, 0, 1]))
    answers = {queries.subset(np.array([1])).texts()[0]: ["x"]}
    answers[queries.subset(np.array([3])).texts()[0]] = ["y"]
    hinted = with_nearest_answers(pool, answers)
    # length 1 is nearest 2; length 3 is as near 2 as 4 and takes the shorter; user 1 has none
    assert hinted.hints == [["x"], ["x"], ["x"], ["y"], None]
    assert hinted.subset(np.array([4, 3])).hints == [None, ["y"]]


def test_dense_hints_keep_known_unseen_items_padded_with_minus_one() -> None:
    pool = Candidates(
        Prefixes.of([["a"], ["b"], ["c"]]), np.arange(3), [["a", "z", "b", "c"], None, ["a"]]
    )
    rows = dense_hints(pool, ["a", "b", "c"], width=2)
    assert rows.tolist() == [[2, 3], [-1, -1], [1, -1]]  # "a" is in query 0, "z" unknown
    with pytest.raises(ValueError):
        dense_hints(Candidates(pool.queries, pool.groups), ["a"], width=2)


# --- scores --------------------------------------------------------------------------------


def test_views_score_is_zero_where_the_recent_half_is_the_whole_query() -> None:
    item_ids = [f"i{n}" for n in range(30)]
    model = tiny_student(item_ids)
    histories = Sequences.from_lists([[3], [4], [5, 6, 7, 8, 9, 10, 11, 12]])
    scores = informativeness("views", model, histories, np.random.default_rng(0))
    assert scores[:2].tolist() == [0.0, 0.0]
    assert 0.0 <= scores[2] <= 1.0


def test_views_halve_what_the_student_sees_of_a_history() -> None:
    histories = Sequences.from_lists([[7], [1, 2, 3, 4, 5], list(range(1, 101))])
    halves = recent_halves(histories, window=20).to_lists()
    assert halves == [[7], [3, 4, 5], list(range(91, 101))]  # of 100 items the student sees 20


def test_margin_score_is_the_negated_gap_between_the_10th_and_11th_item() -> None:
    item_ids = [f"i{n}" for n in range(30)]
    model = tiny_student(item_ids)
    histories = Sequences.from_lists([[1, 2, 3], [4]])
    scores = informativeness("margin", model, histories, np.random.default_rng(0))
    with torch.no_grad():
        logits = model.logits(torch.as_tensor(histories.padded(20, np.arange(2))))
    for row, seen in enumerate(([1, 2, 3], [4])):
        values = logits[row].clone()
        values[[0, *seen]] = float("-inf")
        top = values.topk(11).values
        assert scores[row] == pytest.approx(-(top[9] - top[10]).item(), abs=1e-5)


def test_neighbour_score_is_how_much_of_the_top_10_the_hint_lacks() -> None:
    item_ids = [f"i{n}" for n in range(30)]
    model = tiny_student(item_ids)
    histories = Sequences.from_lists([[1, 2, 3], [4], [5]])
    rng = np.random.default_rng(0)
    with torch.no_grad():
        logits = model.logits(torch.as_tensor(histories.padded(20, np.arange(3))))
    logits[0, [0, 1, 2, 3]] = float("-inf")
    top = logits[0].topk(10).indices.tolist()
    hints = np.array([top, [-1] * 10, top[:5] + [-1] * 5])
    scores = informativeness("neighbour", model, histories, rng, hints)
    assert scores[0] == pytest.approx(0.0) and scores[1] == pytest.approx(1.0)
    assert 0.0 <= scores[2] <= 1.0
    with pytest.raises(ValueError):
        informativeness("neighbour", model, histories, rng)


def test_a_committee_without_dropout_agrees_and_with_it_can_disagree() -> None:
    item_ids = [f"i{n}" for n in range(30)]
    histories = Sequences.from_lists([[1, 2, 3, 4], [5, 6], [7]] * 4)
    rng = np.random.default_rng(0)
    calm = informativeness("committee", tiny_student(item_ids, dropout=0.0), histories, rng)
    assert calm.tolist() == [0.0] * 12
    noisy = informativeness("committee", tiny_student(item_ids, dropout=0.9), histories, rng)
    assert noisy.max() > 0.0 and noisy.min() >= 0.0


def test_overlap_counts_shared_items() -> None:
    a = torch.tensor([[1, 2, 3, 4], [1, 2, 3, 4]])
    b = torch.tensor([[4, 3, 9, 8], [5, 6, 7, 8]])
    assert overlap(a, b).tolist() == [0.5, 0.0]


def test_dense_leaves_out_items_the_student_does_not_know() -> None:
    from extractor.prefixes import Prefixes

    histories, kept = dense(Prefixes.of([["a", "x", "b"], ["x"], ["b"]]), ["a", "b"])
    assert kept.tolist() == [True, False, True]
    assert histories.to_lists() == [[1, 2], [2]]


# --- warm start ----------------------------------------------------------------------------


def test_warm_start_carries_each_item_by_its_raw_id(tmp_path: Path) -> None:
    before_ids = ["a", "b", "c"]
    before = tiny_student(before_ids, seed=1)
    save_artifact(tmp_path / "r0", before, ArtifactInfo(model=before.config, item_ids=before_ids))
    after_ids = ["c", "z", "a", "b"]  # grown and reordered
    after = tiny_student(after_ids, seed=2)
    fresh_z = after.item_emb.weight[2].clone()
    assert warm_start(after, tmp_path / "r0", after_ids) == len(after.state_dict())
    old = before.item_emb.weight
    new = after.item_emb.weight
    for row, raw in enumerate(after_ids, start=1):
        if raw in before_ids:
            assert torch.equal(new[row], old[before_ids.index(raw) + 1])
    assert torch.equal(new[2], fresh_z)  # "z" is new: left as initialised
    assert torch.equal(after.pos_emb.weight, before.pos_emb.weight)


# --- whole runs against a real teacher -----------------------------------------------------


@pytest.fixture(scope="module")
def artifact_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    item_ids = load_dataset(DATASET).item_ids.tolist()
    return save_tiny_teacher(tmp_path_factory.mktemp("teacher"), item_ids)


@pytest.fixture(scope="module")
def start_teacher(artifact_dir: Path) -> Iterator[StartTeacher]:
    with ExitStack() as stack:

        def start(middleware: Callable[[FastAPI], None] | None = None) -> str:
            app = create_app(TeacherSettings(model_dir=artifact_dir, api_keys=KEYS))
            if middleware is not None:
                middleware(app)
            return stack.enter_context(running(app))

        yield start


def usage(url: str, key: str) -> int:
    reply = httpx.get(f"{url}/v1/usage", headers={"Authorization": f"Bearer {key}"})
    return reply.json()["used"]


def steal_config(url: str, key: str, out: Path, source: str, budget: int = 60) -> StealConfig:
    extra = {"dataset": DATASET} if source == "seeded" else {"n_sequences": 40, "max_length": 8}
    return StealConfig(
        out=out,
        extract=ExtractConfig(
            teacher_url=url,
            api_key=key,
            budget=budget,
            out=out,
            source=source,
            k=K,
            batch_size=4,
            chunk_size=4,
            concurrency=1,
            seed=3,
            timeout_s=3.0,  # a resume settles the ledger with the teacher 3 s after a kill
            **extra,
        ),
        distill=DistillConfig(
            probes=out,
            out=out,
            model=ModelConfig(hidden=16, n_heads=2, max_len=20),
            max_epochs=2,
            batch_size=8,
            progress=False,
            device="cpu",
        ),
        adaptive=AdaptiveConfig(boundaries=(20, 40), score="views", pool=200, round_epochs=1),
    )


def written_ids(out: Path) -> list[int]:
    """Every query id of every part, a query written twice counted twice."""
    parts = sorted((out / "probes").glob("part-*.parquet"))
    return [i for part in parts for i in pq.read_table(part).column("query_id").to_pylist()]


def assert_spent_once(url: str, key: str, out: Path, budget: int) -> None:
    ids = written_ids(out)
    assert len(ids) == len(set(ids))  # no query id twice
    spent = read_spent(out / "probes" / LEDGER_FILENAME)
    assert spent == usage(url, key) <= budget


@pytest.mark.parametrize(
    ("source", "rounds"),
    [
        ("seeded", {}),
        ("autoregressive", {}),
        ("seeded", {"score": "neighbour"}),
        ("autoregressive", {"score": "neighbour", "grow_from": "teacher"}),
    ],
    ids=["seeded", "data-free", "seeded-neighbour", "data-free-teacher-neighbour"],
)
def test_rounds_pay_up_to_each_end_and_the_final_student_learns_from_all(
    start_teacher: StartTeacher, tmp_path: Path, source: str, rounds: dict[str, str]
) -> None:
    url, key = start_teacher(), KEYS[0 if source == "seeded" else 1]
    config = steal_config(url, key, tmp_path / "run", source)
    config.adaptive = replace(config.adaptive, **rounds)
    seen: list[int] = []
    records = steal(config, hooks=RoundHooks(on_round=lambda record: seen.append(record.round)))
    assert seen == [0, 1, 2]
    assert [r.ends_at for r in records] == [20, 40, 60]
    assert all(r.paid_total is not None and r.paid_total <= r.ends_at for r in records)
    assert records[-1].paid_total == 60 and all(r.heldout is not None for r in records)
    assert_spent_once(url, key, config.out, 60)
    state = json.loads((config.out / STATE_FILENAME).read_text())
    assert [r["paid_total"] for r in state["rounds"]] == [r.paid_total for r in records]
    # each later round asked exactly the queries it saved, under ids after every earlier one
    table = read_probe_set(config.extract.out)
    rows = dict(zip(table["query_id"].to_pylist(), table["history"].to_pylist(), strict=True))
    later: set[int] = set()
    for r in (2, 1):
        saved = json.loads((config.out / "rounds" / f"r{r}.json").read_text())
        asked = [(i, q) for i, q in zip(saved["ids"], saved["queries"], strict=True) if i in rows]
        assert asked and all(rows[i] == q for i, q in asked)
        later |= set(saved["ids"])
        assert min(saved["ids"]) > max(i for i in rows if i not in later)
        if rounds.get("grow_from") == "teacher":  # each one item beyond an earlier query
            earlier = {tuple(rows[i]) for i in rows if i < min(saved["ids"])}
            assert all(tuple(q[:-1]) in earlier for _, q in asked)
    student = load_artifact(config.distill.out)  # trained on every paid answer
    summary = json.loads((config.distill.out / "distill.json").read_text())
    assert summary["queries"] == table.num_rows and student.info.item_ids

    again = steal(config)  # everything is done: nothing is paid or trained again
    assert [r.to_dict() for r in again] == [r.to_dict() for r in records]
    assert usage(url, key) == 60


def steal_entry(config: StealConfig) -> list[str]:
    """A process that runs `steal(config)`: the test kills it where the gate holds."""
    settings = {
        "url": config.extract.teacher_url,
        "key": config.extract.api_key,
        "out": str(config.out),
        "source": config.extract.source,
    }
    code = (
        "import json, sys; sys.path.insert(0, 'tests');"
        "from test_adaptive import steal_config; from adaptive.run import steal;"
        "s = json.loads(sys.argv[1]);"
        "steal(steal_config(s['url'], s['key'], __import__('pathlib').Path(s['out']), s['source']))"
    )
    return [sys.executable, "-c", code, json.dumps(settings)]


@pytest.mark.parametrize("hold_at", [6, 8], ids=["between-rounds", "mid-round"])
def test_a_run_killed_in_a_round_or_between_rounds_resumes_without_paying_twice(
    start_teacher: StartTeacher, tmp_path: Path, hold_at: int
) -> None:
    """Round 0 is 20 answers in 5 requests of 4: the 6th request is round 1's first (its
    queries chosen and saved, nothing of it paid), the 8th is in the middle of round 1."""
    key = KEYS[2 if hold_at == 6 else 3]
    gate = Gate(key, hold_at=hold_at)
    url = start_teacher(middleware=gate.install)
    config = steal_config(url, key, tmp_path / "run", "seeded")
    process = subprocess.Popen(steal_entry(config), cwd=ROOT, env=dict(os.environ))
    try:
        assert gate.holding.wait(120), "the run never reached the gate"
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        gate.release.set()
        if process.poll() is None:
            process.kill()
    time.sleep(config.extract.timeout_s + 0.5)  # the held request can no longer be billed
    state = json.loads((config.out / STATE_FILENAME).read_text())
    assert state["rounds"][0]["paid_total"] == 20 and state["rounds"][1]["paid_total"] is None
    assert (config.out / "rounds" / "r1.json").is_file()

    records = steal(config)
    assert [r.paid_total for r in records] == [20, 40, 60]
    assert_spent_once(url, key, config.out, 60)


def test_recmimic_steal_prints_each_round_and_writes_the_student(
    start_teacher: StartTeacher, tmp_path: Path
) -> None:
    url, key = start_teacher(), KEYS[4]
    out = tmp_path / "steal"
    args = ["--teacher-url", url, "--budget", "40", "--out", str(out), "--dataset", DATASET]
    args += ["--k", str(K), "--rounds", "2", "--first-share", "0.5", "--pool", "100"]
    args += ["--round-epochs", "1", "--max-epochs", "1", "--no-progress"]
    env = {**os.environ, "RECMIMIC_API_KEY": key}
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "steal", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("round 0: paid 20 of 40, held-out Agr@10 ")
    assert lines[1].startswith("round 1: paid 40 of 40, held-out Agr@10 ")
    assert lines[-1] == f"student -> {out / 'student'}"
    assert load_artifact(out / "student").info.item_ids and usage(url, key) == 40
    assert key not in done.stdout + done.stderr
