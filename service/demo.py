"""`recmimic demo`: the whole pipeline on MovieLens-100k, on one machine, through the service.

It fetches the data, trains (or reuses) a SASRec teacher and serves it as the black box on a
fixed local port, then does what a user of the service does: a key made by the service's key
code, one extraction job posted to the service's own API (a real HTTP server over the SQLite
store under `{workdir}/service/`), run by the service's own `Worker` in this process (probing,
training, evaluating), its status polled while it runs. It ends with the report the worker's
evaluating stage wrote.

A rerun pays nothing: the job is posted with an idempotency key derived from its request and the
teacher's model version, so the same settings get the same job back (done: nothing to run; cut
short: the worker resumes it from its folder, whose answer cache knows this port's answers). The
black box's own usage counter, read at the end, is the witness of what this run paid.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import typer

from distill.report import REPORT_MD, REPORT_PNG
from seqrec.artifacts import Artifact, ArtifactError, load_artifact
from seqrec.data.dataset import SequenceDataset
from seqrec.data.loading import load_dataset
from seqrec.models import ModelConfig
from seqrec.supervised import train_supervised
from seqrec.train import TrainConfig
from service.api.app import create_app as create_service_app
from service.api.schemas import JobRequest
from service.demo_config import DemoConfig
from service.keys import create_key
from service.pipeline import job_paths
from service.settings import ServiceSettings
from service.worker import Worker, open_store
from teacher_mock.app import create_app as create_teacher_app
from teacher_mock.server import running
from teacher_mock.settings import TeacherSettings

FINISHED = ("done", "failed", "cancelled")
TENANT = "demo"
TEACHER_KEY_FILE = "black-box.key"
WORKER_STOP_TIMEOUT_S = 30.0


def say(message: str) -> None:
    typer.secho(message, fg=typer.colors.CYAN, bold=True)


def run_demo(config: DemoConfig) -> dict[str, Any]:
    """Run the demo and return its summary (also written to `{workdir}/demo.json`)."""
    start = time.perf_counter()
    say(f"[1/5] dataset {config.dataset}")
    dataset = load_dataset(config.dataset)
    typer.echo(
        f"      {dataset.n_users} users, {dataset.n_items} items, {dataset.n_interactions} "
        f"interactions; sha256 {dataset.sha256}; from {dataset.origin}"
    )

    teacher_dir = config.workdir / f"teacher-{config.arch}-seed{config.seed}"
    say(f"[2/5] teacher {config.arch} -> {teacher_dir}")
    artifact = None if config.retrain else reusable_teacher(teacher_dir, dataset)
    if artifact is None:
        train_config = TrainConfig.for_arch(config.arch, seed=config.seed)
        if config.max_epochs:
            train_config.max_epochs = config.max_epochs
        train_supervised(dataset, ModelConfig(arch=config.arch), train_config, teacher_dir)
        artifact = load_artifact(teacher_dir)
    else:
        typer.echo("      reusing the teacher trained on this dataset; --retrain to train anew")

    say(f"[3/5] serving the teacher as a black box (top-k only, API key) on port {config.port}")
    teacher_key = black_box_key(config.workdir)
    settings = TeacherSettings(model_dir=teacher_dir, api_keys=[teacher_key])
    with running(create_teacher_app(settings, artifact), port=config.port) as teacher_url:
        typer.echo(f"      {teacher_url}/v1/recommend  (X-Model-Version {artifact.version[:12]})")
        home = config.workdir / "service"
        say(f"[4/5] extraction job through the service (store, key, API, worker under {home})")
        job = run_job(config, home, teacher_url, teacher_key, artifact)
        paid_now = black_box_usage(teacher_url, teacher_key)

    say("[5/5] report")
    summary = {
        "dataset": {"name": dataset.name, "sha256": dataset.sha256, "origin": dataset.origin},
        "teacher": {"dir": str(teacher_dir), "arch": config.arch, "version": artifact.version},
        "job": job,
        "black_box_answers_paid_this_run": paid_now,
        "seconds": round(time.perf_counter() - start, 1),
    }
    config.workdir.mkdir(parents=True, exist_ok=True)
    (config.workdir / "demo.json").write_text(json.dumps(summary, indent=2))
    show_report(job, paid_now)
    if job["status"] != "done":
        raise typer.Exit(1)
    return summary


def reusable_teacher(directory: Path, dataset: SequenceDataset) -> Artifact | None:
    """The teacher already trained on this very dataset (same name and sha256), if any."""
    try:
        artifact = load_artifact(directory)
    except ArtifactError:
        return None
    trained_on = artifact.info.dataset
    same = trained_on.get("name") == dataset.name and trained_on.get("sha256") == dataset.sha256
    return artifact if same else None


def black_box_key(workdir: Path) -> str:
    """The black box's API key, kept across runs: a job resumed after a crash still holds it."""
    path = workdir / TEACHER_KEY_FILE
    if not path.is_file():
        workdir.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(24))
    return path.read_text().strip()


def job_request(
    config: DemoConfig, teacher_url: str, teacher_key: str, n_items: int
) -> dict[str, Any]:
    """The body of `POST /v1/jobs`: evaluation on the demo's dataset, seeded from it if asked."""
    return {
        "k": min(JobRequest.model_fields["k"].default, n_items),  # tiny catalogues: all items
        "teacher_url": teacher_url,
        "teacher_api_key": teacher_key,
        "budget": config.budget,
        "source": config.source,
        "dataset": config.dataset,
        "n_sequences": config.n_sequences,
        "seed": config.seed,
        "epochs": config.epochs,
    }


def run_job(
    config: DemoConfig, home: Path, teacher_url: str, teacher_key: str, teacher: Artifact
) -> dict[str, Any]:
    """Post the job to the service's API, run a worker until it ends; the job as last read."""
    # The embedded defaults, whatever RECMIMIC_* variables or recmimic.env say. The teacher is
    # served on loopback, which jobs may not reach by default: allow its address, and only it.
    settings = ServiceSettings(home=home, teacher_allow=[teacher_host(teacher_url)]).model_copy(
        update={"database_url": None, "redis_url": None, "encryption_key": None}
    )
    store = open_store(settings)
    key = create_key(store.sessions, TENANT)
    body = job_request(config, teacher_url, teacher_key, teacher.model.n_items)
    public = {name: value for name, value in body.items() if name != "teacher_api_key"}
    replay = hashlib.sha256(json.dumps([public, teacher.version], sort_keys=True).encode())
    worker = Worker(settings, store)
    thread = threading.Thread(target=worker.run, name="worker", daemon=True)
    headers = {"Authorization": f"Bearer {key}"}
    with (
        running(create_service_app(settings, store)) as url,
        httpx.Client(base_url=url, headers=headers, timeout=30) as api,
    ):
        job, created = post_job(api, body, f"demo-{replay.hexdigest()[:32]}")
        origin = "queued" if created else "the same settings' job, found again"
        typer.echo(
            f"      job {job['id']} ({origin}): {config.source} queries, budget {config.budget} "
            f"answers for probing, student epochs <= {config.epochs}; POST {url}/v1/jobs"
        )
        thread.start()
        try:
            job = follow(api, job, config)
        finally:
            worker.shutdown.set()  # a stage still running stops; a rerun resumes the job
            thread.join(timeout=WORKER_STOP_TIMEOUT_S)
        if job["status"] == "done":
            job["report"] = api.get(f"/v1/students/{job['student_id']}/report").json()
    folder = job_paths(settings, job["id"]).report
    job["report_files"] = {"markdown": str(folder / REPORT_MD), "png": str(folder / REPORT_PNG)}
    return job


def teacher_host(teacher_url: str) -> str:
    """The host of the demo's own teacher URL (its loopback address)."""
    host = urlsplit(teacher_url).hostname
    if host is None:
        raise ValueError(f"no host in the teacher URL {teacher_url!r}")
    return host


def post_job(api: httpx.Client, body: dict[str, Any], replay_key: str) -> tuple[dict, bool]:
    """The job for these settings and whether it is new; one that failed or was cancelled is
    followed by a fresh one (keyed after it), so a rerun retries instead of replaying a failure.
    """
    key = replay_key
    while True:
        response = api.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
        if response.is_error:
            raise ValueError(f"the service refused the job: {response.json()['detail']}")
        job, created = response.json(), response.status_code == 201
        if created or job["status"] not in ("failed", "cancelled"):
            return job, created
        key = f"{replay_key}-after-{job['id']}"


def follow(api: httpx.Client, job: dict[str, Any], config: DemoConfig) -> dict[str, Any]:
    """Poll the job every `poll_s` and print a line whenever it moved; the finished job.

    A stage that began and ended between two reads still gets its line, so every stage the
    job ran is shown, however short.
    """
    started = time.monotonic()
    last, shown_stage = None, None
    while True:
        for line in progress_lines(job, config.epochs, shown_stage):
            if line != last:
                typer.echo(f"      {time.monotonic() - started:5.0f}s  {line}")
                last = line
        shown_stage = job["status"]
        if job["status"] in FINISHED:
            return job
        time.sleep(config.poll_s)
        response = api.get(f"/v1/jobs/{job['id']}")
        response.raise_for_status()
        job = response.json()


STAGE_ORDER = ("queued", "probing", "training", "evaluating", "done")


def progress_lines(job: dict[str, Any], epochs: int, shown_stage: str | None) -> list[str]:
    """The job's status line, after a `done` line for each stage run since `shown_stage`."""
    skipped: list[str] = []
    if shown_stage in STAGE_ORDER and job["status"] in STAGE_ORDER:
        between = STAGE_ORDER[STAGE_ORDER.index(shown_stage) + 1 : STAGE_ORDER.index(job["status"])]
        evaluates = bool(job["request"].get("dataset"))
        skipped = [stage for stage in between if stage != "evaluating" or evaluates]
    lines = [f"{stage + ' done':<22} {paid_line(job)}" for stage in skipped]
    return [*lines, progress_line(job, epochs)]


def progress_line(job: dict[str, Any], epochs: int) -> str:
    """Stage (training: the epoch running now, 1 to `epochs`), paid answers, cache hits."""
    stage = job["status"]
    if stage == "training":
        finished = round(job["progress"] * epochs)  # the worker reports epochs finished
        stage += f" epoch {min(finished + 1, epochs)}/{epochs}"
    line = f"{stage:<22} {paid_line(job)}"
    return f"{line}; {job['error']}" if job["error"] else line


def paid_line(job: dict[str, Any]) -> str:
    """Paid answers split by what they paid for: probing (within the budget) and evaluation
    (its own budget, one per test user), never one sum that looks like an overspent budget."""
    metrics = job.get("metrics") or {}
    probing = metrics.get("probing", {}).get("spent_total", job["paid"])
    line = f"paid {probing} of {job['request']['budget']} for probing"
    if "evaluation" in metrics:
        line += f" + {metrics['evaluation']['paid']} for evaluation"
    return f"{line}, cached {job['cached']}"


def black_box_usage(url: str, key: str) -> int:
    """Answers the black box served this key since it started, i.e. during this run."""
    response = httpx.get(f"{url}/v1/usage", headers={"Authorization": f"Bearer {key}"})
    response.raise_for_status()
    return int(response.json()["used"])


def show_report(job: dict[str, Any], paid_now: int) -> None:
    """Teacher vs student accuracy (overall, tail users), agreement, and the report's files."""
    if job["status"] != "done":
        typer.echo(f"      job {job['id']} ended {job['status']}: {job.get('error') or ''}")
        return
    report, training = job["report"], job["metrics"]["training"]
    source = job["request"]["source"]
    who = "seeded from the training split" if source == "seeded" else f"data-free ({source})"
    typer.echo(
        f"      student: {training['queries']} queries ({who}), best epoch "
        f"{training['best_epoch']} of {training['epochs_run']}"
    )
    evaluation = job["metrics"].get("evaluation", {}).get("paid", 0)
    typer.echo(
        f"      job paid {job['metrics']['probing']['spent_total']} answers for probing "
        f"(budget {job['request']['budget']}) + {evaluation} for evaluation (one per test "
        f"user); the black box counted {paid_now} of them this run"
    )
    typer.echo("      group       | teacher NDCG@10 HR@10 | student NDCG@10 HR@10 | Agr@10")
    for group in ("overall", "tail_users"):
        teacher, student = report["teacher"][group], report["student"][group]
        typer.echo(
            f"      {group:<11} |   {teacher['NDCG@10']:.4f}  {teacher['HR@10']:.4f}"
            f"       |   {student['NDCG@10']:.4f}  {student['HR@10']:.4f}       |"
            f"  {report['agreement'][group]['agr10']:.3f}"
        )
    files = job["report_files"]
    typer.echo(f"\nreport: {files['markdown']}\n        {files['png']}")
