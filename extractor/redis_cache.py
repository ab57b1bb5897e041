"""The Redis backend of the answer cache (`extractor.cache`), for a `redis://` or `rediss://`
URL: several workers share their answers. A module of its own so that a run with the embedded
cache never imports redis-py.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from extractor.cache import CacheError, redact_url
from extractor.ids import JsonIds, encode_ids

_REDIS_CHUNK = 1000  # keys per MGET / SET batch inside one pipeline


class RedisCache:
    """Answers in Redis under `namespace:<key>`; reads are pipelined MGETs, writes pipelined SETs.

    `ttl_s` bounds how long answers live (None keeps them until evicted); values are compact JSON.
    Probe-set parts (`put_part`) live under `namespace:part:<key>`, with the same time to live.
    """

    def __init__(
        self,
        url: str,
        namespace: str = "recmimic:answers",
        ttl_s: int | None = None,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self.url = redact_url(url)
        self.namespace = namespace
        self.ttl_s = ttl_s
        self._client = aioredis.Redis.from_url(
            url, socket_connect_timeout=connect_timeout_s, socket_timeout=connect_timeout_s * 6
        )

    def _name(self, key: str) -> str:
        return f"{self.namespace}:{key}"

    async def ping(self) -> None:
        """Fail early, with a clear message, when the server cannot be reached."""
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            raise CacheError(f"cannot reach Redis at {self.url}: {exc}") from None

    async def get_many(self, keys: Sequence[str]) -> list[JsonIds | None]:
        if not keys:
            return []
        names = [self._name(key) for key in keys]
        with self._failing("read"):
            async with self._client.pipeline(transaction=False) as pipe:
                for start in range(0, len(names), _REDIS_CHUNK):
                    pipe.mget(names[start : start + _REDIS_CHUNK])
                chunks = await pipe.execute()
        return [None if raw is None else JsonIds(raw.decode()) for chunk in chunks for raw in chunk]

    async def put_many(self, items: Mapping[str, Sequence[str]]) -> None:
        if not items:
            return
        entries = list(items.items())
        with self._failing("write"):
            for start in range(0, len(entries), _REDIS_CHUNK):
                async with self._client.pipeline(transaction=False) as pipe:
                    for key, answer in entries[start : start + _REDIS_CHUNK]:
                        pipe.set(self._name(key), encode_ids(answer), ex=self.ttl_s)
                    await pipe.execute()

    async def get_part(self, key: str) -> bytes | None:
        with self._failing("read"):
            return await self._client.get(self._name(f"part:{key}"))

    async def put_part(self, key: str, data: bytes) -> None:
        with self._failing("write"):
            await self._client.set(self._name(f"part:{key}"), data, ex=self.ttl_s)

    @contextmanager
    def _failing(self, action: str) -> Iterator[None]:
        """A Redis or socket error as a CacheError saying what failed (the URL redacted)."""
        try:
            yield
        except (RedisError, OSError) as exc:
            raise CacheError(f"Redis {action} failed at {self.url}: {exc}") from None

    async def close(self) -> None:
        await self._client.aclose()
