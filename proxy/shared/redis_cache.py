"""The answer cache in Redis, shared by every process and host on the same `REDIS_URL`.

Entries live under `{prefix}cache:<hex digest of the request key>` for the cache's TTL
(Redis expires them; its own `maxmemory` policy bounds the total, `max_entries` does not
apply). An answer larger than `max_entry_bytes` is not cached. Writes happen in the
background, so no answer waits for Redis. While Redis is down (`RedisHealth`), the
in-process `fallback` cache serves instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from redis.asyncio import Redis

from ..cache import AnswerCache
from .background import Background
from .health import REDIS_ERRORS, RedisHealth

T = TypeVar("T")


class RedisCache(Generic[T]):
    """`Cache` in Redis; `encode`/`decode` turn an answer into bytes and back."""

    def __init__(
        self,
        redis: Redis,
        health: RedisHealth,
        background: Background,
        fallback: AnswerCache[T],
        *,
        prefix: str,
        ttl: float,
        max_entry_bytes: int,
        encode: Callable[[T], bytes],
        decode: Callable[[bytes], T | None],
    ) -> None:
        self.redis = redis
        self.health = health
        self.background = background
        self.fallback = fallback
        self.prefix = f"{prefix}cache:"
        self.ttl_ms = max(1, int(ttl * 1000))
        self.max_entry_bytes = max_entry_bytes
        self.encode = encode
        self.decode = decode

    async def get(self, key: bytes) -> T | None:
        if not self.health.usable():
            return await self.fallback.get(key)
        try:
            data = await self.redis.get(self.prefix + key.hex())
        except REDIS_ERRORS as exc:
            self.health.failed(exc)
            return await self.fallback.get(key)
        return None if data is None else self.decode(data)

    def put(self, key: bytes, value: T) -> None:
        if not self.health.usable():
            self.fallback.put(key, value)
            return
        data = self.encode(value)
        if len(data) <= self.max_entry_bytes:
            self.background.run(self._set(key, value, data))

    async def _set(self, key: bytes, value: T, data: bytes) -> None:
        try:
            await self.redis.set(self.prefix + key.hex(), data, px=self.ttl_ms)
        except REDIS_ERRORS as exc:
            self.health.failed(exc)
            self.fallback.put(key, value)
