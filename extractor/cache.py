"""Answer cache: a black-box answer once paid for is never paid for again.

Keys are content hashes of what determines an answer (`cache_key`), values are the top-k id
lists. Beside the answers, a cache keeps each whole chunk's finished probe-set part
(`get_part`/`put_part`, keyed by `extractor.part_memo`), so that repeating an extraction copies
parts instead of rebuilding them answer by answer. Two backends share one async contract
(`AnswerCache`): Redis when a `redis://` or `rediss://` URL is configured, so several workers
share their answers, and an embedded SQLite file otherwise, so a run with no configuration
still pays nothing when repeated.

The model tag: the black box names its model in the `X-Model-Version` header, and a key computed
with that tag differs from one computed without it. A client learns the tag first (from a cheap
probe or its first answer) and computes every key with it, so a teacher that is retrained gets a
fresh cache instead of stale answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

from extractor.ids import CANONICAL_JSON, JsonIds, encode_ids, history_json

KEY_VERSION = "recmimic-answer-v1"
REDIS_SCHEMES = ("redis://", "rediss://")
EMBEDDED_FILENAME = "answers.sqlite3"
T = TypeVar("T")
_SQLITE_CHUNK = 900  # bound parameters per SELECT, below SQLite's historical limit of 999


class CacheError(RuntimeError):
    """The cache cannot be opened or used; the message never contains a password."""


def cache_key(endpoint: str, k: int, history: Sequence[str], model_tag: str | None) -> str:
    """Hex sha256 of the canonical JSON `[KEY_VERSION, endpoint, model_tag, k, history]`.

    Canonical means compact separators and UTF-8, so the same inputs hash the same in every
    process. `endpoint` is the black box's base URL (trailing slashes ignored): the single and
    batch routes give the same answers and share entries. History order matters (it is a
    sequence, oldest first) and ids must be strings, the catalogue's own ids ("007" != "7").
    The API key is deliberately not part of the key: every key of one model gets the same answer.
    """
    return cache_keys(endpoint, k, [history], model_tag)[0]


def cache_keys(
    endpoint: str, k: int, histories: Sequence[Sequence[str]], model_tag: str | None
) -> list[str]:
    """`cache_key` of every history (see `json_cache_keys`)."""
    return json_cache_keys(endpoint, k, [history_json(history) for history in histories], model_tag)


def json_cache_keys(
    endpoint: str, k: int, history_texts: Sequence[str], model_tag: str | None
) -> list[str]:
    """`cache_keys` of histories given as their `history_json`, for a caller that keeps the
    text (the extraction run builds the probe set's history column from it). The shared head
    of the JSON array is encoded and hashed once; each history only extends a copy of that hash."""
    head = CANONICAL_JSON.encode([KEY_VERSION, endpoint.rstrip("/"), model_tag, int(k), []])
    shared = hashlib.sha256(head[:-3].encode("utf-8"))  # all before the history: drop "[]]"
    keys = []
    for text in history_texts:
        digest = shared.copy()
        digest.update(text.encode("utf-8"))
        digest.update(b"]")
        keys.append(digest.hexdigest())
    return keys


def model_tag_key(endpoint: str) -> str:
    """Where a cache keeps the model tag an endpoint's answers named last, beside its answers
    (a one-id list): a black box that names its model only in answers (not on its catalogue)
    would otherwise make every new run look answers up without a tag, and miss them all."""
    text = CANONICAL_JSON.encode([KEY_VERSION, endpoint.rstrip("/"), "model-tag"])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


async def remembered_model_tag(cache: AnswerCache, endpoint: str) -> str | None:
    """The model tag this endpoint's answers named last (`model_tag_key`), if any."""
    value = (await cache.get_many([model_tag_key(endpoint)]))[0]
    return value[0] if value and len(value) == 1 else None


async def remember_model_tag(cache: AnswerCache, endpoint: str, tag: str) -> None:
    await cache.put_many({model_tag_key(endpoint): [tag]})


class AnswerCache(Protocol):
    """What the client needs from a cache: batched reads and writes of top-k lists, under keys
    made by `cache_key` (hex digests)."""

    async def get_many(self, keys: Sequence[str]) -> list[JsonIds | None]:
        """The cached answer for each key, in the order given (as stored, decoded when read);
        None for a miss."""
        ...

    async def put_many(self, items: Mapping[str, Sequence[str]]) -> None:
        """Store answers; an existing entry for a key is replaced."""
        ...

    async def get_part(self, key: str) -> bytes | None:
        """The bytes stored under a part key (`extractor.part_memo`); None for a miss."""
        ...

    async def put_part(self, key: str, data: bytes) -> None:
        """Store a part's bytes; an existing entry for the key is replaced."""
        ...

    async def close(self) -> None:
        """Release connections and files."""
        ...


def redact_url(url: str) -> str:
    """The URL with any password replaced by `***`, fit for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 address keeps its brackets
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class EmbeddedCache:
    """Answers in one SQLite file (WAL mode): no server, shared safely by local processes.

    Every `put_many` is one transaction, so a killed process leaves either all of a batch or
    none of it. `synchronous=NORMAL` keeps committed answers across a process kill; only an
    operating-system crash or power loss may drop the last few, which costs re-paying them.
    Blocking calls run in a worker thread, one at a time, so the event loop keeps serving.

    Rows are appended to a rowid table with a unique index on the 32-byte key: an answer is
    about 1 KB, and in a table keyed by the random hash itself (WITHOUT ROWID, the schema
    before) each insert rewrote pages across the whole file: 15,000 answers took 0.32 s of CPU
    to store, now 0.06 s, and the file is a third smaller. `_migrate` moves an old file's
    answers over once. Parts live in a table of their own, `parts`.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=10000")
            if self._migrate():
                self._compact()
        except (sqlite3.Error, OSError, ValueError) as exc:
            raise CacheError(f"cannot open the embedded cache at {self.path}: {exc}") from None
        self._lock = threading.Lock()

    def _migrate(self) -> bool:
        """Create the table, or rebuild one in the old schema (hex text keys, WITHOUT ROWID)
        in one transaction, so a concurrent opener sees either schema whole; True when it
        rebuilt one."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            found = self._db.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'answers'"
            ).fetchone()
            old = found is not None and "WITHOUT ROWID" in found[0].upper()
            if old:
                self._db.execute("ALTER TABLE answers RENAME TO answers_text_keys")
            if found is None or old:
                self._db.execute(
                    "CREATE TABLE answers (key BLOB NOT NULL UNIQUE, items TEXT NOT NULL)"
                )
            if old:
                self._db.create_function("unhex", 1, bytes.fromhex, deterministic=True)
                self._db.execute(
                    "INSERT INTO answers SELECT unhex(key), items FROM answers_text_keys"
                )
                self._db.execute("DROP TABLE answers_text_keys")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS parts (key BLOB NOT NULL UNIQUE, data BLOB NOT NULL)"
            )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return old

    def _compact(self) -> None:
        """Give back the old table's pages, half the file after a rebuild (2,000 answers:
        2.6 MB kept both tables, 1.3 MB after this). Skipped while another process holds the
        file: the answers are safe either way, only the space waits for a manual VACUUM."""
        with contextlib.suppress(sqlite3.OperationalError):
            self._db.execute("VACUUM")

    def _get(self, keys: Sequence[str]) -> list[JsonIds | None]:
        found: dict[bytes, str] = {}
        binary = [bytes.fromhex(key) for key in keys]
        with self._lock:
            for start in range(0, len(binary), _SQLITE_CHUNK):
                chunk = binary[start : start + _SQLITE_CHUNK]
                marks = ",".join("?" * len(chunk))
                query = f"SELECT key, items FROM answers WHERE key IN ({marks})"
                found.update(self._db.execute(query, chunk).fetchall())
        return [None if key not in found else JsonIds(found[key]) for key in binary]

    def _put(self, items: Mapping[str, Sequence[str]]) -> None:
        rows = [(bytes.fromhex(key), encode_ids(answer)) for key, answer in items.items()]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR REPLACE INTO answers VALUES (?, ?)", rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _get_part(self, key: str) -> bytes | None:
        with self._lock:
            found = self._db.execute(
                "SELECT data FROM parts WHERE key = ?", (bytes.fromhex(key),)
            ).fetchone()
        return None if found is None else found[0]

    def _put_part(self, key: str, data: bytes) -> None:
        with self._lock:
            row = (bytes.fromhex(key), data)
            self._db.execute("INSERT OR REPLACE INTO parts VALUES (?, ?)", row)

    async def get_many(self, keys: Sequence[str]) -> list[JsonIds | None]:
        if not keys:
            return []
        return await self._in_thread("read", self._get, list(keys))

    async def put_many(self, items: Mapping[str, Sequence[str]]) -> None:
        if items:
            await self._in_thread("write", self._put, items)

    async def get_part(self, key: str) -> bytes | None:
        return await self._in_thread("read", self._get_part, key)

    async def put_part(self, key: str, data: bytes) -> None:
        await self._in_thread("write", self._put_part, key, data)

    async def _in_thread(self, action: str, call: Callable[..., T], *args: Any) -> T:
        """`call(*args)` in a worker thread, so the event loop keeps serving; an SQLite error
        becomes a CacheError saying which file and what failed."""
        try:
            return await asyncio.to_thread(call, *args)
        except sqlite3.Error as exc:
            raise CacheError(f"embedded cache {action} failed at {self.path}: {exc}") from None

    async def close(self) -> None:
        with self._lock:
            self._db.close()


async def open_cache(url_or_path: str | None, default_dir: Path) -> AnswerCache:
    """Redis for a `redis://`/`rediss://` URL (checked with a ping), else an embedded file.

    None means the no-configuration default, `default_dir/answers.sqlite3`. Any other URL
    scheme is refused rather than mistaken for a file name.
    """
    if url_or_path is None:
        return EmbeddedCache(Path(default_dir) / EMBEDDED_FILENAME)
    if url_or_path.startswith(REDIS_SCHEMES):
        from extractor.redis_cache import RedisCache  # redis-py: about 0.1 s to import here

        cache = RedisCache(url_or_path)
        try:
            await cache.ping()
        except CacheError:
            await cache.close()
            raise
        return cache
    if "://" in url_or_path:
        raise CacheError(
            f"unsupported cache URL {redact_url(url_or_path)!r}: use redis://, rediss:// "
            "or a file path"
        )
    return EmbeddedCache(url_or_path)
