"""Jobs and students in the database: everything the API and the workers do to them.

Tenancy: every read and write the API makes names the tenant, and another tenant's ids behave
exactly like ids that do not exist (`NotFound`).

Teacher API keys: `create_job` stores the key encrypted with the store's cipher; the worker
decrypts the claimed job's `teacher_api_key_encrypted` just before use. The column is cleared
when the job ends.

Idempotency: `create_job` with an idempotency key already used by the tenant returns the job it
created, when the request (teacher API key aside: it is not compared) is the same, and raises
`Conflict` when it differs. The API answers the first 201 and the replays 200.

Leases: a worker owns a job while `lease_owner` is its id and `lease_expires_at` is in the
future. `claim_job` takes the oldest queued job, or an active one whose lease ran out (its worker
died; `attempts` counts the claims), in one atomic statement: `UPDATE ... WHERE id = (SELECT ...
FOR UPDATE SKIP LOCKED) RETURNING`, where PostgreSQL skips rows other claimers hold and SQLite,
which has one writer at a time, runs the statement alone. Every later write by the worker
(`heartbeat`, `update_progress`, `finish_*`) is conditional on still owning the job and returns
False when it does not, so a worker that lost its lease stops instead of overwriting its
successor.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, literal, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from service.crypto import KeyCipher, teacher_key_cipher
from service.db.engine import make_engine, migrate, session_factory
from service.db.models import (
    ACTIVE,
    CANCELLED,
    DONE,
    FAILED,
    PROBING,
    QUEUED,
    STATUSES,
    Job,
    Student,
    UTCDateTime,
)
from service.errors import Conflict, NotFound
from service.settings import ServiceSettings

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class JobStore:
    """Access to jobs and students over one session factory; safe to share between threads.

    `cipher` encrypts teacher API keys; the worker decrypts with the same one.
    """

    def __init__(
        self, sessions: sessionmaker[Session], cipher: KeyCipher, clock: Clock = utc_now
    ) -> None:
        self.sessions = sessions
        self.cipher = cipher
        self.clock = clock

    # --- the API's side ---------------------------------------------------------------------

    def create_job(
        self,
        tenant: str,
        request: dict[str, Any],
        teacher_api_key: str,
        idempotency_key: str | None = None,
    ) -> tuple[Job, bool]:
        """The new queued job and True, or the job this idempotency key already made and False.

        `request` must not contain the teacher API key; it is stored, encrypted, in its own column.
        """
        if idempotency_key is not None:
            existing = self._by_idempotency_key(tenant, idempotency_key)
            if existing is not None:
                return _replay(existing, request, idempotency_key), False
        now = self.clock()
        job = Job(
            id=str(uuid.uuid4()),
            tenant=tenant,
            idempotency_key=idempotency_key,
            status=QUEUED,
            request=request,
            teacher_api_key_encrypted=self.cipher.encrypt(teacher_api_key),
            progress=0.0,
            paid=0,
            cached=0,
            cancel_requested=False,
            attempts=0,
            created_at=now,
            updated_at=now,
        )
        try:
            with self.sessions.begin() as session:
                session.add(job)
        except IntegrityError:  # a concurrent request with the same key got there first
            existing = self._by_idempotency_key(tenant, idempotency_key or "")
            if existing is None:
                raise
            return _replay(existing, request, idempotency_key or ""), False
        return job, True

    def _by_idempotency_key(self, tenant: str, key: str) -> Job | None:
        with self.sessions() as session:
            return session.scalar(
                select(Job).where(Job.tenant == tenant, Job.idempotency_key == key)
            )

    def get_job(self, tenant: str, job_id: str) -> Job:
        with self.sessions() as session:
            job = session.scalar(select(Job).where(Job.id == job_id, Job.tenant == tenant))
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        return job

    def list_jobs(
        self, tenant: str, limit: int, offset: int = 0, status: str | None = None
    ) -> list[Job]:
        """The tenant's jobs, newest first."""
        query = select(Job).where(Job.tenant == tenant)
        if status is not None:
            query = query.where(Job.status == status)
        query = query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit).offset(offset)
        with self.sessions() as session:
            return list(session.scalars(query))

    def request_cancel(self, tenant: str, job_id: str) -> Job:
        """A queued job is cancelled at once; a running one is flagged for its worker to stop.

        Cancelling a cancelled job changes nothing; a done or failed job raises `Conflict`.
        """
        now = self.clock()
        mine = and_(Job.id == job_id, Job.tenant == tenant)
        with self.sessions.begin() as session:
            cancelled = session.execute(
                update(Job)
                .where(mine, Job.status == QUEUED)
                .values(**_terminal(CANCELLED, now))
                .execution_options(synchronize_session=False)
            )
            if not cancelled.rowcount:
                session.execute(
                    update(Job)
                    .where(mine, Job.status.in_(ACTIVE))
                    .values(cancel_requested=True, updated_at=now)
                    .execution_options(synchronize_session=False)
                )
            job = session.scalar(select(Job).where(mine))
            if job is None:
                raise NotFound(f"no job {job_id!r}")
            if job.status in (DONE, FAILED):
                raise Conflict(f"job {job_id} already finished ({job.status}); nothing to cancel")
            return job

    def get_student(self, tenant: str, student_id: str) -> Student:
        with self.sessions() as session:
            student = session.scalar(
                select(Student).where(Student.id == student_id, Student.tenant == tenant)
            )
        if student is None:
            raise NotFound(f"no student {student_id!r}")
        return student

    def list_students(self, tenant: str, limit: int, offset: int = 0) -> list[Student]:
        """The tenant's students, newest first."""
        query = (
            select(Student)
            .where(Student.tenant == tenant)
            .order_by(Student.created_at.desc(), Student.id.desc())
            .limit(limit)
            .offset(offset)
        )
        with self.sessions() as session:
            return list(session.scalars(query))

    def job_counts(self) -> dict[str, int]:
        """Jobs by status over all tenants (Prometheus)."""
        with self.sessions() as session:
            rows = session.execute(select(Job.status, func.count()).group_by(Job.status))
            counts = {status: int(n) for status, n in rows}
        return {status: counts.get(status, 0) for status in STATUSES}

    # --- the worker's side ------------------------------------------------------------------

    def claim_job(self, worker_id: str, lease_s: float) -> Job | None:
        """Take the oldest claimable job under a new lease; None when there is none.

        A queued job becomes `probing`; a reclaimed one keeps its stage and resumes from its
        checkpoint. The returned job carries the encrypted teacher API key. Running jobs that
        were asked to cancel and whose worker died are marked cancelled here, since nobody else
        will.
        """
        now = self.clock()
        lease_ended = or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now)
        with self.sessions.begin() as session:
            session.execute(
                update(Job)
                .where(Job.status.in_(ACTIVE), Job.cancel_requested.is_(True), lease_ended)
                .values(**_terminal(CANCELLED, now))
                .execution_options(synchronize_session=False)
            )
            claimable = and_(Job.status.in_((QUEUED, *ACTIVE)), lease_ended)
            oldest = (
                select(Job.id)
                .where(claimable)
                .order_by(Job.created_at, Job.id)
                .limit(1)
                .with_for_update(skip_locked=True)
                .scalar_subquery()
            )
            claimed = session.scalars(
                update(Job)
                .where(Job.id == oldest, claimable)
                .values(
                    status=case((Job.status == QUEUED, PROBING), else_=Job.status),
                    lease_owner=worker_id,
                    lease_expires_at=now + timedelta(seconds=lease_s),
                    attempts=Job.attempts + 1,
                    started_at=func.coalesce(Job.started_at, literal(now, UTCDateTime())),
                    updated_at=now,
                )
                .returning(Job)
                .execution_options(synchronize_session=False, populate_existing=True)
            ).first()
        return claimed

    def heartbeat(self, job_id: str, worker_id: str, lease_s: float) -> bool:
        """Extend the lease; False when this worker no longer owns the job (it must stop)."""
        now = self.clock()
        return self._owned_update(
            job_id, worker_id, lease_expires_at=now + timedelta(seconds=lease_s), updated_at=now
        )

    def release_job(self, job_id: str, worker_id: str) -> bool:
        """Give a running job back at once (a worker shutting down), so another worker resumes
        it now instead of after the lease would have run out. False when not the owner."""
        return self._owned_update(
            job_id, worker_id, lease_owner=None, lease_expires_at=None, updated_at=self.clock()
        )

    def cancel_requested(self, job_id: str) -> bool:
        """Whether the job's owner was asked to stop (the worker checks at each heartbeat)."""
        with self.sessions() as session:
            return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))

    def update_progress(
        self,
        job_id: str,
        worker_id: str,
        *,
        status: str | None = None,
        progress: float | None = None,
        paid: int | None = None,
        cached: int | None = None,
        rounds: list[dict[str, Any]] | None = None,
    ) -> bool:
        """Record the stage and counters (an adaptive job's rounds so far); False when this
        worker no longer owns the job."""
        if status is not None and status not in ACTIVE:
            raise ValueError(f"a running job's status is one of {ACTIVE}, got {status!r}")
        if progress is not None and not 0.0 <= progress <= 1.0:
            raise ValueError(f"progress must be in [0, 1], got {progress}")
        given = {
            "status": status,
            "progress": progress,
            "paid": paid,
            "cached": cached,
            "rounds": rounds,
        }
        values = {name: value for name, value in given.items() if value is not None}
        return self._owned_update(job_id, worker_id, **values, updated_at=self.clock())

    def finish_done(
        self,
        job_id: str,
        worker_id: str,
        *,
        metrics: dict[str, Any],
        artifact_path: str,
        metrics_path: str | None = None,
        report_path: str | None = None,
    ) -> Student | None:
        """Mark the job done and record its student, in one transaction; None if not owned."""
        now = self.clock()
        student_id = str(uuid.uuid4())
        with self.sessions.begin() as session:
            changed = session.execute(
                update(Job)
                .where(_owned(job_id, worker_id))
                .values(
                    **_terminal(DONE, now), progress=1.0, metrics=metrics, student_id=student_id
                )
                .execution_options(synchronize_session=False)
            )
            if not changed.rowcount:
                return None
            tenant = session.scalar(select(Job.tenant).where(Job.id == job_id))
            student = Student(
                id=student_id,
                tenant=tenant,
                job_id=job_id,
                artifact_path=artifact_path,
                metrics_path=metrics_path,
                report_path=report_path,
                metrics=metrics,
                created_at=now,
            )
            session.add(student)
        return student

    def finish_failed(self, job_id: str, worker_id: str, error: str) -> bool:
        """Mark the job failed with a message for its owner; False if not owned."""
        return self._owned_update(job_id, worker_id, **_terminal(FAILED, self.clock()), error=error)

    def finish_cancelled(self, job_id: str, worker_id: str) -> bool:
        """The worker stopped a job whose cancel was requested; False if not owned."""
        return self._owned_update(job_id, worker_id, **_terminal(CANCELLED, self.clock()))

    def _owned_update(self, job_id: str, worker_id: str, **values: Any) -> bool:
        with self.sessions.begin() as session:
            changed = session.execute(
                update(Job)
                .where(_owned(job_id, worker_id))
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            return bool(changed.rowcount)


def open_store(settings: ServiceSettings) -> JobStore:
    """The configured database, migrated to the latest schema, with the configured cipher."""
    cipher = teacher_key_cipher(settings)
    engine = make_engine(settings.database())
    migrate(engine, cipher)
    return JobStore(session_factory(engine), cipher)


def _owned(job_id: str, worker_id: str) -> ColumnElement[bool]:
    """The job is running under this worker's lease."""
    return and_(Job.id == job_id, Job.lease_owner == worker_id, Job.status.in_(ACTIVE))


def _terminal(status: str, now: datetime) -> dict[str, Any]:
    """A final state: the lease is released and the teacher API key forgotten."""
    return {
        "status": status,
        "teacher_api_key_encrypted": None,
        "lease_owner": None,
        "lease_expires_at": None,
        "finished_at": now,
        "updated_at": now,
    }


def _replay(existing: Job, request: dict[str, Any], idempotency_key: str) -> Job:
    """The job this key made, when the request is the same one. A field absent from the stored
    request and a field set to None are the same request: optional fields added to the API
    later (None by default) must not turn the replay of an older job's key into a conflict."""
    if _set_fields(existing.request) != _set_fields(request):
        raise Conflict(
            f"Idempotency-Key {idempotency_key!r} was already used with a different request"
        )
    return existing


def _set_fields(request: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in request.items() if value is not None}
