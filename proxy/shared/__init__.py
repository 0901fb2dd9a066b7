"""What identical requests share: the single-flight and the answer cache, in-process or in Redis.

Without `REDIS_URL` both live in the process (`SingleFlight`, `AnswerCache`), exactly as
before Redis existed: nothing of this package runs per request. With it, both go through
Redis (`redis_flight`, `redis_cache`), so that several processes and hosts share them, and
fall back to the in-process ones while Redis is away (`health`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..answers import CapturedStream, WholeAnswer, answer_size
from ..cache import AnswerCache, Cache
from ..config import Settings
from ..errors import ProxyError
from ..singleflight import Flights, SingleFlight

Flight = WholeAnswer | ProxyError
Cached = WholeAnswer | CapturedStream


@dataclass
class Sharing:
    flights: Flights[Flight]
    cache: Cache[Cached]
    closers: list[Any] = field(default_factory=list)  # what `aclose` closes, in order
    health: Any = None  # a RedisHealth, with Redis

    async def start(self) -> None:
        """Check that Redis answers (one warning if not: the proxy serves all the same)."""
        if self.health is not None:
            from .health import REDIS_ERRORS

            try:
                await self.health.ping()
            except REDIS_ERRORS as exc:
                self.health.failed(exc)

    async def aclose(self) -> None:
        for closer in self.closers:
            await closer.aclose()


def build_sharing(settings: Settings) -> Sharing:
    """In-process single-flight and cache; through Redis when `settings.redis_url` is set."""
    cache_policy = settings.cache
    local: AnswerCache[Cached] = AnswerCache(cache_policy.ttl, cache_policy.max_entries, cache_policy.max_bytes, answer_size)
    if not settings.redis_url:
        return Sharing(SingleFlight(), local)
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    from . import codec
    from .background import Background
    from .health import RedisHealth, display_redis_url
    from .redis_cache import RedisCache
    from .redis_flight import RedisFlights

    policy = settings.redis
    client = Redis.from_url(
        settings.redis_url,
        socket_timeout=policy.timeout,
        socket_connect_timeout=policy.timeout,
        retry=Retry(NoBackoff(), 0),  # a failed command falls back at once; the probe retries
    )
    health = RedisHealth(display_redis_url(settings.redis_url), client.ping, policy.retry_interval)
    background = Background()
    flights: RedisFlights[Flight] = RedisFlights(
        client, health, background, prefix=policy.prefix, encode=codec.encode, decode=codec.decode,  # type: ignore[arg-type]
        lease=policy.lease, poll=policy.poll, max_wait=settings.retry.deadline + policy.lease,
        max_entry_bytes=policy.max_entry_bytes,
    )
    cache: RedisCache[Cached] = RedisCache(
        client, health, background, local, prefix=policy.prefix, ttl=settings.cache.ttl,
        max_entry_bytes=policy.max_entry_bytes, encode=codec.encode, decode=codec.decode,  # type: ignore[arg-type]
    )
    return Sharing(flights, cache, [background, flights, health, client], health)
