"""Tables: API keys, extraction jobs, students. The migrations in `service/migrations` build them.

Secrets: `api_keys` holds only the sha256 of each key; a job's teacher API key lives in its own
column, encrypted (`service.crypto`), never in `request`, and is cleared as soon as the job
reaches a terminal state.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

QUEUED, PROBING, TRAINING, EVALUATING = "queued", "probing", "training", "evaluating"
DONE, FAILED, CANCELLED = "done", "failed", "cancelled"
ACTIVE = (PROBING, TRAINING, EVALUATING)  # a worker holds the job
TERMINAL = (DONE, FAILED, CANCELLED)
STATUSES = (QUEUED, *ACTIVE, *TERMINAL)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out; SQLite, which has no time zones, stores naive UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: the store only takes aware UTC datetimes")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


class Base(DeclarativeBase):
    pass


class ApiKey(Base):
    """One caller key; `tenant` owns everything created with any of its keys."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant: Mapped[str] = mapped_column(String(100), index=True)
    key_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Job(Base):
    """An extraction job from request to student; its lease says which worker runs it."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("tenant", "idempotency_key", name="uq_jobs_tenant_idempotency_key"),
        Index("ix_jobs_status_created_at", "status", "created_at"),
        Index("ix_jobs_tenant_created_at", "tenant", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(100))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    request: Mapped[dict[str, Any]] = mapped_column(JSON)  # never holds the teacher API key
    teacher_api_key_encrypted: Mapped[str | None] = mapped_column(Text)  # NULL once terminal
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    paid: Mapped[int] = mapped_column(Integer, default=0)
    cached: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    rounds: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)  # adaptive jobs only
    student_id: Mapped[str | None] = mapped_column(String(36))  # set when done
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Student(Base):
    """A trained student: the artifact a done job left, and where its report is."""

    __tablename__ = "students"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(100), index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), unique=True)
    artifact_path: Mapped[str] = mapped_column(Text)
    metrics_path: Mapped[str | None] = mapped_column(Text)
    report_path: Mapped[str | None] = mapped_column(Text)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # the job's, at the end
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
