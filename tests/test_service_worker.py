"""The worker as a real process: crash safety (kill -9 mid-probing, mid-training), cancel, failure.

Jobs are put straight into the store (the API is tested on its own); the witness that nothing
was paid twice is the teacher's own usage counter against the job's paid count and the probe
folder's budget ledger: every answered history is in the cache exactly once.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from backends import REDIS_URL, fresh_database, needs_pg, needs_redis
from cryptography.fernet import Fernet
from service_stack import (
    DATASET,
    TEACHER_KEYS,
    Service,
    cached_answers,
    job_request,
    ledger,
    teacher,
    usage,
    wait_for,
)

from distill.fidelity import TEACHER_ANSWERS
from distill.run import SUMMARY_FILENAME as DISTILL_SUMMARY
from service.db.models import (
    CANCELLED,
    DONE,
    EVALUATING,
    FAILED,
    PROBING,
    TERMINAL,
    TRAINING,
    Job,
)
from service.pipeline import job_paths

SLOW_MS = 250.0  # per teacher request: probing lasts a few seconds, time enough to kill it


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("teacher") / "model"


@pytest.fixture(scope="module")
def slow_teacher(teacher_dir: Path) -> Iterator[str]:
    with teacher(teacher_dir, latency_ms=SLOW_MS) as url:
        yield url


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    service = Service(tmp_path / "home")
    yield service
    service.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgresql+redis", marks=[needs_pg, needs_redis])])
def any_service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Service]:
    """A service on SQLite with the embedded cache, or on a PostgreSQL database of its own
    with Redis: the kill tests run on both."""
    if request.param == "sqlite":
        service = Service(tmp_path / "home")
        yield service
        service.stop()
        return
    with fresh_database() as url:
        key = Fernet.generate_key().decode()  # required with PostgreSQL
        service = Service(
            tmp_path / "home", database_url=url, redis_url=REDIS_URL, encryption_key=key
        )
        yield service
        service.stop()


def key_for(service: Service, i: int) -> str:
    """Teacher key `i` of this backend: each backend's jobs are billed to keys of their own."""
    return TEACHER_KEYS[i + (0 if service.settings.redis_url is None else 6)]


def submit(service: Service, tenant: str, request: dict) -> str:
    stored = {k: v for k, v in request.items() if k != "teacher_api_key"}
    full = {"source": "autoregressive", "scales": [1.0, 0.5, 0.25], "dataset": None, **stored}
    defaults = {"backbone": "sasrec", "objective": "bahsd", "experts": 0, "seed": 0}
    job, _ = service.store.create_job(tenant, {**defaults, **full}, request["teacher_api_key"])
    return job.id


def assert_paid_once(service: Service, job_id: str, teacher_url: str, key: str) -> None:
    """The teacher billed exactly what the job reports, and no answered history twice."""
    job = service.job(job_id)
    spent, answered = ledger(job_paths(service.settings, job_id).probes)
    assert usage(teacher_url, key) == job.paid == spent <= job.request["budget"]
    if service.settings.redis_url is None:  # Redis is shared: only the embedded cache counts
        assert answered == cached_answers(job_paths(service.settings, job_id).probes)


def probing_under_two_workers(
    service: Service, teacher_url: str, key: str
) -> tuple[str, subprocess.Popen]:
    """A job probing under one of two workers, just after the teacher billed an answer; the
    job's id and its owner's process. That request then sleeps in the teacher's latency, so a
    kill lands with it billed on both sides and its answer lost, never half-sent."""
    job_id = submit(service, "alice", job_request(teacher_url, key))
    service.start("worker")
    service.start("worker")
    service.wait_status(job_id, (PROBING,))
    wait_for(lambda: usage(teacher_url, key) > 0, 60, "a paid answer", every_s=0.02)
    return job_id, service.owner(job_id)


def test_a_worker_killed_mid_probing_is_replaced_without_paying_twice(
    any_service: Service, slow_teacher: str
) -> None:
    key = key_for(any_service, 0)
    job_id, first = probing_under_two_workers(any_service, slow_teacher, key)
    first.kill()
    first.wait()
    assert any_service.job(job_id).status == PROBING
    done = any_service.wait_status(job_id, TERMINAL, timeout_s=60)
    assert done.status == DONE, (done.error, any_service.logs())
    assert done.attempts == 2
    assert_paid_once(any_service, job_id, slow_teacher, key)


def test_a_worker_stopped_by_sigterm_hands_its_job_back_at_once(
    service: Service, slow_teacher: str
) -> None:
    key = TEACHER_KEYS[3]
    job_id, first = probing_under_two_workers(service, slow_teacher, key)
    owner_id = service.job(job_id).lease_owner
    first.terminate()
    assert first.wait(timeout=30) == 0
    # Released, not left to expire: nobody holds it, or the other worker already does.
    assert service.job(job_id).lease_owner != owner_id
    done = service.wait_status(job_id, TERMINAL, timeout_s=60)
    assert done.status == DONE, (done.error, service.logs())
    assert_paid_once(service, job_id, slow_teacher, key)


def test_probing_reports_its_paid_answers_while_it_runs(
    service: Service, slow_teacher: str
) -> None:
    """A job's status showed probing at 0% and paid 0 until probing ended, so a client polling
    every few seconds could miss the stage altogether."""
    key = TEACHER_KEYS[4]
    job_id = submit(service, "alice", job_request(slow_teacher, key))
    service.start("worker")

    def moving() -> Job | None:
        job = service.job(job_id)
        return job if job.status == PROBING and job.paid > 0 and job.progress < 1 else None

    job = wait_for(moving, 60, "probing's paid answers while it runs", every_s=0.05)
    assert job.progress == job.paid / job.request["budget"]


def test_a_worker_killed_mid_training_resumes_from_the_checkpoint(
    any_service: Service, slow_teacher: str
) -> None:
    key = key_for(any_service, 1)
    job_id = submit(any_service, "alice", job_request(slow_teacher, key, epochs=4))
    any_service.start("worker")
    any_service.start("worker")

    def training_started() -> bool:
        job = any_service.job(job_id)
        return job.status == TRAINING and job.progress > 0

    wait_for(training_started, 90, "the first epoch", every_s=0.05)
    paid = any_service.job(job_id).paid
    first = any_service.owner(job_id)
    first.kill()
    first.wait()
    done = any_service.wait_status(job_id, TERMINAL, timeout_s=90)
    assert done.status == DONE, (done.error, any_service.logs())
    assert done.attempts == 2 and done.paid == paid
    student = job_paths(any_service.settings, job_id).student
    summary = json.loads((student / DISTILL_SUMMARY).read_text())
    assert summary["resumed_from_epoch"] >= 1
    assert_paid_once(any_service, job_id, slow_teacher, key)


def test_a_worker_killed_mid_evaluation_resumes_it_paying_only_what_was_lost(
    any_service: Service, slow_teacher: str
) -> None:
    """Evaluation is paid like probing, under a budget of its own: a worker killed while the
    teacher holds the evaluation's answers leaves them billed and lost; the next worker settles
    the evaluation's ledger with the teacher, asks those again and nothing else, and the job's
    paid count is the teacher's bill."""
    key = key_for(any_service, 5)
    users = 120  # the dataset's test users, one evaluation answer each
    request = job_request(slow_teacher, key, dataset=DATASET, evaluation_budget=2 * users)
    job_id = submit(any_service, "alice", request)
    any_service.start("worker")
    any_service.start("worker")
    any_service.wait_status(job_id, (EVALUATING,), timeout_s=90)
    probing = any_service.job(job_id).paid
    wait_for(lambda: usage(slow_teacher, key) > probing, 60, "a paid evaluation answer", 0.02)
    first = any_service.owner(job_id)
    first.kill()
    first.wait()
    done = any_service.wait_status(job_id, TERMINAL, timeout_s=90)
    assert done.status == DONE, (done.error, any_service.logs())
    assert done.attempts == 2
    evaluation = done.metrics["evaluation"]
    assert evaluation["budget"] == 2 * users and users <= evaluation["paid"] <= 2 * users
    billed = usage(slow_teacher, key)
    assert done.paid == billed == probing + evaluation["paid"]
    answers = job_paths(any_service.settings, job_id).report / TEACHER_ANSWERS
    spent, answered = ledger(answers)
    assert spent == evaluation["paid"] and answered == users  # each test history answered once
    if any_service.settings.redis_url is None:
        assert cached_answers(answers) == users


def test_an_adaptive_job_shows_its_rounds_and_resumes_in_its_round_after_a_kill(
    any_service: Service, slow_teacher: str
) -> None:
    """Three rounds (30, 60, 120 paid answers); the worker is killed once the first round's
    student is recorded, the next one goes on from there and pays nothing twice."""
    key = key_for(any_service, 2)
    adaptive = {"first_share": 0.25, "rounds": 3, "score": "views"}
    request = job_request(
        slow_teacher, key, budget=120, strategy="adaptive", adaptive=adaptive, scales=[1.0]
    )
    job_id = submit(any_service, "alice", request)
    any_service.start("worker")
    any_service.start("worker")
    wait_for(lambda: any_service.job(job_id).rounds, 120, "the first round", every_s=0.05)
    first = any_service.owner(job_id)
    first.kill()
    first.wait()
    done = any_service.wait_status(job_id, TERMINAL, timeout_s=120)
    assert done.status == DONE, (done.error, any_service.logs())
    assert done.attempts == 2
    assert [r["ends_at"] for r in done.rounds] == [30, 60, 120]
    assert [r["paid_total"] for r in done.rounds] == [30, 60, 120]
    assert all(0 <= r["heldout"]["agr10"] <= 1 for r in done.rounds)
    assert done.metrics["training"]["heldout"] == done.rounds[-1]["heldout"]
    assert_paid_once(any_service, job_id, slow_teacher, key)


def test_cancel_stops_a_running_job_within_seconds_and_failures_are_one_line(
    service: Service, slow_teacher: str
) -> None:
    key = TEACHER_KEYS[2]
    job_id = submit(service, "alice", job_request(slow_teacher, key, n_sequences=200))
    service.start("worker")
    wait_for(lambda: usage(slow_teacher, key) > 0, 60, "a paid answer", every_s=0.05)
    asked = time.monotonic()
    service.store.request_cancel("alice", job_id)
    stopped = service.wait_status(job_id, TERMINAL, timeout_s=10)
    assert stopped.status == CANCELLED and time.monotonic() - asked < 3
    assert stopped.teacher_api_key_encrypted is None
    time.sleep(1)
    billed = usage(slow_teacher, key)
    time.sleep(1)
    assert usage(slow_teacher, key) == billed  # nothing is asked after the cancel

    # The same worker goes on to the next job; an unreachable teacher fails it in one line.
    secret = "do-not-leak-this-key"
    bad = submit(service, "bob", job_request("http://127.0.0.1:9", secret))
    failed = service.wait_status(bad, TERMINAL, timeout_s=30)
    assert failed.status == FAILED and failed.error and "\n" not in failed.error
    assert secret not in failed.error and secret not in service.logs()
    unknown = submit(service, "bob", job_request(slow_teacher, key, dataset="../etc/passwd"))
    failed = service.wait_status(unknown, TERMINAL, timeout_s=30)
    assert failed.status == FAILED and "unknown dataset" in (failed.error or "")
