"""An exact-match answer cache in memory: TTL, a size bound, least recently used out first.

`Cache` is what the handlers use: this in-process `AnswerCache`, or
`proxy.shared.redis_cache.RedisCache` shared across processes and hosts.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Sequence
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
    def __init__(self, ttl: float, max_entries: int) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, tuple[float, T]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: bytes) -> T | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires <= time.monotonic():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: bytes, value: T) -> None:
        self._entries[key] = (time.monotonic() + self.ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
