"""The job store on SQLite and on PostgreSQL: idempotency, tenancy, cancel, leases, claims.

PostgreSQL tests run in a fresh database created for this module and dropped after it; they
skip when no server answers at 127.0.0.1:5432.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from backends import fresh_database, needs_pg
from cryptography.fernet import Fernet
from sqlalchemy import Engine, text

from service.crypto import KeyCipher
from service.db.engine import make_engine, migrate, session_factory
from service.db.models import CANCELLED, DONE, FAILED, PROBING, QUEUED, TRAINING
from service.errors import Conflict, NotFound
from service.keys import create_key, key_digest, tenant_of
from service.settings import ServiceSettings
from service.store import JobStore

REQUEST = {"teacher_url": "http://teacher", "budget": 10}
CIPHER = KeyCipher([Fernet.generate_key()])


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """A database of its own for this module, migrated once, dropped at the end."""
    with fresh_database() as url:
        yield url


class Clock:
    """A clock the test moves by hand, so leases expire without sleeping."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=needs_pg)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'store.sqlite3'}")
        migrate(engine)
    else:
        url = request.getfixturevalue("pg_url")
        engine = make_engine(ServiceSettings(database_url=url).database())
        with engine.begin() as connection:
            connection.execute(text("TRUNCATE students, jobs, api_keys"))
    yield engine
    engine.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(engine: Engine, clock: Clock) -> JobStore:
    return JobStore(session_factory(engine), CIPHER, clock)


def queue(store: JobStore, n: int, tenant: str = "alice") -> list[str]:
    ids = []
    for i in range(n):
        job, _ = store.create_job(tenant, {**REQUEST, "seed": i}, "teacher-secret")
        ids.append(job.id)
        if isinstance(store.clock, Clock):
            store.clock.advance(0.001)  # distinct creation times: claims go oldest first
    return ids


def test_migrating_twice_changes_nothing(engine: Engine) -> None:
    migrate(engine)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def test_keys_are_stored_as_hashes(store: JobStore, engine: Engine) -> None:
    key = create_key(store.sessions, "alice")
    with store.sessions() as session:
        assert tenant_of(session, key_digest(key)) == "alice"
        assert tenant_of(session, key_digest(key + "x")) is None
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT key_sha256 FROM api_keys")).scalars().all()
    assert key not in stored and len(stored[0]) == 64


def test_idempotency_key_replays_the_same_job(store: JobStore) -> None:
    first, created = store.create_job("alice", REQUEST, "secret", "retry-1")
    again, created_again = store.create_job("alice", REQUEST, "secret", "retry-1")
    assert created and not created_again and again.id == first.id
    with pytest.raises(Conflict, match="different request"):
        store.create_job("alice", {**REQUEST, "budget": 11}, "secret", "retry-1")
    other, created_other = store.create_job("bob", REQUEST, "secret", "retry-1")
    assert created_other and other.id != first.id  # keys are per tenant
    assert len(store.list_jobs("alice", 10)) == 1
    # A field added to the API later reads None in a new request and is absent from the old
    # row: the same request. Set to a value, it is a different one.
    later, _ = store.create_job("alice", {**REQUEST, "max_history": None}, "secret", "retry-1")
    assert later.id == first.id
    with pytest.raises(Conflict, match="different request"):
        store.create_job("alice", {**REQUEST, "max_history": 50}, "secret", "retry-1")


def test_idempotency_key_under_concurrent_creates(store: JobStore) -> None:
    results: list[str] = []
    start = threading.Barrier(4)

    def create() -> None:
        start.wait()
        results.append(store.create_job("alice", REQUEST, "secret", "same")[0].id)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and len(set(results)) == 1


def test_tenants_see_only_their_own(store: JobStore) -> None:
    (mine,) = queue(store, 1, "alice")
    queue(store, 2, "bob")
    assert [j.id for j in store.list_jobs("alice", 10)] == [mine]
    with pytest.raises(NotFound):
        store.get_job("bob", mine)
    with pytest.raises(NotFound):
        store.request_cancel("bob", mine)
    assert store.get_job("alice", mine).status == QUEUED
    job = store.claim_job("w", 60)
    student = store.finish_done(job.id, "w", metrics={}, artifact_path="/a")
    with pytest.raises(NotFound):
        store.get_student("carol", student.id)
    assert store.list_students("carol", 10) == []
    assert [s.id for s in store.list_students(job.tenant, 10)] == [student.id]


def test_cancel_queued_is_immediate_and_forgets_the_teacher_key(store: JobStore) -> None:
    (job_id,) = queue(store, 1)
    job = store.request_cancel("alice", job_id)
    assert job.status == CANCELLED and job.teacher_api_key_encrypted is None and job.finished_at
    assert store.request_cancel("alice", job_id).status == CANCELLED  # again: no change
    assert store.claim_job("w", 60) is None


def test_cancel_running_flags_the_worker(store: JobStore) -> None:
    (job_id,) = queue(store, 1)
    store.claim_job("w", 60)
    job = store.request_cancel("alice", job_id)
    assert job.status == PROBING and job.cancel_requested
    assert store.cancel_requested(job_id)
    assert store.finish_cancelled(job_id, "w")
    job = store.get_job("alice", job_id)
    assert (
        job.status == CANCELLED
        and job.teacher_api_key_encrypted is None
        and job.lease_owner is None
    )


def test_cancel_of_a_finished_job_is_a_conflict(store: JobStore) -> None:
    (job_id,) = queue(store, 1)
    store.claim_job("w", 60)
    store.finish_failed(job_id, "w", "teacher unreachable")
    with pytest.raises(Conflict, match="already finished"):
        store.request_cancel("alice", job_id)
    job = store.get_job("alice", job_id)
    assert job.status == FAILED and job.error == "teacher unreachable"
    assert job.teacher_api_key_encrypted is None


def test_claim_takes_oldest_first_with_a_lease(store: JobStore, clock: Clock) -> None:
    ids = queue(store, 3)
    job = store.claim_job("w1", 30)
    assert job.id == ids[0] and job.status == PROBING and job.attempts == 1
    assert CIPHER.decrypt(job.teacher_api_key_encrypted) == "teacher-secret"  # for the worker
    assert job.lease_owner == "w1" and job.lease_expires_at == clock.now + timedelta(seconds=30)
    assert job.started_at == clock.now and job.started_at.tzinfo is not None
    assert store.claim_job("w2", 30).id == ids[1]


def test_claim_is_exclusive_under_contention(engine: Engine) -> None:
    store = JobStore(session_factory(engine), CIPHER)  # the real clock: threads race for real
    ids = queue(store, 12)
    claimed: list[str] = []
    start = threading.Barrier(4)

    def claim(worker: str) -> None:
        start.wait()
        while (job := store.claim_job(worker, 60)) is not None:
            claimed.append(job.id)

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == sorted(ids)  # every job once, none twice


def test_expired_lease_is_reclaimed_and_the_old_owner_is_refused(
    store: JobStore, clock: Clock
) -> None:
    (job_id,) = queue(store, 1)
    store.claim_job("w1", 10)
    assert store.update_progress(job_id, "w1", status=TRAINING, progress=0.4, paid=7, cached=2)
    clock.advance(5)
    assert store.claim_job("w2", 10) is None  # lease still running
    clock.advance(6)
    job = store.claim_job("w2", 10)
    assert job.id == job_id and job.attempts == 2 and job.lease_owner == "w2"
    assert job.status == TRAINING and job.paid == 7  # resumes where it was
    assert not store.heartbeat(job_id, "w1", 10)
    assert not store.update_progress(job_id, "w1", progress=0.9)
    assert store.finish_done(job_id, "w1", metrics={}, artifact_path="/x") is None
    assert store.get_job("alice", job_id).status == TRAINING


def test_a_released_job_is_claimed_again_at_once(store: JobStore, clock: Clock) -> None:
    (job_id,) = queue(store, 1)
    store.claim_job("w1", 10)
    assert store.update_progress(job_id, "w1", status=TRAINING, progress=0.5)
    assert not store.release_job(job_id, "intruder")
    assert store.claim_job("w2", 10) is None  # still w1's
    assert store.release_job(job_id, "w1")
    job = store.claim_job("w2", 10)  # no need to wait for the lease to run out
    assert job.id == job_id and job.attempts == 2 and job.status == TRAINING
    assert not store.heartbeat(job_id, "w1", 10)


def test_heartbeat_extends_only_the_owners_lease(store: JobStore, clock: Clock) -> None:
    (job_id,) = queue(store, 1)
    store.claim_job("w1", 10)
    assert not store.heartbeat(job_id, "intruder", 10)
    clock.advance(8)
    assert store.heartbeat(job_id, "w1", 10)
    clock.advance(8)  # 16 s after the claim, 8 s after the heartbeat
    assert store.claim_job("w2", 10) is None
    assert store.get_job("alice", job_id).lease_expires_at == clock.now + timedelta(seconds=2)


def test_a_dead_workers_cancelled_job_is_closed_by_the_next_claim(
    store: JobStore, clock: Clock
) -> None:
    (job_id,) = queue(store, 1)
    store.claim_job("w1", 10)
    store.request_cancel("alice", job_id)
    clock.advance(11)
    assert store.claim_job("w2", 10) is None
    job = store.get_job("alice", job_id)
    assert job.status == CANCELLED and job.teacher_api_key_encrypted is None


def test_done_records_the_student_and_forgets_the_key(store: JobStore) -> None:
    (job_id,) = queue(store, 1)
    store.claim_job("w", 60)
    with pytest.raises(ValueError, match="status"):
        store.update_progress(job_id, "w", status=DONE)
    student = store.finish_done(
        job_id, "w", metrics={"agr@10": 0.5}, artifact_path="/s", report_path="/s/report.json"
    )
    job = store.get_job("alice", job_id)
    assert job.status == DONE and job.progress == 1.0 and job.student_id == student.id
    assert job.teacher_api_key_encrypted is None and job.metrics == {"agr@10": 0.5}
    assert store.get_student("alice", student.id).report_path == "/s/report.json"
    assert not store.heartbeat(job_id, "w", 60)  # finished jobs have no lease
    counts = store.job_counts()
    assert counts[DONE] == 1 and counts[QUEUED] == 0
