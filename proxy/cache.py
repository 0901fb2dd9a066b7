"""An exact-match answer cache in memory: TTL, bounds in count and bytes, least recently used out first.

`Cache` is what the handlers use: this in-process `AnswerCache`, or
`proxy.shared.redis_cache.RedisCache` shared across processes and hosts.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

import orjson

from .routing import Route

T = TypeVar("T")


def request_key(endpoint: str, routes: Sequence[Route], identity: str, payload: dict[str, Any]) -> bytes:
    """What makes two requests the same: endpoint, routes, client identity and the canonical body."""
    digest = hashlib.sha256()
    digest.update(orjson.dumps([endpoint, [(r.provider, r.upstream_model) for r in routes], identity]))
    digest.update(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS))
    return digest.digest()


class Cache(Protocol[T]):
    async def get(self, key: bytes) -> T | None:
        """The answer stored under `key`, if it has not expired."""
        ...

    def put(self, key: bytes, value: T) -> None:
        """Store an answer; never waits (a shared cache writes in the background)."""
        ...


class AnswerCache(Generic[T]):
    def __init__(self, ttl: float, max_entries: int, max_bytes: int, size: Callable[[T], int]) -> None:
        """At most `max_entries` answers and `max_bytes` in all as `size` counts them: an
        answer larger alone is not kept (a study's embeddings can be tens of MB each)."""
        self.ttl = ttl
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.size = size
        self.bytes = 0
        self._entries: OrderedDict[bytes, tuple[float, T, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: bytes) -> T | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value, _ = entry
        if expires <= time.monotonic():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: bytes, value: T) -> None:
        size = self.size(value)
        self._drop(key)
        if size > self.max_bytes:
            return
        self._entries[key] = (time.monotonic() + self.ttl, value, size)
        self.bytes += size
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            self.bytes -= self._entries.popitem(last=False)[1][2]

    def _drop(self, key: bytes) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry[2]
