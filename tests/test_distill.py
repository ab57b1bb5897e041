"""The student side: probe sets read back, examples, training, resuming, and the fidelity report.

A tiny SASRec teacher is trained on synthetic data, served over real HTTP and probed by a real
extraction; the students are tiny too, so every test runs in seconds.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pytest
import torch
from tiny_teacher import save_tiny_teacher
from typer.testing import CliRunner

from distill.config import DistillConfig, ObjectiveConfig
from distill.examples import (
    answered_view_examples,
    concat,
    heldout_split,
    query_examples,
    suffixes,
)
from distill.fidelity import (
    TEACHER_ANSWERS,
    EvaluateConfig,
    ask_test_histories,
    evaluate_student,
    rank_with_black_box,
    rank_with_model,
)
from distill.probes import (
    PAD_BLOCK_VALUES,
    ProbeData,
    ProbeDataError,
    answers_so_far,
    first_answers,
    load_probes,
)
from distill.run import build_student, distill, item_popularity
from distill.student import _restrict, restrict_answers
from distill.train import CHECKPOINT_DIR, Cancelled, heldout_agreement
from extractor.config import ExtractConfig
from extractor.probeset import ProbeRow, ProbeSetWriter, ViewAnswer, read_probe_set
from extractor.run import CATALOGUE_FILENAME, extract
from extractor.views import VIEW_SCALES
from seqrec.artifacts import load_artifact
from seqrec.data.dataset import leave_one_out
from seqrec.data.loading import load_dataset
from seqrec.models import ModelConfig
from seqrec.supervised import train_supervised
from seqrec.train import TrainConfig
from service.cli import app, is_user_error
from teacher_mock.app import create_app
from teacher_mock.server import running
from teacher_mock.settings import TeacherSettings

DATASET = "synthetic:150:60"
KEY = "distill-test-key"
STUDENT = ModelConfig(hidden=16, max_len=20, n_heads=2, dropout=0.1)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("teacher")
    train_supervised(
        load_dataset(DATASET),
        ModelConfig(hidden=16, max_len=20, n_heads=2),
        TrainConfig(max_epochs=8, patience=8, progress=False, device="cpu"),
        out,
    )
    return out


@pytest.fixture(scope="module")
def teacher_url(teacher_dir: Path):
    with running(create_app(TeacherSettings(model_dir=teacher_dir, api_keys=[KEY]))) as url:
        yield url


@pytest.fixture(scope="module")
def probe_dir(teacher_url: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("probes")
    config = ExtractConfig(
        teacher_url=teacher_url,
        api_key=KEY,
        budget=1500,
        out=out,
        source="seeded",
        dataset=DATASET,
        prefixes=4,
        k=20,
        scales=VIEW_SCALES,  # the views feed reliability, InfoNCE and view examples
    )
    asyncio.run(extract(config, progress=False))
    return out


def config_for(probe_dir: Path, out: Path, **changes) -> DistillConfig:
    base = DistillConfig(
        probes=probe_dir,
        out=out,
        model=STUDENT,
        max_epochs=6,
        patience=6,
        batch_size=64,
        progress=False,
        device="cpu",
    )
    return replace(base, **changes)


@pytest.fixture(scope="module")
def scored_probe_dir(probe_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`probe_dir` as if its black box had scored its answers (Algolia-like, 0..100, a large
    gap after the first item), except every third query's: a probe set mixing both."""
    out = tmp_path_factory.mktemp("scored")
    table = read_probe_set(probe_dir)

    def scored(n: int) -> list[float]:
        return [100.0 * 0.9**j - 30.0 * (j > 0) for j in range(n)]

    answers = table.column("items").to_pylist()
    scores = [
        None if items is None or row % 3 == 0 else scored(len(items))
        for row, items in enumerate(answers)
    ]
    with ProbeSetWriter(out) as writer:
        writer.add_part(with_scores(table, scores))
    catalogue = probe_dir / CATALOGUE_FILENAME
    if catalogue.is_file():
        (out / CATALOGUE_FILENAME).write_text(catalogue.read_text())
    return out


# --- reading a probe set -------------------------------------------------------------------


@pytest.mark.parametrize("block_values", [PAD_BLOCK_VALUES, 1, 3])
def test_probes_are_mapped_to_dense_ids_with_the_black_boxs_catalogue_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block_values: int
):
    """Whatever the block size ids are mapped in, the arrays are the same."""
    monkeypatch.setattr("distill.probes.PAD_BLOCK_VALUES", block_values)
    (tmp_path / CATALOGUE_FILENAME).write_text(json.dumps(["c", "a", "b", "d"]))
    with ProbeSetWriter(tmp_path) as writer:
        writer.add(
            ProbeRow(
                0,
                ["a", "b", "c", "d"],
                ["x", "d"],
                views=[ViewAnswer(0.5, 2, ["d", "a"]), ViewAnswer(0.25, 1, None)],
            )
        )
        writer.add(ProbeRow(1, ["b"], None, error="HTTP 500"))
        writer.add(ProbeRow(2, ["d"], ["c", "a", "b"], views=[ViewAnswer(0.5, 1, ["c"])]))
    probes = load_probes(tmp_path, max_history=3)
    # The listed catalogue keeps its order; an id only the answers showed is appended.
    assert probes.item_ids == ["c", "a", "b", "d", "x"]
    assert probes.unlisted_items == 1  # counted: the listing fell short by "x"
    assert probes.query_ids.tolist() == [0, 2]  # the failed query is not training data
    assert probes.histories.tolist() == [[3, 1, 4], [0, 0, 4]]  # newest 3 kept, left-padded
    assert probes.lengths.tolist() == [4, 1]
    assert probes.topk.tolist() == [[5, 4, 0], [1, 2, 3]]
    # int32 ids: half the memory of a large probe set's matrices
    id_arrays = (probes.histories, probes.topk, probes.view_topk)
    assert {array.dtype for array in id_arrays} == {np.dtype("int32")}
    assert probes.view_lengths.tolist() == [[2, 1], [1, 0]]
    assert probes.view_topk[0, 0].tolist() == [4, 2, 0]
    assert probes.view_topk[0, 1].tolist() == [0, 0, 0]  # failed view
    # Answered and shorter than the query: only query 0's half view.
    assert probes.view_usable.tolist() == [[True, False], [False, False]]
    assert probes.scores is None and probes.has_scores is None  # no column: nothing allocated


def test_without_a_listed_catalogue_every_id_seen_anywhere_is_one_item(tmp_path: Path):
    """Ids seen only in a history, only in an answer or only in a view each become an item,
    once, in sorted order, whichever part (Arrow chunk) they were written in."""
    with ProbeSetWriter(tmp_path, rows_per_part=1) as writer:
        writer.add(ProbeRow(0, ["h", "b"], ["b", "i"], views=[ViewAnswer(0.5, 1, ["v", "b"])]))
        writer.add(ProbeRow(1, ["b"], ["i", "h"], views=[ViewAnswer(0.5, 1, ["w"])]))
    probes = load_probes(tmp_path)
    assert probes.item_ids == ["b", "h", "i", "v", "w"]
    assert probes.histories.tolist() == [[2, 1], [0, 1]]
    assert probes.topk.tolist() == [[1, 3], [3, 2]]
    assert probes.view_topk[:, 0].tolist() == [[4, 1], [5, 0]]


SCORES_TYPE = pa.list_(pa.float32())


def with_scores(table: pa.Table, scores: list[list[float] | None]) -> pa.Table:
    """A probe table as an extraction that kept the black box's scores writes it."""
    return table.append_column(pa.field("scores", SCORES_TYPE), pa.array(scores, SCORES_TYPE))


def rows_table(directory: Path, rows: list[ProbeRow]) -> pa.Table:
    with ProbeSetWriter(directory) as writer:
        writer.add_many(rows)
    return read_probe_set(directory)


def test_scores_are_read_beside_the_answer_they_score(tmp_path: Path):
    """Parts written before scores existed and parts with them read as one probe set; a row has
    scores only where its list is there, as long as its answer and finite."""
    with ProbeSetWriter(tmp_path / "probes") as writer:  # an old part: no scores column
        writer.add(ProbeRow(0, ["a"], ["b", "c"], views=[ViewAnswer(0.5, 1, ["c"])]))
    table = rows_table(
        tmp_path / "new",
        [
            ProbeRow(1, ["a", "b"], ["c", "a", "b"], views=[ViewAnswer(0.5, 1, ["a"])]),
            ProbeRow(2, ["b"], ["a", "c"]),
            ProbeRow(3, ["c"], None, error="HTTP 500"),
            ProbeRow(4, ["c"], ["a", "b"]),
            ProbeRow(5, ["a"], ["c"]),
        ],
    )
    scores = [[9.0, 7.5, -1.0], None, None, [1.0], [float("nan")]]
    with ProbeSetWriter(tmp_path / "probes") as writer:
        writer.add_part(with_scores(table, scores))

    probes = load_probes(tmp_path / "probes")

    assert probes.query_ids.tolist() == [0, 1, 2, 4, 5]
    assert probes.topk.tolist() == [[2, 3, 0], [3, 1, 2], [1, 3, 0], [1, 2, 0], [3, 0, 0]]
    # Query 0: an old part; 2: no scores; 4: one score for two items; 5: not a number.
    assert probes.has_scores.tolist() == [False, True, False, False, False]
    assert probes.scores.dtype == np.float32
    assert probes.scores.tolist() == [[0, 0, 0], [9.0, 7.5, -1.0], [0, 0, 0], [0, 0, 0], [0, 0, 0]]
    kept = first_answers(probes, 3)  # queries 0 to 2: query 2 asks what query 1's view did
    assert kept.has_scores.tolist() == [False, True, False] and kept.scores[1, 0] == 9.0
    # The full view's example carries the scores; a view's answer has none.
    c = np.zeros(probes.n_queries)
    queries = np.array([0, 1])
    examples = concat(
        [query_examples(probes, c, queries), answered_view_examples(probes, c, queries)]
    )
    assert examples.has_scores.tolist() == [False, True, False]  # query 0's view is itself
    assert examples.scores[:, 0].tolist() == [0.0, 9.0, 0.0]


def test_a_probe_set_whose_scores_column_holds_none_has_no_scores(tmp_path: Path):
    table = rows_table(tmp_path / "rows", [ProbeRow(0, ["a"], ["b"]), ProbeRow(1, ["b"], ["a"])])
    with ProbeSetWriter(tmp_path / "probes") as writer:
        writer.add_part(with_scores(table, [None, None]))
    probes = load_probes(tmp_path / "probes")
    assert probes.scores is None and probes.has_scores is None


def test_a_directory_without_answers_is_refused(tmp_path: Path):
    with pytest.raises(ProbeDataError, match="no answered queries"):
        load_probes(tmp_path)


def test_examples_split_whole_queries_and_baselines_add_the_answered_views(probe_dir: Path):
    probes = load_probes(probe_dir)
    c = np.linspace(0, 1, probes.n_queries)
    train, held = heldout_split(probes.n_queries, 0.2, seed=3)
    assert not set(train) & set(held) and len(train) + len(held) == probes.n_queries
    queries = query_examples(probes, c, train)
    views = answered_view_examples(probes, c, train)
    assert len(queries) == len(train)
    assert len(views) == int(probes.view_usable[train].sum()) > 0
    # A view example is the suffix of its query: as long as its stated length, never longer.
    assert ((views.histories > 0).sum(axis=1) == views.lengths).all()
    assert (views.view_lengths == 0).all()


def test_suffixes_keep_the_most_recent_items():
    rows = np.array([[0, 5, 6, 7], [1, 2, 3, 4]])
    assert suffixes(rows, np.array([2, 1])).tolist() == [[0, 0, 6, 7], [0, 0, 0, 4]]


def test_restricted_answers_keep_order_and_move_up():
    allowed = torch.tensor([False, True, False, True, True])
    topk = torch.tensor([[2, 3, 1, 4], [4, 2, 2, 0]])
    assert restrict_answers(topk, allowed).tolist() == [[3, 1, 4, 0], [4, 0, 0, 0]]
    restricted, order = _restrict(topk, allowed)  # an expert's answers, and their scores
    scores = (10 * topk).float().gather(1, order)
    assert torch.equal(scores[restricted != 0], 10 * restricted[restricted != 0].float())


def test_answers_so_far_counts_each_distinct_history_once_in_query_order():
    """Query 0 asks [1 2 3 4], [3 4] and [4]; query 1 asks [5 4] and [4] again (shared: paid
    once); query 2 asks [6], its half view being itself. Rows are stored out of order."""
    answer = [9, 8]
    rows = {  # query id -> (history, view lengths, views answered)
        0: ([1, 2, 3, 4], [2, 1], [True, True]),
        1: ([5, 4], [1, 0], [True, False]),
        2: ([6], [1, 1], [True, False]),
    }
    order = [2, 0, 1]
    histories = np.zeros((3, 4), dtype=np.int32)
    for row, q in enumerate(order):
        history = rows[q][0]
        histories[row, 4 - len(history) :] = history
    probes = ProbeData(
        item_ids=[str(i) for i in range(1, 10)],
        query_ids=np.array(order),
        histories=histories,
        lengths=np.array([len(rows[q][0]) for q in order]),
        topk=np.array([answer] * 3),
        view_lengths=np.array([rows[q][1] for q in order]),
        view_topk=np.array([[answer if ok else [0, 0] for ok in rows[q][2]] for q in order]),
        run_info={},
    )
    assert answers_so_far(probes).tolist() == [5, 3, 4]  # rows hold queries 2, 0, 1
    kept = first_answers(probes, 4)
    assert kept.query_ids.tolist() == [0, 1]
    assert kept.histories[1].tolist() == [0, 0, 5, 4]
    with pytest.raises(ProbeDataError, match="fewer than 2"):
        first_answers(probes, 3)


def test_a_smaller_budget_trains_on_the_first_answers_paid(probe_dir: Path, tmp_path: Path):
    probes = load_probes(probe_dir)
    paid = json.loads((probe_dir / "summary.json").read_text())["paid"]
    so_far = answers_so_far(probes)
    assert np.all(np.diff(so_far[np.argsort(probes.query_ids)]) >= 0)
    assert 0.95 * paid <= so_far.max() <= paid  # less only where a query was cut by the budget
    summary = distill(config_for(probe_dir, tmp_path, answers=600, max_epochs=1))
    assert summary.queries == int((so_far <= 600).sum()) < probes.n_queries
    assert summary.config["answers"] == 600


# --- training ------------------------------------------------------------------------------


@pytest.mark.parametrize("objective", ["bahsd", "dfme", "kl", "listwise"])
def test_a_student_learns_to_agree_with_its_teacher(
    probe_dir: Path, tmp_path: Path, objective: str
):
    config = config_for(probe_dir, tmp_path, objective=ObjectiveConfig(name=objective))
    probes = load_probes(probe_dir)
    _, held = heldout_split(probes.n_queries, config.heldout, config.seed)
    heldout = query_examples(probes, np.zeros(probes.n_queries), held)
    torch.manual_seed(config.seed)
    untrained = build_student(
        replace(STUDENT, n_items=probes.n_items), item_popularity(probes, held)
    )
    before = heldout_agreement(untrained, heldout)["agr10"]

    summary = distill(config)

    assert summary.heldout["agr10"] > before + 0.1
    student = load_artifact(tmp_path)  # a normal artifact, servable like a teacher
    assert student.info.item_ids == probes.item_ids
    assert not (tmp_path / CHECKPOINT_DIR).exists()


def test_the_students_bar_shows_epochs_and_patience_without_an_eta(
    probe_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    distill(config_for(probe_dir, tmp_path, max_epochs=3, patience=2, progress=True))
    shown = capsys.readouterr().err
    assert "distill: epoch 1 (best 1, stops in 2 without a better one; cap 3)" in shown
    assert re.search(r"\d\d:\d\d<", shown) is None  # tqdm's "elapsed<remaining"


def test_an_interrupted_run_resumes_to_the_same_student(probe_dir: Path, tmp_path: Path):
    whole = distill(config_for(probe_dir, tmp_path / "whole"))

    config = config_for(probe_dir, tmp_path / "resumed")
    epochs_done: list[int] = []
    with pytest.raises(Cancelled):
        distill(
            config,
            should_stop=lambda: len(epochs_done) >= 2,
            on_epoch=lambda epoch, _: epochs_done.append(epoch),
        )
    assert (tmp_path / "resumed" / CHECKPOINT_DIR).is_dir()
    resumed = distill(config)

    assert resumed.resumed_from_epoch == 2
    assert resumed.heldout == whole.heldout
    a = load_artifact(tmp_path / "whole").model.state_dict()
    b = load_artifact(tmp_path / "resumed").model.state_dict()
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_student_and_teacher_keep_the_numerics_a_bit_for_bit_repeat_needs(
    probe_dir: Path, teacher_dir: Path, tmp_path: Path
):
    """Threads and vector instructions decide the order of float reductions: a run keeps the
    thread count and the CPU capability it trained with."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = distill(config_for(probe_dir, tmp_path / "one-thread", max_epochs=1))
    finally:
        torch.set_num_threads(threads)

    expected = {"torch": torch.__version__, "device": "cpu", "threads": 1}
    expected["cpu_capability"] = torch.backends.cpu.get_cpu_capability()  # AVX2, AVX512...
    assert summary.numerics == expected
    assert load_artifact(tmp_path / "one-thread").info.training["numerics"] == expected
    teacher = load_artifact(teacher_dir).info.training["numerics"]
    assert teacher["torch"] == torch.__version__ and teacher["device"] == "cpu"
    assert isinstance(teacher["threads"], int) and teacher["threads"] >= 1
    assert teacher["cpu_capability"] == expected["cpu_capability"]


def test_a_checkpoint_from_other_settings_is_not_resumed(probe_dir: Path, tmp_path: Path):
    config = config_for(probe_dir, tmp_path)
    with pytest.raises(Cancelled):
        distill(config, should_stop=lambda: True)
    other = distill(replace(config, lr=3e-3, max_epochs=1))
    assert other.resumed_from_epoch == 0


def test_a_student_learns_from_the_black_boxs_scores_when_asked(
    scored_probe_dir: Path, tmp_path: Path
):
    runner = CliRunner()
    command = ["distill", "--probes", str(scored_probe_dir), "--out", str(tmp_path / "student")]
    command += ["--hidden", "16", "--max-len", "20", "--max-epochs", "3", "--patience", "3"]
    command += ["--score-weight", "2", "--score-temperature", "0.5", "--no-progress"]
    result = runner.invoke(app, [*command, "--device", "cpu", "--batch-size", "64"])
    assert result.exit_code == 0, result.output
    training = load_artifact(tmp_path / "student").info.training
    assert training["objective"]["score_weight"] == 2.0
    assert training["objective"]["score_temperature"] == 0.5
    learnt = [epoch["score"] for epoch in training["history"]]
    assert all(np.isfinite(learnt)) and learnt[-1] < learnt[0]


def test_an_expert_student_learns_from_scores_too(scored_probe_dir: Path, tmp_path: Path):
    objective = ObjectiveConfig(score_weight=1.0)
    config = config_for(scored_probe_dir, tmp_path, objective=objective, max_epochs=1)
    summary = distill(replace(config, model=replace(STUDENT, experts=2)))
    history = load_artifact(tmp_path).info.training["history"]
    assert summary.epochs_run == 1 and 0 < history[0]["score"] < np.inf


def test_a_zero_score_weight_learns_from_ranks_alone(
    probe_dir: Path, scored_probe_dir: Path, tmp_path: Path
):
    """The scores are there but unused: the same student as from the probe set without them."""
    ranks = distill(config_for(probe_dir, tmp_path / "ranks", max_epochs=1))
    scored = distill(config_for(scored_probe_dir, tmp_path / "scored", max_epochs=1))
    assert scored.heldout == ranks.heldout
    a = load_artifact(tmp_path / "ranks").model.state_dict()
    b = load_artifact(tmp_path / "scored").model.state_dict()
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_a_score_weight_is_refused_for_a_probe_set_without_scores(probe_dir: Path, tmp_path: Path):
    command = ["distill", "--probes", str(probe_dir), "--out", str(tmp_path), "--score-weight", "1"]
    result = CliRunner().invoke(app, command)
    assert isinstance(result.exception, ValueError) and is_user_error(result.exception)
    assert str(result.exception).startswith("the probe set holds no scores; --score-weight")


# --- evaluation ----------------------------------------------------------------------------


def test_a_model_compared_with_itself_agrees_fully(teacher_dir: Path, tmp_path: Path):
    report, paths = evaluate_student(
        EvaluateConfig(teacher=str(teacher_dir), student=teacher_dir, dataset=DATASET, out=tmp_path)
    )
    assert report["teacher"] == report["student"]
    assert all(group["agr10"] == 1.0 for group in report["agreement"].values())
    assert {path.name for path in paths.values()} == {"report.json", "report.md", "report.png"}
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"
    assert report["dataset"]["name"].startswith("synthetic") and "sha256" in report["dataset"]
    # The report says what its terms mean, and that its item rows count users, not items.
    markdown = paths["markdown"].read_text()
    assert "| group | test users |" in markdown and "| head-item targets |" in markdown
    for term in ("**Agr@K**", "**head users**", "**head-item targets**", "counts the head items"):
        assert term in markdown
    assert "evaluation paid nothing (a local teacher)" in markdown


def test_a_dataset_too_small_for_every_group_gets_a_report_with_dashes(tmp_path: Path) -> None:
    """A group without test users once raised KeyError('HR@10') from the report."""
    tiny = "synthetic:40:25"
    item_ids = [str(raw) for raw in load_dataset(tiny).item_ids]
    model = save_tiny_teacher(tmp_path / "model", item_ids)
    report, paths = evaluate_student(
        EvaluateConfig(teacher=str(model), student=model, dataset=tiny, out=tmp_path / "report")
    )
    empty = [group for group, metrics in report["student"].items() if metrics["users"] == 0]
    assert empty and all(report["agreement"][group] == {} for group in empty)
    assert "| – |" in paths["markdown"].read_text() and paths["png"].stat().st_size > 0


def test_a_teacher_over_http_ranks_like_the_same_model_on_disk(
    teacher_dir: Path, teacher_url: str, tmp_path: Path
):
    data = load_dataset(DATASET)
    split = leave_one_out(data)
    local = rank_with_model(load_artifact(teacher_dir), data, split)
    ask_test_histories(teacher_url, KEY, DATASET, tmp_path / "answers")
    remote, unknown = rank_with_black_box(tmp_path / "answers", data, split)
    assert unknown == 0
    assert np.array_equal(remote.top, local.top)
    # The black box masks every history item, so a target the user already had is never in
    # its list; every other user's target has the same rank.
    pairs = zip(split.test_input.to_lists(), split.test_target, strict=True)
    repeated = np.array([target in seq for seq, target in pairs])
    listed = local.ranks < remote.top.shape[1]
    same = ~repeated & listed
    assert np.array_equal(remote.ranks[same], local.ranks[same])
    assert (remote.ranks[repeated] >= remote.top.shape[1]).all()


def test_cli_distills_and_evaluates(probe_dir: Path, teacher_dir: Path, tmp_path: Path):
    runner = CliRunner()
    student = tmp_path / "student"
    result = runner.invoke(
        app,
        [
            "distill",
            "--probes",
            str(probe_dir),
            "--out",
            str(student),
            "--objective",
            "dfme",
            "--negatives",
            "all",
            "--kl-weight",
            "0.3",
            "--answers",
            "700",
            "--hidden",
            "16",
            "--max-len",
            "20",
            "--max-epochs",
            "2",
            "--no-progress",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "held-out Agr@10" in result.output and "note:" not in result.output
    assert json.loads((student / "distill.json").read_text())["unlisted_items"] == 0
    objective = load_artifact(student).info.training["objective"]
    assert objective["n_negatives"] is None and objective["kl_weight"] == 0.3
    assert load_artifact(student).info.training["answers"] == 700
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--teacher",
            str(teacher_dir),
            "--student",
            str(student),
            "--dataset",
            DATASET,
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((student / "report" / "report.json").read_text())
    assert report["run"]["objective"] == "dfme"
    assert report["run"]["budget"] == 1500
    assert report["run"]["paid"]["evaluation"] == 0  # a local teacher costs nothing
    spent = report["run"]["spent"]
    assert f"paid     {spent} answers for probing (budget 1500), nothing for" in result.output


def test_evaluate_says_what_a_teacher_url_was_paid(
    probe_dir: Path, teacher_dir: Path, teacher_url: str, tmp_path: Path
):
    """Evaluating against a URL pays one answer per test user under a budget of its own
    (`recmimic evaluate` once said nothing about it), and a rerun pays nothing (it once paid
    every answer again)."""
    student = tmp_path / "student"
    distill(config_for(probe_dir, student, max_epochs=1))
    command = ["evaluate", "--teacher", teacher_url, "--student", str(student)]
    command += ["--dataset", DATASET, "--api-key", KEY]
    users = load_dataset(DATASET).n_users
    before = usage(teacher_url)
    for _ in range(2):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 0, result.output
        assert f", {users} for evaluation (budget {users}, one per test user" in result.output
        assert usage(teacher_url) == before + users
        report = json.loads((student / "report" / "report.json").read_text())
        assert report["run"]["paid"] == {"probing": report["run"]["spent"], "evaluation": users}
        assert report["run"]["evaluation_budget"] == users
        markdown = (student / "report" / "report.md").read_text()
        assert f"evaluation budget {users} ({users} paid)" in markdown


def usage(teacher_url: str) -> int:
    reply = httpx.get(f"{teacher_url}/v1/usage", headers={"Authorization": f"Bearer {KEY}"})
    return reply.json()["used"]


def test_answers_naming_items_the_dataset_lacks_are_counted(
    teacher_dir: Path, tmp_path: Path
) -> None:
    """A black box whose catalogue holds items the evaluation's dataset does not: those answer
    slots are misses, and the report and the command line say how many."""
    ids = [str(raw) for raw in load_dataset(DATASET).item_ids] + [f"ghost-{i}" for i in range(40)]
    wider = save_tiny_teacher(tmp_path / "wider", ids)
    with running(create_app(TeacherSettings(model_dir=wider, api_keys=[KEY]))) as url:
        command = ["evaluate", "--teacher", url, "--student", str(teacher_dir)]
        command += ["--dataset", DATASET, "--api-key", KEY, "--out", str(tmp_path / "report")]
        result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    table = read_probe_set(tmp_path / "report" / TEACHER_ANSWERS)
    ghosts = sum(
        str(item).startswith("ghost-") for row in table.column("items").to_pylist() for item in row
    )
    assert ghosts > 0 and report["run"]["unknown_teacher_items"] == ghosts
    assert f"note     {ghosts} of the teacher's answer slots name items" in result.output
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert f"{ghosts} teacher answer slots name items the dataset lacks" in markdown


def test_evaluate_refuses_a_budget_it_cannot_use(teacher_dir: Path, teacher_url: str) -> None:
    for teacher, budget, message in [
        (teacher_url, "0", "--budget must be at least 1 paid answer, got 0"),
        (str(teacher_dir), "10", "--budget and --api-profile apply to a teacher URL"),
    ]:
        command = ["evaluate", "--teacher", teacher, "--student", str(teacher_dir)]
        result = CliRunner().invoke(app, [*command, "--dataset", DATASET, "--budget", budget])
        assert isinstance(result.exception, ValueError) and is_user_error(result.exception)
        assert message in str(result.exception)
