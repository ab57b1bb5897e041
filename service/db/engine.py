"""Connecting: one engine per process, SQLite tuned for several writers, migrations at start.

Engines hide statement parameters (`hide_parameters`): a failed statement's error, its log line
and its traceback show the SQL only, never the values it carried (job requests, keys).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from service.crypto import KeyCipher

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 10_000


def make_engine(url: str) -> Engine:
    """An engine for `url`; a SQLite file gets its folder, WAL mode and a busy timeout."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, hide_parameters=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False}, hide_parameters=True)
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets readers run beside the writer; the busy timeout makes writers queue, not fail."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit (routes return them as they are)."""
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config() -> Config:
    """The packaged migrations, without needing an alembic.ini on disk."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def migrate(engine: Engine, cipher: KeyCipher | None = None) -> None:
    """Bring the schema to the latest revision (`alembic upgrade head`) on this engine.

    `cipher` encrypts the teacher API keys that older versions kept in clear (revision 0002);
    a revision that removed secrets asks for the database files to be rewritten (`scrub`).
    """
    config = alembic_config()
    config.attributes["cipher"] = cipher
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    if config.attributes.get("scrub"):
        scrub(engine)


def scrub(engine: Engine) -> None:
    """Rewrite the database so no old copy of a removed value stays in its files: SQLite keeps
    them in free pages and in the WAL, PostgreSQL in dead row versions of `jobs`."""
    with engine.connect() as connection:
        connection = connection.execution_options(isolation_level="AUTOCOMMIT")
        if engine.dialect.name == "sqlite":
            connection.exec_driver_sql("VACUUM")
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        elif engine.dialect.name == "postgresql":
            connection.exec_driver_sql("VACUUM FULL jobs")
