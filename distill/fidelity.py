"""How well a student stands in for its teacher: accuracy on real held-out data and agreement.

Both models are ranked in the DATASET's id space, so a teacher and a student with different
catalogues (a student knows only the items the black box showed it) are compared on the same
items: a model's scores are re-indexed through the raw item ids, and an item a model does not
know is ranked last by it. A teacher given as a URL is asked over HTTP for its top-K of every
test history and ranked by its answer lists, which makes its HR and NDCG exact at every cut-off
up to K, with one difference a black box imposes: it masks every history item, so a user whose
test item repeats an earlier one counts as a miss for it (local models never mask the target).
Those answers are paid like probing, through the extractor (budget ledger, answer cache, parts
on disk), under a budget of their own: one answer per test user, never paid twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import torch

from distill.report import write_report
from extractor.client import BUDGET_REFUSED
from extractor.config import TEST_HISTORIES, ExtractConfig
from extractor.errors import BlackBoxError
from extractor.probeset import ANSWERED, read_probe_set
from extractor.profiles import ApiProfile
from extractor.run import SUMMARY_FILENAME as EXTRACT_SUMMARY
from extractor.run import ExtractSummary, extract
from extractor.tasks import run_event_loop
from seqrec.artifacts import Artifact, load_artifact
from seqrec.data.dataset import LeaveOneOutSplit, SequenceDataset, leave_one_out
from seqrec.data.loading import load_dataset
from seqrec.evaluate import GROUPS, group_masks, group_metrics
from seqrec.inference import batches, model_device
from seqrec.metrics import DEFAULT_KS, agreement_at_k, history_mask, target_ranks

TOP = max(DEFAULT_KS)  # list length compared: enough for every reported cut-off
TEACHER_ANSWERS = "teacher-answers"  # under the report directory


@dataclass(frozen=True)
class Ranked:
    """One model's answers on the test histories, in dataset ids."""

    ranks: np.ndarray  # [U] 0-based rank of the test target; TOP or more when not in the list
    top: np.ndarray  # [U, TOP] best first, history masked


def id_map(source_ids: list[str] | np.ndarray, target_ids: list[str] | np.ndarray) -> np.ndarray:
    """[len(source) + 1]: dense id in `target` of each dense id of `source` (0 = unknown)."""
    position = {str(raw): i for i, raw in enumerate(target_ids, start=1)}
    return np.array([0] + [position.get(str(raw), 0) for raw in source_ids], dtype=np.int64)


@torch.no_grad()
def rank_with_model(
    artifact: Artifact, data: SequenceDataset, split: LeaveOneOutSplit, batch_size: int = 1024
) -> Ranked:
    """Full-ranking answers of a local model, re-indexed into the dataset's ids."""
    model = artifact.model.eval()
    device = model_device(model)
    to_model = torch.as_tensor(id_map(data.item_ids, artifact.info.item_ids), device=device)
    histories, targets = split.test_input, split.test_target
    ranks = np.zeros(histories.n_users, dtype=np.int64)
    top = np.zeros((histories.n_users, TOP), dtype=np.int64)  # 0 = fewer unseen items than TOP
    width = min(TOP, data.n_items)
    for users in batches(histories.n_users, batch_size):
        seqs = torch.as_tensor(histories.padded(model.config.max_len, users), device=device)
        scores = model.logits(to_model[seqs])[:, to_model]  # unknown items land on column 0
        scores[:, 0] = float("-inf")
        rows, items = histories.gather(users)
        history = history_mask(rows, items, len(users), data.n_items, device)
        target = torch.as_tensor(targets[users], device=device)
        everyone = torch.arange(len(users), device=device)
        not_target = history.clone()
        not_target[everyone, target] = False  # a repeated item can still be the target
        ranks[users] = (
            target_ranks(scores.masked_fill(not_target, float("-inf")), target).cpu().numpy()
        )
        best = scores.masked_fill(history, float("-inf")).topk(width, dim=1)
        top[users, :width] = best.indices.masked_fill(torch.isinf(best.values), 0).cpu().numpy()
    return Ranked(ranks, top)


def ranked_from_lists(lists: np.ndarray, targets: np.ndarray) -> Ranked:
    """0-based ranks from answer lists [U, TOP] (dense ids, 0 = empty); TOP when not listed."""
    hit = lists == targets[:, None]
    ranks = np.where(hit.any(axis=1), hit.argmax(axis=1), TOP)
    return Ranked(ranks, lists)


def ask_test_histories(
    url: str,
    api_key: str,
    dataset: str,
    answers: Path,
    budget: int | None = None,
    cache: str | None = None,
    api_profile: str | ApiProfile | None = None,
) -> ExtractSummary:
    """Pay the black box for its top-K of every test history, at most once each.

    An extraction of its own (`TEST_HISTORIES`) into `answers`, under its own `budget` (None:
    one answer per test user): its ledger and parts make a killed evaluation resume where it
    stopped, and its answer cache (`cache`, else embedded under `answers`) means a rerun pays
    nothing.
    """
    n_users = leave_one_out(load_dataset(dataset)).test_input.n_users
    config = ExtractConfig(
        teacher_url=url,
        api_key=api_key,
        budget=n_users if budget is None else budget,
        out=answers,
        source=TEST_HISTORIES,
        dataset=dataset,
        scales=(1.0,),
        k=TOP,
        cache=cache,
        api_profile=api_profile,
    )
    summary = run_event_loop(extract(config, progress=False))
    if summary.stopped == BUDGET_REFUSED:
        raise BlackBoxError(
            f"the evaluation's budget of {config.budget} answers is spent and "
            f"{summary.queries_left} test histories are still unanswered (answers lost on the "
            f"way are billed too); a larger budget resumes from {answers}"
        )
    if summary.stopped is not None:
        raise BlackBoxError(
            f"the teacher did not answer every test history ({summary.stopped}); the "
            f"{summary.spent_total} answers paid so far are kept in {answers}, a rerun resumes"
        )
    return summary


def rank_with_black_box(
    answers: Path, data: SequenceDataset, split: LeaveOneOutSplit
) -> tuple[Ranked, int]:
    """The black box's answers to the test histories (`ask_test_histories`), as a ranking, and
    how many answer slots name an item the dataset does not have (ranked as no item: a miss
    for both metrics and agreement; an answer once lost them without a word)."""
    table = read_probe_set(answers)
    wanted = split.test_input.n_users
    answered = int(pc.sum(pc.equal(table.column("status"), ANSWERED)).as_py() or 0)
    if answered != wanted:
        raise BlackBoxError(
            f"the teacher did not answer {wanted - answered} of {wanted} test histories; what "
            f"it answered is kept in {answers} (remove that folder to ask every one again)"
        )
    to_data = {raw: i for i, raw in enumerate(data.item_ids.tolist(), start=1)}
    lists = np.zeros((table.num_rows, TOP), dtype=np.int64)
    users = table.column("query_id").to_numpy()
    unknown = 0
    for row, answer in zip(users.tolist(), table.column("items").to_pylist(), strict=True):
        dense = [to_data.get(str(raw), 0) for raw in answer[:TOP]]
        unknown += dense.count(0)
        lists[row, : len(dense)] = dense
    return ranked_from_lists(lists, split.test_target), unknown


def fidelity_report(teacher: Ranked, student: Ranked, split: LeaveOneOutSplit) -> dict:
    """Accuracy of both per group, and the student's agreement with the teacher per group."""
    targets = split.test_target
    masks = group_masks(targets, split)
    agreement = {k: agreement_at_k(student.top, teacher.top, k) for k in (1, 10)}
    return {
        "teacher": group_metrics(teacher.ranks, targets, split, DEFAULT_KS),
        "student": group_metrics(student.ranks, targets, split, DEFAULT_KS),
        "agreement": {  # a group without test users has none (small datasets)
            group: {
                f"agr{k}": float(values[masks[group]].mean())
                for k, values in agreement.items()
                if masks[group].any()
            }
            for group in GROUPS
        },
    }


@dataclass(frozen=True)
class EvaluateConfig:
    """`teacher` is an artifact directory or an http(s) URL (then `api_key` is needed)."""

    teacher: str
    student: Path
    dataset: str
    out: Path
    api_key: str | None = field(default=None, repr=False)
    budget: int | None = None  # a URL teacher's paid answers, all runs; None: one per test user
    api_profile: str | ApiProfile | None = None  # how to talk to a URL teacher
    cache: str | None = None  # a URL teacher's answer cache (redis:// or a file; None: embedded)

    @property
    def answers(self) -> Path:
        """Where a URL teacher's paid answers, ledger and cache are kept: reruns pay nothing."""
        return self.out / TEACHER_ANSWERS

    @property
    def teacher_is_url(self) -> bool:
        return self.teacher.startswith(("http://", "https://"))


def _extraction(student: Artifact) -> dict:
    """The extraction's summary (budget, spend) when the probe set is still where it was."""
    probe_set = student.info.dataset.get("probe_set")
    path = Path(probe_set) / EXTRACT_SUMMARY if probe_set else None
    return json.loads(path.read_text()) if path is not None and path.is_file() else {}


def evaluate_student(config: EvaluateConfig) -> tuple[dict, dict[str, Path]]:
    """Rank the test users with teacher and student, compare, and write the report files."""
    data = load_dataset(config.dataset)
    split = leave_one_out(data)
    student = load_artifact(config.student)
    evaluation_paid = evaluation_budget = unknown = 0  # a local teacher is not paid
    if config.teacher_is_url:
        if not config.api_key:
            raise ValueError("a teacher URL needs an API key (--api-key or $RECMIMIC_API_KEY)")
        asked = ask_test_histories(
            config.teacher,
            config.api_key,
            config.dataset,
            config.answers,
            config.budget,
            config.cache,
            config.api_profile,
        )
        evaluation_paid, evaluation_budget = asked.spent_total, asked.budget
        teacher, unknown = rank_with_black_box(config.answers, data, split)
    else:
        teacher = rank_with_model(load_artifact(config.teacher), data, split)
    report = fidelity_report(teacher, rank_with_model(student, data, split), split)
    extraction = _extraction(student)
    training = student.info.training
    report.update(
        dataset=data.card(),
        teacher_source=config.teacher,
        student_dir=str(config.student),
        run={
            "seed": training.get("seed"),
            "objective": training.get("objective", {}).get("name"),
            "experts": student.info.model.experts,
            "budget": extraction.get("budget"),
            "spent": extraction.get("spent_total"),  # probing's; kept for older readers
            # Evaluation has a budget of its own, one answer per test user, apart from probing's.
            "paid": {"probing": extraction.get("spent_total"), "evaluation": evaluation_paid},
            "evaluation_budget": evaluation_budget,
            "unknown_teacher_items": unknown,  # answer slots naming items the dataset lacks
            "probe_set": student.info.dataset.get("probe_set"),
        },
    )
    return report, write_report(report, config.out)
