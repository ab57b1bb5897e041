"""`recmimic demo`: the pipeline end to end on MovieLens-100k, on one machine.

Today it covers the stages that exist: fetch the data, train (or reuse) a SASRec teacher, serve it
as the black box on a free local port, extract a probe set from it with a hard budget of paid
queries (data-free, autoregressive, multi-scale views), and ask it for the top-10 of every test
user, as an attacker would see it. The report compares the black box's answers with the
held-out items (overall and per head/tail group) and checks that the API's answers are the
model's own. Distillation and the service join here as they are built.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import typer

from extractor.config import ExtractConfig
from extractor.run import extract
from seqrec.artifacts import Artifact, ArtifactError, load_artifact
from seqrec.data.dataset import SequenceDataset, leave_one_out
from seqrec.data.loading import load_dataset
from seqrec.evaluate import GROUPS, group_metrics
from seqrec.inference import top_k
from seqrec.metrics import agreement_at_k
from seqrec.models import ModelConfig
from seqrec.serving.catalogue import Catalogue
from seqrec.supervised import train_supervised
from seqrec.train import TrainConfig
from teacher_mock.app import create_app
from teacher_mock.server import running
from teacher_mock.settings import TeacherSettings

DEMO_K = 10
BATCH = 256


@dataclass
class DemoConfig:
    workdir: Path = Path("runs/demo")
    dataset: str = "ml-100k"
    arch: str = "sasrec"
    seed: int = 0
    retrain: bool = False
    port: int = 18765  # fixed, so a rerun asks the same endpoint and its cache answers for free
    budget: int = 5000  # paid black-box answers the extraction may use, across reruns
    n_sequences: int = 300  # data-free sequences grown from random start items
    max_epochs: int | None = None  # None: the trainer's default (early stopping decides)


def say(message: str) -> None:
    typer.secho(message, fg=typer.colors.CYAN, bold=True)


def run_demo(config: DemoConfig) -> dict[str, Any]:
    start = time.perf_counter()
    say(f"[1/5] dataset {config.dataset}")
    dataset = load_dataset(config.dataset)
    split = leave_one_out(dataset)
    typer.echo(
        f"      {dataset.n_users} users, {dataset.n_items} items, {dataset.n_interactions} "
        f"interactions; sha256 {dataset.sha256}; from {dataset.origin}"
    )

    teacher_dir = config.workdir / f"teacher-{config.arch}-seed{config.seed}"
    say(f"[2/5] teacher {config.arch} -> {teacher_dir}")
    artifact = None if config.retrain else reusable_teacher(teacher_dir, dataset)
    if artifact is None:
        train_config = TrainConfig(seed=config.seed)
        if config.max_epochs:
            train_config.max_epochs = config.max_epochs
        train_supervised(dataset, ModelConfig(arch=config.arch), train_config, teacher_dir)
        artifact = load_artifact(teacher_dir)
    else:
        typer.echo("      reusing the teacher trained on this dataset; --retrain to train anew")

    say(f"[3/5] serving the teacher as a black box (top-k only, API key) on port {config.port}")
    key = secrets.token_urlsafe(24)
    settings = TeacherSettings(model_dir=teacher_dir, api_keys=[key])
    histories = split.test_input
    raw = [dataset.item_ids[histories[u] - 1].tolist() for u in range(histories.n_users)]
    with running(create_app(settings, artifact), port=config.port) as url:
        typer.echo(f"      {url}/v1/recommend  (X-Model-Version {artifact.version[:12]})")
        say(f"[4/5] extracting a probe set, data-free, within a budget of {config.budget} answers")
        plan = extract_config(config, url, key, artifact.model.n_items)
        extraction = asyncio.run(extract(plan, progress=True))
        typer.echo(
            f"      paid {extraction.paid}, cached {extraction.cached}, "
            f"{extraction.queries_written} queries written, budget left {extraction.budget_left}"
        )
        answers = ask_black_box(url, key, raw, DEMO_K)

    say("[5/5] report")
    # Back to dense ids; a short answer (few unseen items left) is padded with 0 (no item).
    catalogue = Catalogue(dataset.item_ids.tolist())
    answered = np.zeros((len(answers), DEMO_K), dtype=np.int64)
    for row, items in enumerate(answers):
        answered[row, : len(items)] = catalogue.to_dense(items, "answer")
    ranks = first_hit_rank(answered, split.test_target)
    local = top_k(artifact.model, histories, DEMO_K)
    report = {
        "dataset": {"name": dataset.name, "sha256": dataset.sha256, "origin": dataset.origin},
        "teacher": {"dir": str(teacher_dir), "arch": config.arch, "seed": config.seed},
        "model_version": artifact.version,
        "extraction": extraction.to_dict() | {"probe_set": str(config.workdir / "probes")},
        "black_box": {
            "test_histories_asked": len(raw),
            f"agreement_with_local_model_at_{DEMO_K}": float(
                agreement_at_k(answered, local, DEMO_K).mean()
            ),
        },
        "metrics_from_api_answers": group_metrics(ranks, split.test_target, split, (1, 5, 10)),
        "seconds": round(time.perf_counter() - start, 1),
    }
    write_reports(config.workdir, report)
    return report


def extract_config(config: DemoConfig, url: str, key: str, n_items: int) -> ExtractConfig:
    """Data-free extraction into the demo's probe set; a rerun resumes it and pays nothing."""
    return ExtractConfig(
        k=min(ExtractConfig.k, n_items),
        teacher_url=url,
        api_key=key,
        budget=config.budget,
        out=config.workdir / "probes",
        source="autoregressive",
        n_sequences=config.n_sequences,
        seed=config.seed,
    )


def reusable_teacher(directory: Path, dataset: SequenceDataset) -> Artifact | None:
    """The teacher already trained on this very dataset (same name and sha256), if any."""
    try:
        artifact = load_artifact(directory)
    except ArtifactError:
        return None
    trained_on = artifact.info.dataset
    same = trained_on.get("name") == dataset.name and trained_on.get("sha256") == dataset.sha256
    return artifact if same else None


def ask_black_box(url: str, key: str, histories: list[list[str]], k: int) -> list[list[str]]:
    """Top-k of every history through the batch endpoint."""
    headers = {"Authorization": f"Bearer {key}"}
    answers: list[list[str]] = []
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        for first in range(0, len(histories), BATCH):
            body = {"histories": histories[first : first + BATCH], "k": k}
            response = client.post("/v1/recommend/batch", json=body)
            response.raise_for_status()
            answers.extend(result["items"] for result in response.json()["results"])
    return answers


def first_hit_rank(answered: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based rank of the target in each top-k list; k (a miss) when absent."""
    hits = answered == targets[:, None]
    return np.where(hits.any(axis=1), hits.argmax(axis=1), answered.shape[1])


def write_reports(workdir: Path, report: dict[str, Any]) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "report.json").write_text(json.dumps(report, indent=2))
    metrics = report["metrics_from_api_answers"]
    rows = [(group, metrics[group]) for group in GROUPS]
    lines = [
        "# recmimic demo report",
        "",
        f"Dataset {report['dataset']['name']} (sha256 `{report['dataset']['sha256']}`), "
        f"teacher {report['teacher']['arch']} seed {report['teacher']['seed']}, "
        f"model version `{report['model_version'][:12]}`.",
        "",
        "Accuracy of the black box's top-10 answers on the held-out test item:",
        "",
        "| group | users | HR@10 | NDCG@10 |",
        "|---|---|---|---|",
        *(f"| {g} | {m['users']} | {m['HR@10']:.4f} | {m['NDCG@10']:.4f} |" for g, m in rows),
        "",
        f"Extraction (data-free, scales 1, 1/2, 1/4): {report['extraction']['paid']} answers paid "
        f"this run, {report['extraction']['cached']} from the cache, "
        f"{report['extraction']['queries_written']} queries written to "
        f"`{report['extraction']['probe_set']}`.",
        "",
        "Agreement of the API's answers with the local model: "
        f"{report['black_box'][f'agreement_with_local_model_at_{DEMO_K}']:.3f}.",
    ]
    (workdir / "report.md").write_text("\n".join(lines) + "\n")
    typer.echo("\n".join(lines[6:]))
    typer.echo(f"\nreport: {workdir / 'report.md'}  {workdir / 'report.json'}")
