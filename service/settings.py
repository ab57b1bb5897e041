"""Everything the service can be told, in one place (environment prefix `RECMIMIC_`).

Values come from the environment, then from an optional `recmimic.env` file in the working
directory (or the file named by `RECMIMIC_ENV_FILE`), then from the defaults below. With no
configuration at all the service keeps everything under `./recmimic-data`: a SQLite database,
the key that encrypts teacher API keys in it, the embedded answer cache and the jobs' work
directories.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from extractor.destinations import DestinationPolicy, parse_entry

ENV_PREFIX = "RECMIMIC_"
DATABASE_FILENAME = "recmimic.sqlite3"
TEACHER_ALLOW = f"{ENV_PREFIX}TEACHER_ALLOW"  # named in refusals, so they say what allows it


class ServiceSettings(BaseSettings):
    """Configuration of the API and the workers; read once per process."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=os.environ.get(f"{ENV_PREFIX}ENV_FILE", "recmimic.env"),
        extra="ignore",  # the env file may carry other components' settings
    )

    home: Path = Field(default=Path("recmimic-data"), description="data directory")
    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices(f"{ENV_PREFIX}DATABASE_URL", "DATABASE_URL"),
        description="SQLAlchemy URL; default: a SQLite file under `home`",
    )
    redis_url: str | None = Field(default=None, description="None: the embedded answer cache")
    # Jobs' teacher API keys are stored encrypted with this Fernet key (`service.crypto`), so no
    # copy of the database (dump, backup, SQLite WAL, PostgreSQL WAL) holds them in clear.
    # Several keys, comma-separated, rotate it: the first encrypts, any of them decrypts.
    # Unset with SQLite (the embedded default), a key is generated once into `encryption.key`
    # (mode 0600) beside the database file: copies of the database alone are then safe, a copy
    # of the whole folder is not. Unset with PostgreSQL, the service refuses to start: the API
    # and the workers may run on several machines and must all share one key, which no process
    # can make up for the others. Make one with
    #   python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"
    # A job queued under a key no longer listed fails with a message saying so.
    encryption_key: SecretStr | None = Field(
        default=None, description="Fernet key(s) for teacher API keys at rest; see above"
    )

    # Where jobs may send requests (`teacher_url`), checked when a job is posted (422) and again
    # by the worker at every connection, against what the host resolves to then (a refusal
    # fails the job). By default only public addresses: no loopback, link-local (cloud
    # metadata at 169.254.169.254), private (RFC 1918, fc00::/7), CGNAT (100.64.0.0/10),
    # unspecified, multicast or reserved ones, so tenants cannot aim the service at networks
    # only it reaches. Listed here, networks (CIDR; an address alone is its /32 or /128) and
    # host names (every address they resolve to) are allowed anyway: e.g. `10.20.0.0/16` or
    # `teacher` for an operator's own API. Comma-separated or a JSON list. `recmimic demo`
    # allows its own local teacher's address this way.
    teacher_allow: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="networks and host names jobs may reach anyway"
    )

    # Jobs: a worker's claim lasts `lease_s` and is renewed every `heartbeat_s`.
    lease_s: float = Field(default=60.0, gt=0)
    heartbeat_s: float = Field(default=15.0, gt=0)
    cancel_check_s: float = Field(default=2.0, gt=0, description="how often a worker checks")
    poll_s: float = Field(default=2.0, gt=0, description="a worker's wait when no job is queued")
    worker_device: str = Field(default="auto", description="training: auto = GPU when present")

    # Request limits.
    max_budget: int = Field(
        default=1_000_000, ge=1, description="a job's paid answers for probing, and for evaluating"
    )
    max_k: int = Field(default=100, ge=1, description="capped at a student's catalogue size")
    max_history: int = Field(default=1000, ge=1)
    max_batch: int = Field(default=256, ge=1)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    page_max: int = Field(default=100, ge=1, description="most rows one list request returns")

    api_workers: int = Field(default=1, ge=1, description="API processes (see service.server)")
    students_loaded: int = Field(default=4, ge=1, description="student models kept in memory")
    # Keys' tenants and students' owners kept in memory (`service.api.cache`): a key deleted
    # from the database is still accepted for at most `lookup_cache_s`.
    lookup_cache_s: float = Field(default=10.0, ge=0, description="0: read the database always")
    lookup_cache_size: int = Field(default=10_000, ge=1, description="entries per cache")
    # Student top-k: concurrent requests share one forward pass (`seqrec.serving.batcher`).
    # 64: on 2 EPYC cores (1 MB L2 each) 256 histories ranked in passes of 64 took 148 ms,
    # in one pass of 256 took 250-270 ms (SASRec, hidden 64, max_len 50, one torch thread).
    batch_max_rows: int = Field(default=64, ge=1, description="histories in one forward pass")
    torch_threads: int | None = Field(default=None, ge=1, description="None: cores left over")
    device: str = "cpu"
    log_level: str = "INFO"

    @field_validator("teacher_allow", mode="before")
    @classmethod
    def _split_allow(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            return json.loads(text) if text.startswith("[") else text.replace(",", " ").split()
        return value

    @field_validator("teacher_allow")
    @classmethod
    def _parse_allow(cls, value: list[str]) -> list[str]:
        return [str(parse_entry(entry)) for entry in value]

    @model_validator(mode="after")
    def _check(self) -> ServiceSettings:
        if self.heartbeat_s >= self.lease_s:
            raise ValueError("heartbeat_s must be shorter than lease_s")
        return self

    def teacher_destinations(self) -> DestinationPolicy:
        """The policy the API checks job URLs with and the worker connects under."""
        return DestinationPolicy.allowing(self.teacher_allow, f"the setting {TEACHER_ALLOW}")

    def database(self) -> str:
        """The SQLAlchemy URL to connect to (psycopg 3 for PostgreSQL)."""
        url = self.database_url or f"sqlite:///{self.home / DATABASE_FILENAME}"
        for prefix in ("postgres://", "postgresql://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url.removeprefix(prefix)
        return url
