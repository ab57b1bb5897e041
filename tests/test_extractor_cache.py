"""One contract for both answer caches: the embedded SQLite file and a real Redis.

Redis tests use the server at 127.0.0.1:6379 under a namespace unique to each test, deleted
afterwards; they are skipped, with the reason, when no server answers there.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import sqlite3
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import redis
from backends import REDIS_URL, needs_redis

from extractor.cache import (
    AnswerCache,
    CacheError,
    EmbeddedCache,
    cache_key,
    cache_keys,
    open_cache,
    redact_url,
)
from extractor.redis_cache import RedisCache

ENDPOINT = "http://teacher.test:8000"
Opener = Callable[[], Awaitable[AnswerCache]]


@pytest.fixture(params=["embedded", pytest.param("redis", marks=needs_redis)])
def open_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """A factory of caches over the same storage, so a second call is a 'reopen'."""
    if request.param == "embedded":

        async def open_embedded() -> AnswerCache:
            return EmbeddedCache(tmp_path / "answers.sqlite3")

        return open_embedded

    namespace = f"recmimic-test:{uuid.uuid4().hex}"

    async def open_redis() -> AnswerCache:
        return RedisCache(REDIS_URL, namespace=namespace)

    def cleanup() -> None:
        client = redis.Redis.from_url(REDIS_URL)
        names = list(client.scan_iter(match=f"{namespace}:*"))
        if names:
            client.delete(*names)
        client.close()

    request.addfinalizer(cleanup)
    return open_redis


def key(*history: str, k: int = 10, tag: str | None = "v1") -> str:
    return cache_key(ENDPOINT, k, list(history), tag)


def run(coro: Awaitable[object]) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


# The contract, against each backend.


def test_miss_is_none(open_backend: Opener) -> None:
    async def body() -> None:
        cache = await open_backend()
        assert await cache.get_many([key("1")]) == [None]
        assert await cache.get_many([]) == []
        await cache.close()

    run(body())


def test_round_trip_keeps_ids_verbatim(open_backend: Opener) -> None:
    answer = ["007", "42", "é", "0"]

    async def body() -> None:
        cache = await open_backend()
        await cache.put_many({key("1"): answer})
        assert await cache.get_many([key("1")]) == [answer]
        await cache.put_many({key("1"): ["8"]})  # a later answer replaces the entry
        assert await cache.get_many([key("1")]) == [["8"]]
        await cache.close()

    run(body())


def test_get_many_keeps_order_with_mixed_hits(open_backend: Opener) -> None:
    stored = {key(str(i)): [str(i), str(i + 1)] for i in range(0, 3000, 2)}
    asked = [key(str(i)) for i in reversed(range(3000))]  # more than one chunk

    async def body() -> None:
        cache = await open_backend()
        await cache.put_many(stored)
        got = await cache.get_many(asked)
        assert got == [stored.get(name) for name in asked]
        await cache.close()

    run(body())


def test_answers_survive_reopen(open_backend: Opener) -> None:
    async def body() -> None:
        first = await open_backend()
        await first.put_many({key("1", "2"): ["3", "4"]})
        await first.close()
        second = await open_backend()
        assert await second.get_many([key("1", "2"), key("2", "1")]) == [["3", "4"], None]
        await second.close()

    run(body())


def test_concurrent_puts_and_gets(open_backend: Opener) -> None:
    async def body() -> None:
        cache = await open_backend()

        async def worker(i: int) -> list[str] | None:
            await cache.put_many({key(str(i)): [str(i)]})
            return (await cache.get_many([key(str(i))]))[0]

        results = await asyncio.gather(*(worker(i) for i in range(50)))
        assert results == [[str(i)] for i in range(50)]
        await cache.close()

    run(body())


def test_parts_round_trip_apart_from_answers_and_survive_reopen(open_backend: Opener) -> None:
    """Parts are opaque bytes (any byte value), under keys that never meet the answers'."""
    part = bytes(range(256)) * 1000  # 256 kB, as a 1,024-query part is

    async def body() -> None:
        cache = await open_backend()
        name = key("1")
        assert await cache.get_part(name) is None
        await cache.put_part(name, part)
        assert await cache.get_many([name]) == [None]  # an answer under the same key: none
        await cache.put_many({name: ["2"]})
        assert await cache.get_part(name) == part
        await cache.put_part(name, b"later")  # a later part replaces the entry
        await cache.close()
        reopened = await open_backend()
        assert await reopened.get_part(name) == b"later"
        assert await reopened.get_many([name]) == [["2"]]
        await reopened.close()

    run(body())


# Keys.


def test_key_depends_on_every_input() -> None:
    base = cache_key(ENDPOINT, 10, ["1", "2"], "v1")
    variants = [
        cache_key("http://other:8000", 10, ["1", "2"], "v1"),
        cache_key(ENDPOINT, 20, ["1", "2"], "v1"),
        cache_key(ENDPOINT, 10, ["1", "2"], "v2"),
        cache_key(ENDPOINT, 10, ["1", "2"], None),
        cache_key(ENDPOINT, 10, ["2", "1"], "v1"),  # order matters
        cache_key(ENDPOINT, 10, ["1", "2", "3"], "v1"),
        cache_key(ENDPOINT, 10, ["12"], "v1"),  # no ambiguity from joining ids
        cache_key(ENDPOINT, 10, ["01", "2"], "v1"),  # leading zeros are part of the id
    ]
    assert len({base, *variants}) == len(variants) + 1
    assert cache_key(ENDPOINT + "/", 10, ("1", "2"), "v1") == base  # stable, slash-insensitive
    assert len(base) == 64 and int(base, 16) >= 0


def test_key_refuses_non_string_ids() -> None:
    with pytest.raises(TypeError):
        cache_key(ENDPOINT, 10, [1, 2], None)  # type: ignore[list-item]
    with pytest.raises(TypeError):
        cache_keys(ENDPOINT, 10, [["1"], ["2", 3]], None)  # type: ignore[list-item]


def test_keys_keep_the_v1_format_so_existing_caches_still_hit() -> None:
    # sha256 of '["recmimic-answer-v1","http://localhost:8000","v1",10,["1","é","2"]]'
    pinned = "dcc811259304061118875fc3564fb3d1fec604326a56b932458638c3129f8aea"
    assert cache_key("http://localhost:8000/", 10, ["1", "é", "2"], "v1") == pinned
    histories = [["1", "é", "2"], [], ['a"b', "\u2028", "𝄞"], ["7"] * 50]
    for tag in ("v1", None):
        batched = cache_keys("http://localhost:8000", 10, histories, tag)
        assert batched == [cache_key("http://localhost:8000", 10, h, tag) for h in histories]
    assert batched[0] != pinned  # the tag is part of the key


def test_keys_equal_the_canonical_json_hash_for_every_kind_of_id() -> None:
    """The joined fast path must hash exactly what the JSON encoder writes, escapes included."""
    odd = ['a"b', "back\\slash", "tab\t", "nl\n", "\x00", "\x1f", "\x7f", "\u2028", "𝄞", ""]
    histories = [[], [""], ["1"], ["", ""], ['","'], ["é", "日本"], *[["1", x, "2"] for x in odd]]
    endpoint = "http://localhost:8000"
    for tag in ("v1", None):
        expected = [
            hashlib.sha256(
                json.dumps(
                    ["recmimic-answer-v1", endpoint, tag, 10, h],
                    separators=(",", ":"),
                    ensure_ascii=False,
                ).encode()
            ).hexdigest()
            for h in histories
        ]
        assert cache_keys(endpoint, 10, histories, tag) == expected


# Opening.


def test_open_cache_default_and_path(tmp_path: Path) -> None:
    async def body() -> None:
        default = await open_cache(None, tmp_path / "home")
        assert isinstance(default, EmbeddedCache)
        assert default.path == tmp_path / "home" / "answers.sqlite3"
        await default.close()
        by_path = await open_cache(str(tmp_path / "x.db"), tmp_path)
        assert isinstance(by_path, EmbeddedCache) and by_path.path == tmp_path / "x.db"
        await by_path.close()
        with pytest.raises(CacheError, match="unsupported"):
            await open_cache("http://u:pw@host/x", tmp_path)

    run(body())


@needs_redis
def test_open_cache_redis() -> None:
    async def body() -> None:
        cache = await open_cache(REDIS_URL, Path("unused"))
        assert isinstance(cache, RedisCache)
        await cache.close()

    run(body())


@needs_redis
def test_redis_ttl_bounds_the_entry_life() -> None:
    namespace = f"recmimic-test:{uuid.uuid4().hex}"
    name = key("1")

    async def body() -> None:
        cache = RedisCache(REDIS_URL, namespace=namespace, ttl_s=100)
        await cache.put_many({name: ["2"]})
        await cache.close()

    run(body())
    client = redis.Redis.from_url(REDIS_URL)
    assert 0 < client.ttl(f"{namespace}:{name}") <= 100
    client.delete(f"{namespace}:{name}")
    client.close()


def test_unreachable_redis_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"redis://user:s3cret@127.0.0.1:{port}/0"

    async def body() -> None:
        with pytest.raises(CacheError) as caught:
            await open_cache(url, tmp_path)
        message = str(caught.value)
        assert "s3cret" not in message
        assert f"redis://user:***@127.0.0.1:{port}/0" in message

    run(body())


def test_redact_url() -> None:
    assert redact_url("redis://:pw@h:1/0") == "redis://:***@h:1/0"
    assert redact_url("rediss://h:1") == "rediss://h:1"
    assert redact_url("redis://u:pw@[::1]:6379") == "redis://u:***@[::1]:6379"


def test_embedded_cache_on_a_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CacheError, match="cannot open"):
        EmbeddedCache(tmp_path)


def test_embedded_cache_moves_answers_from_the_old_schema(tmp_path: Path) -> None:
    """A file written before the rowid table (hex text keys, WITHOUT ROWID) keeps its answers,
    now in the new table, and the old one is gone."""
    path = tmp_path / "answers.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE answers (key TEXT PRIMARY KEY, items TEXT NOT NULL) WITHOUT ROWID")
        db.execute("INSERT INTO answers VALUES (?, ?)", (key("1", "2"), '["3","4"]'))
    db.close()

    async def body() -> None:
        cache = EmbeddedCache(path)
        assert await cache.get_many([key("1", "2"), key("2")]) == [["3", "4"], None]
        await cache.put_many({key("2"): ["5"]})
        await cache.close()
        reopened = EmbeddedCache(path)  # a second open migrates nothing more
        assert await reopened.get_many([key("1", "2"), key("2")]) == [["3", "4"], ["5"]]
        await reopened.close()

    run(body())
    with sqlite3.connect(path) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        schema = db.execute("SELECT sql FROM sqlite_master WHERE name = 'answers'").fetchone()[0]
    db.close()
    assert tables == ["answers", "parts"]  # the old table is gone
    assert "WITHOUT ROWID" not in schema.upper()


def test_a_rebuilt_embedded_cache_gives_the_old_tables_space_back(tmp_path: Path) -> None:
    """The rebuild copies every answer, so without a VACUUM the file kept both tables."""
    path = tmp_path / "answers.sqlite3"
    answer = json.dumps([str(i) for i in range(100)], separators=(",", ":"))
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE answers (key TEXT PRIMARY KEY, items TEXT NOT NULL) WITHOUT ROWID")
        db.executemany(
            "INSERT INTO answers VALUES (?, ?)", [(key(str(i)), answer) for i in range(2000)]
        )
    db.close()
    old_size = path.stat().st_size

    async def body() -> None:
        cache = EmbeddedCache(path)
        assert await cache.get_many([key("7")]) == [json.loads(answer)]
        await cache.close()

    run(body())
    assert path.stat().st_size <= old_size  # holding both tables, it was about twice as large
