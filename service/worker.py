"""The worker: claims jobs from the store and runs them stage by stage (DESIGN.md section 9).

A job goes probing -> training -> evaluating (only when it names a dataset) -> done. Each stage
resumes from the job's folder (`service.pipeline`), and a job claimed again after its worker
died starts at the stage its row says, so a crash costs at most the answers in flight and one
training epoch. `progress` is the current stage's fraction: probing reports the share of its
budget paid (and `paid`) every second, training the share of its epoch cap after every epoch.

While a job runs, a `Lease` thread renews its lease every `heartbeat_s` and checks every
`cancel_check_s` whether the job was cancelled. When it was, when the lease is lost (another
worker took the job over: stop without writing anything), or when the worker shuts down (the
job is handed back for another worker to resume at once), the running stage stops within
seconds: the extraction task is cancelled (it flushes the queries it completed) and the
trainer's `should_stop` turns true.

Failures the job's owner can act on (teacher unreachable, unknown dataset, no answered probes)
fail the job with one line; anything else fails it with the exception's type, the traceback
going to the worker's log only. Every connection to the teacher (probing and evaluating) is
made under the service's destination policy (`teacher_allow`, `extractor.destinations`),
checked against what the host resolves to at that moment: a refused one fails the job. The
teacher API key is stored encrypted and decrypted when the claimed job starts running; it is
never logged nor put in a message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from adaptive.run import RoundHooks, RoundRecord, steal
from distill.fidelity import evaluate_student
from distill.run import SUMMARY_FILENAME as DISTILL_SUMMARY
from distill.run import distill
from distill.train import Cancelled
from extractor import destinations
from extractor.budget import read_spent
from extractor.client import BUDGET_REFUSED
from extractor.config import ExtractConfig
from extractor.run import LEDGER_FILENAME, extract
from extractor.run import SUMMARY_FILENAME as EXTRACT_SUMMARY
from extractor.tasks import run_event_loop
from service.db.models import EVALUATING, PROBING, TRAINING, Job
from service.logs import configure_logging
from service.pipeline import (
    distill_config,
    evaluate_config,
    extract_config,
    job_paths,
    steal_config,
)
from service.settings import ServiceSettings
from service.store import JobStore, open_store
from service.user_errors import USER_ERRORS

log = logging.getLogger("service.worker")
T = TypeVar("T")
STAGES = (PROBING, TRAINING, EVALUATING)
MAX_ERROR_LENGTH = 500
STOP_CHECK_S = 0.2  # how often the extraction's supervisor looks at the stop flag
PROGRESS_S = 1.0  # how often probing's paid answers are recorded while it runs


class Stopped(Exception):
    """The job must stop now: cancelled, lease lost, or the worker is shutting down."""


class JobFailed(Exception):
    """The job cannot go on for a reason its owner can act on."""


def new_worker_id() -> str:
    """hostname:pid:random, unique even when a process restarts with the same pid."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class Lease:
    """Keeps a running job's lease alive and says when the job must stop (`reason`)."""

    def __init__(
        self,
        store: JobStore,
        job_id: str,
        worker_id: str,
        settings: ServiceSettings,
        shutdown: threading.Event,
    ) -> None:
        self.store, self.job_id, self.worker_id = store, job_id, worker_id
        self.settings = settings
        self.shutdown = shutdown
        self.reason: str | None = None  # "cancelled" or "lost"
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{job_id}", daemon=True)

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join()

    def should_stop(self) -> bool:
        return self.reason is not None or self.shutdown.is_set()

    def check(self) -> None:
        """Raise `Stopped` when the job must stop; called between stages."""
        if self.should_stop():
            raise Stopped(self.reason or "shutdown")

    def lost(self) -> None:
        self.reason = self.reason or "lost"

    def _run(self) -> None:
        settings = self.settings
        last_beat = time.monotonic()  # the claim itself
        wait_s = min(settings.cancel_check_s, settings.heartbeat_s)
        while self.reason is None and not self._done.wait(wait_s):
            try:
                if time.monotonic() - last_beat >= settings.heartbeat_s:
                    if not self.store.heartbeat(self.job_id, self.worker_id, settings.lease_s):
                        self.lost()
                        break
                    last_beat = time.monotonic()
                if self.store.cancel_requested(self.job_id):
                    self.reason = "cancelled"
            except SQLAlchemyError as exc:
                log.warning("heartbeat failed", extra={"job": self.job_id, "why": repr(exc)})
                if time.monotonic() - last_beat >= settings.lease_s:
                    self.lost()


def run_until_stopped(
    work: Coroutine[Any, Any, T],
    should_stop: Callable[[], bool],
    on_tick: Callable[[], None] | None = None,
) -> T:
    """Run `work` in a fresh event loop; cancel it and raise `Stopped` once `should_stop()`.

    `on_tick`, when given, is called about every `PROGRESS_S` while the work runs.
    """

    async def supervise() -> T:
        task = asyncio.ensure_future(work)
        last_tick = time.monotonic()
        while not task.done():
            await asyncio.wait({task}, timeout=STOP_CHECK_S)
            if on_tick is not None and time.monotonic() - last_tick >= PROGRESS_S:
                on_tick()
                last_tick = time.monotonic()
            if should_stop() and not task.done():
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    raise Stopped("stopped during probing") from None
        return task.result()

    return run_event_loop(supervise())


class JobRun:
    """One claim of one job: its stages from where the job stands, then its end state."""

    def __init__(
        self,
        job: Job,
        key: str,
        store: JobStore,
        worker_id: str,
        settings: ServiceSettings,
        lease: Lease,
    ) -> None:
        self.job, self.store, self.worker_id = job, store, worker_id
        self.settings, self.lease = settings, lease
        self.request: dict[str, Any] = job.request
        self.key = key  # the teacher API key, in clear
        self.paths = job_paths(settings, job.id)

    def run(self) -> None:
        """Run the remaining stages and record the student; raises `Stopped` or an error."""
        first = STAGES.index(self.job.status)
        if first <= STAGES.index(PROBING):
            self._probe()
            self.lease.check()
            self._update(status=TRAINING, progress=0.0)
        training = self._train()
        self.lease.check()
        probing = json.loads((self.paths.probes / EXTRACT_SUMMARY).read_text())
        metrics: dict[str, Any] = {
            "probing": {key: probing[key] for key in ("budget", "spent_total", "model_tag")},
            "training": {
                key: training[key]
                for key in ("queries", "examples", "n_items", "heldout", "best_epoch", "epochs_run")
            },
        }
        report_path = None
        if self.request.get("dataset"):
            self._update(status=EVALUATING, progress=0.0)
            report, files = evaluate_student(
                evaluate_config(self.request, self.key, self.settings, self.paths)
            )
            self.lease.check()
            evaluation_paid = report["run"]["paid"]["evaluation"]  # its own budget, all runs
            metrics["evaluation"] = {
                "paid": evaluation_paid,
                "budget": report["run"]["evaluation_budget"],
                "agreement": report["agreement"]["overall"],
                "student": report["student"]["overall"],
                "teacher": report["teacher"]["overall"],
            }
            self._update(paid=probing["spent_total"] + evaluation_paid)
            report_path = str(files["json"])
        student = self.store.finish_done(
            self.job.id,
            self.worker_id,
            metrics=metrics,
            artifact_path=str(self.paths.student),
            metrics_path=str(self.paths.student / DISTILL_SUMMARY),
            report_path=report_path,
        )
        if student is None:
            raise Stopped("lost")
        log.info("job done", extra={"job": self.job.id, "student": student.id})

    def _spend_reporter(self, config: ExtractConfig) -> Callable[[], None]:
        ledger = config.out / LEDGER_FILENAME

        def report_spend() -> None:
            """Paid answers so far, so a job's status shows probing move while it runs."""
            spent = read_spent(ledger)
            if spent is not None:
                self._update(progress=min(1.0, spent / config.budget), paid=spent)

        return report_spend

    def _probe(self) -> None:
        if self.request.get("strategy") == "adaptive":  # absent from jobs made before it
            self._steal()
            return
        config = extract_config(self.request, self.key, self.settings, self.paths)
        summary = run_until_stopped(
            extract(config, progress=False), self.lease.should_stop, self._spend_reporter(config)
        )
        if summary.stopped not in (None, BUDGET_REFUSED):
            raise JobFailed(f"the teacher stopped answering: {summary.stopped}")
        self._update(progress=1.0, paid=summary.spent_total, cached=summary.cached)
        log.info(
            "probing done",
            extra={"job": self.job.id, "paid": summary.paid, "cached": summary.cached},
        )

    def _steal(self) -> None:
        """An adaptive job's rounds, probing and training alike, and its final student; the
        rounds are recorded on the job as they end. `_train` then reads the student back."""
        config = steal_config(self.request, self.key, self.settings, self.paths)
        ended: list[dict[str, Any]] = []  # a resumed run hears of its finished rounds again

        def on_round(record: RoundRecord) -> None:
            ended.append(record.to_dict())
            self._update(rounds=ended, paid=record.paid_total)

        report_spend = self._spend_reporter(config.extract)
        hooks = RoundHooks(
            run_extraction=lambda work: run_until_stopped(
                work, self.lease.should_stop, report_spend
            ),
            should_stop=self.lease.should_stop,
            on_round=on_round,
        )
        try:
            steal(config, hooks=hooks)
        except Cancelled:
            raise Stopped("stopped during training") from None
        self._update(progress=1.0)
        log.info("adaptive rounds done", extra={"job": self.job.id, "rounds": len(ended)})

    def _train(self) -> dict[str, Any]:
        """The distillation's summary; read back when a previous claim finished training."""
        done = self.paths.student / DISTILL_SUMMARY
        if done.is_file():
            return json.loads(done.read_text())
        config = distill_config(self.request, self.settings, self.paths)

        def on_epoch(epoch: int, record: dict[str, float]) -> None:
            self._update(progress=min(1.0, epoch / config.max_epochs))

        try:
            summary = distill(config, should_stop=self.lease.should_stop, on_epoch=on_epoch)
        except Cancelled:
            raise Stopped("stopped during training") from None
        return summary.to_dict()

    def _update(self, **values: Any) -> None:
        """Record progress; a refused write means another worker owns the job now."""
        if not self.store.update_progress(self.job.id, self.worker_id, **values):
            self.lease.lost()


class Worker:
    """Claims jobs one at a time and runs them until `shutdown` is set."""

    def __init__(
        self, settings: ServiceSettings, store: JobStore, worker_id: str | None = None
    ) -> None:
        self.settings = settings
        self.store = store
        self.worker_id = worker_id or new_worker_id()
        self.shutdown = threading.Event()

    def run(self, once: bool = False) -> None:
        """Claim and run jobs; with `once`, run at most one (none queued: return at once)."""
        log.info("worker started", extra={"worker": self.worker_id})
        while not self.shutdown.is_set():
            job = self._claim()
            if job is not None:
                self.run_job(job)
            if once:
                break
            if job is None:
                self.shutdown.wait(self.settings.poll_s)
        log.info("worker stopped", extra={"worker": self.worker_id})

    def _claim(self) -> Job | None:
        try:
            return self.store.claim_job(self.worker_id, self.settings.lease_s)
        except SQLAlchemyError as exc:
            log.warning("cannot claim a job", extra={"why": repr(exc)})
            return None

    def run_job(self, job: Job) -> None:
        """Run a claimed job to its end, or until it must stop."""
        log.info(
            "job claimed",
            extra={"job": job.id, "status": job.status, "attempt": job.attempts},
        )
        key = ""
        policy = self.settings.teacher_destinations()
        with (
            Lease(self.store, job.id, self.worker_id, self.settings, self.shutdown) as lease,
            destinations.applied(policy),  # every client the stages create follows it
        ):
            try:
                key = self._teacher_key(job)
                JobRun(job, key, self.store, self.worker_id, self.settings, lease).run()
            except Stopped:
                self._stopped(job, lease)
            except (JobFailed, *USER_ERRORS) as exc:
                self._fail(job, _one_line(exc, key))
            except Exception as exc:
                log.exception("job crashed", extra={"job": job.id})
                self._fail(job, f"internal error ({type(exc).__name__}); see the worker's log")

    def _teacher_key(self, job: Job) -> str:
        """The job's teacher API key in clear, decrypted now that the job runs (a key the
        server's keys cannot decrypt fails the job with a message saying so)."""
        if job.teacher_api_key_encrypted is None:
            raise JobFailed("the job has no teacher API key")
        return self.store.cipher.decrypt(job.teacher_api_key_encrypted)

    def _stopped(self, job: Job, lease: Lease) -> None:
        if lease.reason == "cancelled":
            self.store.finish_cancelled(job.id, self.worker_id)
            log.info("job cancelled", extra={"job": job.id})
        elif lease.reason == "lost":
            log.warning("job lease lost; its new owner goes on", extra={"job": job.id})
        else:
            self.store.release_job(job.id, self.worker_id)
            log.info("job handed back at shutdown", extra={"job": job.id})

    def _fail(self, job: Job, error: str) -> None:
        self.store.finish_failed(job.id, self.worker_id, error)
        log.warning("job failed", extra={"job": job.id, "error": error})


def _one_line(exc: BaseException, key: str) -> str:
    """The exception's first line, without the teacher key, at most MAX_ERROR_LENGTH long."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    if key:
        text = text.replace(key, "***")
    return text[:MAX_ERROR_LENGTH]


def run_worker(settings: ServiceSettings, once: bool = False, verbose: bool = False) -> None:
    """`recmimic worker`: work until SIGINT/SIGTERM, which stops the running job's stage.

    Jobs run in a thread of their own so that the main thread keeps the signal handlers (the
    extractor installs its own only on the main thread).
    """
    configure_logging(settings.log_level, verbose)
    worker = Worker(settings, open_store(settings))
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: worker.shutdown.set())
    thread = threading.Thread(target=worker.run, args=(once,), name="worker")
    thread.start()
    while thread.is_alive():
        thread.join(timeout=0.5)
