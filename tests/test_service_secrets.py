"""Issue 24: the teacher API key is never at rest in clear, nor in a log, an error or an answer.

On SQLite the database files themselves are read. On PostgreSQL the stored column is checked to
be ciphertext and, when the test role is a superuser, the table's file and the WAL segments the
test wrote are read through the server (`pg_read_binary_file`). PostgreSQL tests skip when no
server answers at 127.0.0.1:5432.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import httpx
import psycopg
import pytest
from alembic import command
from backends import PG_ADMIN, needs_pg
from cryptography.fernet import Fernet
from fastapi import FastAPI
from sqlalchemy import Engine, MetaData, Table, inspect, select, update
from sqlalchemy.exc import SQLAlchemyError
from test_service_store import pg_url  # noqa: F401  (a fixture)

from service.api.app import create_app
from service.crypto import KEY_FILENAME, KeyCipher, UnreadableKey, teacher_key_cipher
from service.db import engine as db_engine
from service.db.engine import alembic_config, make_engine, migrate, session_factory
from service.db.models import FAILED, QUEUED, Job
from service.keys import create_key
from service.settings import ServiceSettings
from service.store import JobStore
from service.worker import Worker
from teacher_mock.server import running

KEY = "teacher-key-b7e41d09"  # recognisable: any clear copy of it is easy to find
MARK = "http://marker-5c2f.example"  # a request value: statement parameters must not show it
IDEMPOTENCY_KEY = "idem-9d3a"
JOB = {"teacher_url": MARK, "teacher_api_key": KEY, "budget": 10}
PG_KEY = Fernet.generate_key().decode()


@dataclass
class Api:
    app: FastAPI
    settings: ServiceSettings
    store: JobStore
    key: str  # the caller's API key

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def settings_for(backend: str, home: Path, request: pytest.FixtureRequest) -> ServiceSettings:
    if backend == "sqlite":
        return ServiceSettings(home=home)
    url = request.getfixturevalue("pg_url")
    return ServiceSettings(home=home, database_url=url, encryption_key=PG_KEY)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=needs_pg)])
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Api]:
    """The API over a fresh SQLite home, or over this module's PostgreSQL database."""
    settings = settings_for(request.param, tmp_path / "home", request)
    app = create_app(settings)
    store: JobStore = app.state.store
    yield Api(app, settings, store, create_key(store.sessions, f"t-{uuid.uuid4().hex[:8]}"))
    store.sessions.kw["bind"].dispose()


def tokens(store: JobStore, ids: list[str]) -> list[str | None]:
    """The stored `teacher_api_key_encrypted` of these jobs, in this order."""
    with store.sessions() as session:
        query = select(Job.id, Job.teacher_api_key_encrypted).where(Job.id.in_(ids))
        rows = {job_id: token for job_id, token in session.execute(query)}
    return [rows[job_id] for job_id in ids]


def sqlite_files(home: Path) -> dict[str, bytes]:
    """The database's files as they are on disk (the WAL too: the engine keeps it open)."""
    return {path.name: path.read_bytes() for path in sorted(home.glob("recmimic.sqlite3*"))}


def pg_superuser(url: str) -> bool:
    with psycopg.connect(url) as db:
        row = db.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    return bool(row and row[0])


def pg_wal_position(url: str) -> str:
    with psycopg.connect(url) as db:
        return str(db.execute("SELECT pg_current_wal_lsn()").fetchone()[0])


def pg_files(url: str, since_lsn: str | None) -> list[str]:
    """After a checkpoint: the `jobs` table's file, and the WAL segments written since."""
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("CHECKPOINT")
        files = [db.execute("SELECT pg_relation_filepath('jobs')").fetchone()[0]]
        if since_lsn is not None:
            first, last = db.execute(
                "SELECT pg_walfile_name(%s::pg_lsn), pg_walfile_name(pg_current_wal_lsn())",
                (since_lsn,),
            ).fetchone()
            segments = db.execute(
                "SELECT name FROM pg_ls_waldir() WHERE name BETWEEN %s AND %s", (first, last)
            )
            files += [f"pg_wal/{name}" for (name,) in segments]
    return files


def pg_holding(url: str, files: list[str], needle: str) -> list[str]:
    """Which of the server's files hold `needle`, searched by the server itself."""
    with psycopg.connect(url) as db:
        query = "SELECT position(%s::bytea IN pg_read_binary_file(%s)) > 0"
        return [f for f in files if db.execute(query, (needle.encode(), f)).fetchone()[0]]


# --- at rest --------------------------------------------------------------------------------


def test_the_key_is_stored_encrypted_and_no_clear_copy_stays(api: Api) -> None:
    """Jobs posted with recognisable keys, then ended: no file holds a key in clear, ever."""
    url = api.settings.database_url
    since = pg_wal_position(url) if url else None
    keys = [f"{KEY}-{uuid.uuid4().hex[:8]}" for _ in range(3)]  # the WAL holds older tests' too
    with running(api.app) as base, httpx.Client(base_url=base, headers=api.headers) as client:
        ids = []
        for key in keys:
            answer = client.post("/v1/jobs", json={**JOB, "teacher_api_key": key})
            assert answer.status_code == 201, answer.text
            ids.append(answer.json()["id"])
        stored = tokens(api.store, ids)
        for key, token in zip(keys, stored, strict=True):
            assert token and KEY not in token and token.startswith("gAAAAA")  # a Fernet token
            assert api.store.cipher.decrypt(token) == key
        client.post(f"/v1/jobs/{ids[0]}/cancel")
        client.post(f"/v1/jobs/{ids[1]}/cancel")
    claimed = api.store.claim_job("w", 60)
    assert claimed is not None and claimed.id == ids[2]
    assert api.store.finish_failed(ids[2], "w", "teacher unreachable")
    assert tokens(api.store, ids) == [None, None, None]

    if url is None:
        files = sqlite_files(api.settings.home)
        assert len(files["recmimic.sqlite3-wal"]) > 0  # what the jobs wrote is still there
        assert MARK.encode() in b"".join(files.values())  # the search finds what is in clear
        for name, content in files.items():
            assert KEY.encode() not in content, name
        return
    if not pg_superuser(url):
        pytest.skip("reading PostgreSQL's files needs a superuser role; the column was checked")
    files = pg_files(url, since)
    assert len(files) >= 2 and pg_holding(url, files, MARK)  # the search finds clear values
    assert [key for key in keys if pg_holding(url, files, key)] == []


def test_without_a_configured_key_sqlite_keeps_one_beside_the_database(tmp_path: Path) -> None:
    """Generated once, mode 0600, and the same for every process that starts at the same time."""
    settings = ServiceSettings(home=tmp_path / "home")
    ciphers: list[KeyCipher] = []
    start = threading.Barrier(4)

    def build() -> None:
        start.wait()
        ciphers.append(teacher_key_cipher(settings))

    threads = [threading.Thread(target=build) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    path = tmp_path / "home" / KEY_FILENAME
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == [KEY_FILENAME]  # no draft left behind
    token = ciphers[0].encrypt(KEY)
    assert all(cipher.decrypt(token) == KEY for cipher in ciphers)


def test_a_configured_key_is_required_with_postgresql_and_checked(tmp_path: Path) -> None:
    url = "postgresql://postgres@127.0.0.1:5432/test"
    with pytest.raises(ValueError, match="RECMIMIC_ENCRYPTION_KEY is required with a postgresql"):
        teacher_key_cipher(ServiceSettings(home=tmp_path, database_url=url))
    with pytest.raises(ValueError, match="not a Fernet key") as refused:
        teacher_key_cipher(ServiceSettings(home=tmp_path, encryption_key="hunter2-not-a-key"))
    assert "hunter2" not in str(refused.value)
    assert not (tmp_path / KEY_FILENAME).exists()  # a configured key is never written down
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    queued = teacher_key_cipher(ServiceSettings(home=tmp_path, encryption_key=old)).encrypt(KEY)
    rotated = teacher_key_cipher(ServiceSettings(home=tmp_path, encryption_key=f"{new}, {old}"))
    assert rotated.decrypt(queued) == KEY  # the old key still decrypts...
    assert KeyCipher([new.encode()]).decrypt(rotated.encrypt(KEY)) == KEY  # ...the new encrypts
    with pytest.raises(UnreadableKey, match="submit the job again"):
        KeyCipher([new.encode()]).decrypt(queued)


def test_a_job_whose_key_cannot_be_decrypted_fails_in_one_line(tmp_path: Path) -> None:
    settings = ServiceSettings(home=tmp_path, poll_s=0.1)
    engine = make_engine(settings.database())
    migrate(engine)
    queued_with = JobStore(session_factory(engine), KeyCipher([Fernet.generate_key()]))
    job, _ = queued_with.create_job("alice", {"teacher_url": MARK}, KEY)
    other = JobStore(session_factory(engine), KeyCipher([Fernet.generate_key()]))
    Worker(settings, other).run(once=True)
    ended = other.get_job("alice", job.id)
    assert ended.status == FAILED and "cannot be decrypted" in (ended.error or "")
    assert ended.teacher_api_key_encrypted is None
    engine.dispose()


# --- errors and logs ------------------------------------------------------------------------


def test_a_locked_database_answers_503_without_key_or_parameters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Another connection holds SQLite's write lock past the busy timeout: the insert fails."""
    monkeypatch.setattr(db_engine, "SQLITE_BUSY_TIMEOUT_MS", 200)
    caplog.set_level(logging.DEBUG)
    app = create_app(ServiceSettings(home=tmp_path))
    key = create_key(app.state.store.sessions, "alice")
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": IDEMPOTENCY_KEY}
    locker = sqlite3.connect(tmp_path / "recmimic.sqlite3", isolation_level=None)
    with running(app) as url, httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        locker.execute("BEGIN IMMEDIATE")
        answer = client.post("/v1/jobs", json=JOB)
        locker.execute("ROLLBACK")
        assert answer.status_code == 503, answer.text
        assert answer.json() == {"detail": "the database is busy or unreachable; retry later"}
        assert client.post("/v1/jobs", json=JOB).status_code == 201  # the lock gone, it works
    locker.close()
    logged = caplog.text  # the records as formatted, tracebacks included
    assert "database is locked" in logged and "SQL parameters hidden" in logged
    for secret in (KEY, MARK, IDEMPOTENCY_KEY):
        assert secret not in answer.text and secret not in logged
        assert all(secret not in str(vars(record)) for record in caplog.records)
    app.state.store.sessions.kw["bind"].dispose()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=needs_pg)])
def test_a_failed_insert_raises_without_key_or_parameters(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite: locked past the busy timeout. PostgreSQL: a NUL byte in the tenant, which only a
    bug could send (tenants come from the database). Neither error nor traceback shows a value."""
    monkeypatch.setattr(db_engine, "SQLITE_BUSY_TIMEOUT_MS", 200)
    settings = settings_for(backend, tmp_path, request)
    engine = make_engine(settings.database())
    migrate(engine)
    store = JobStore(session_factory(engine), teacher_key_cipher(settings))
    tenant, locker = "alice\x00", None  # PostgreSQL refuses NUL in text
    if backend == "sqlite":
        tenant, locker = "alice", sqlite3.connect(settings.home / "recmimic.sqlite3")
        locker.isolation_level = None
        locker.execute("BEGIN IMMEDIATE")
    with pytest.raises(SQLAlchemyError) as raised:
        store.create_job(tenant, {"teacher_url": MARK}, KEY)
    if locker is not None:
        locker.close()
    engine.dispose()
    shown = "".join(traceback.format_exception(raised.value))
    assert "INSERT INTO jobs" in shown and "SQL parameters hidden" in shown
    for secret in (KEY, MARK, "alice"):
        assert secret not in shown


# --- what no database stores ----------------------------------------------------------------


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"teacher_api_key": KEY + "\x00"}, "body.teacher_api_key: must not contain NUL"),
        ({"teacher_api_key": "\ud800" + KEY}, "body.teacher_api_key: must be valid Unicode"),
        ({"teacher_url": "http://teacher.example/\x00"}, "body.teacher_url: must not contain NUL"),
    ],
    ids=["nul-key", "surrogate-key", "nul-url"],
)
def test_strings_no_database_stores_are_a_422(
    api: Api, changes: dict[str, str], message: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    content = json.dumps({**JOB, **changes})  # ASCII, escapes included (httpx sends UTF-8 only)
    headers = {**api.headers, "Content-Type": "application/json"}
    with running(api.app) as base:
        answer = httpx.post(f"{base}/v1/jobs", content=content, headers=headers)
    assert answer.status_code == 422, answer.text
    assert message in answer.json()["detail"] and KEY not in answer.text
    assert KEY not in caplog.text


def test_a_nul_in_the_idempotency_key_is_a_422(api: Api) -> None:
    """No HTTP server lets a NUL through a header, but an ASGI caller can."""

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=api.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            headers = {**api.headers, "Idempotency-Key": "retry\x00-1"}
            return await client.post("/v1/jobs", json=JOB, headers=headers)

    answer = asyncio.run(post())
    assert answer.status_code == 422
    assert "header.Idempotency-Key: must not contain NUL" in answer.json()["detail"]


# --- older databases ------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=needs_pg)])
def legacy(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A database at revision 0001 (keys in clear): SQLite, or a PostgreSQL database of its own."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'recmimic.sqlite3'}"
    else:
        name = f"recmimic_legacy_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    engine = make_engine(url)
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
    yield engine
    engine.dispose()
    if request.param != "sqlite":
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def legacy_job(engine: Engine, status: str, key: str) -> str:
    """A job as version 0001 stored it: the key in clear, cleared again once it ended."""
    job_id = str(uuid.uuid4())
    now = datetime.now(timezone.utc)
    with engine.begin() as connection:
        jobs = Table("jobs", MetaData(), autoload_with=connection)
        connection.execute(
            jobs.insert().values(
                id=job_id, tenant="alice", status=QUEUED, request={"teacher_url": MARK},
                teacher_api_key=key, progress=0.0, paid=0, cached=0, cancel_requested=False,
                attempts=0, created_at=now, updated_at=now,
            )
        )  # fmt: skip
        if status != QUEUED:
            ended = {"status": status, "teacher_api_key": None}
            connection.execute(update(jobs).where(jobs.c.id == job_id).values(**ended))
    return job_id


def raw_copies(engine: Engine, keys: list[str]) -> list[str]:
    """The keys found in clear in the database's files (PostgreSQL: in the table's file)."""
    if engine.dialect.name == "sqlite":
        files = sqlite_files(Path(engine.url.database or "").parent)
        return [key for key in keys for content in files.values() if key.encode() in content]
    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    return [key for key in keys if pg_holding(url, pg_files(url, None), key)]


def test_migrating_encrypts_older_clear_keys_and_scrubs_old_copies(legacy: Engine) -> None:
    if legacy.dialect.name == "postgresql":
        url = legacy.url.set(drivername="postgresql").render_as_string(hide_password=False)
        if not pg_superuser(url):
            pytest.skip("reading PostgreSQL's files needs a superuser role")
    waiting = legacy_job(legacy, QUEUED, f"{KEY}-queued")
    ended = legacy_job(legacy, FAILED, f"{KEY}-ended")
    keys = [f"{KEY}-queued", f"{KEY}-ended"]
    assert raw_copies(legacy, keys)  # version 0001 left them in the files
    with pytest.raises(ValueError, match="hold a teacher API key in clear"):
        migrate(legacy)  # no cipher: nothing can encrypt them, so nothing changes
    cipher = KeyCipher([Fernet.generate_key()])
    migrate(legacy, cipher)
    columns = {column["name"] for column in inspect(legacy).get_columns("jobs")}
    assert "teacher_api_key" not in columns
    store = JobStore(session_factory(legacy), cipher)
    assert cipher.decrypt(tokens(store, [waiting])[0] or "") == f"{KEY}-queued"
    assert tokens(store, [ended]) == [None]
    assert raw_copies(legacy, keys) == []
    claimed = store.claim_job("w", 60)  # the job queued before the upgrade runs after it
    assert claimed is not None and claimed.id == waiting
