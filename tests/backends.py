"""The local PostgreSQL and Redis servers the tests use where they answer, and skip without.

PostgreSQL: 127.0.0.1:5432, trust auth, database `test` for administration; each user of
`fresh_database` gets a database of its own, migrated, and dropped afterwards. Redis:
127.0.0.1:6379, database 0 (answer cache keys name the teacher's URL, a fresh port each run,
so tests never read each other's answers).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
import redis

from service.db.engine import make_engine, migrate
from service.settings import ServiceSettings

PG_ADMIN = "host=127.0.0.1 port=5432 dbname=test user=postgres connect_timeout=3"
REDIS_URL = "redis://127.0.0.1:6379/0"


def _pg_reachable() -> bool:
    try:
        psycopg.connect(PG_ADMIN).close()
    except psycopg.Error:
        return False
    return True


def _redis_reachable() -> bool:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError:
        return False
    return True


needs_pg = pytest.mark.skipif(
    not _pg_reachable(), reason="no PostgreSQL server answers at 127.0.0.1:5432 (database test)"
)
needs_redis = pytest.mark.skipif(
    not _redis_reachable(), reason="no Redis server answers at 127.0.0.1:6379"
)


@contextmanager
def fresh_database() -> Iterator[str]:
    """The URL of a new PostgreSQL database, migrated; dropped when the block ends."""
    name = f"recmimic_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    engine = make_engine(ServiceSettings(database_url=url).database())
    migrate(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
