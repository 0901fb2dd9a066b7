"""`RedisFlights` and `RedisCache` in one process against the machine's Redis: two instances
with separate clients stand for two processes. Their edge cases: an answer too large to share,
a leader whose call fails, a cache entry over the bound, and a Redis that is not there."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from redis.asyncio import Redis

from proxy.answers import WholeAnswer, answer_size
from proxy.cache import AnswerCache
from proxy.config import load_settings
from proxy.shared import build_sharing, codec
from proxy.shared.background import Background
from proxy.shared.health import RedisHealth
from proxy.shared.redis_cache import RedisCache
from proxy.shared.redis_flight import RedisFlights
from redis_helpers import REDIS_URL, free_port_redis_url, needs_redis, redis_prefix  # noqa: F401

pytestmark = pytest.mark.timeout(30)

ANSWER = WholeAnswer(200, {"content-type": "application/json"}, b'{"ok": true}', "openai", "gpt-4o-mini")


def flights(prefix: str, url: str = REDIS_URL, max_entry_bytes: int = 1 << 20) -> tuple[RedisFlights[Any], Redis, Background]:
    client = Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    health = RedisHealth(url, client.ping, retry_interval=1.0)
    background = Background()
    flight: RedisFlights[Any] = RedisFlights(
        client, health, background, prefix=prefix, encode=codec.encode, decode=codec.decode,
        lease=1.0, poll=0.05, max_wait=10.0, max_entry_bytes=max_entry_bytes,
    )
    return flight, client, background


async def close(*parts: Any) -> None:
    for part in parts:
        await part.aclose()


@needs_redis
def test_an_answer_too_large_to_share_makes_the_followers_call_themselves(redis_prefix):
    async def go() -> tuple[list[tuple[Any, bool]], int]:
        (a, ca, ba), (b, cb, bb) = flights(redis_prefix, max_entry_bytes=10), flights(redis_prefix, max_entry_bytes=10)
        calls = []

        async def call() -> WholeAnswer:
            calls.append(1)
            await asyncio.sleep(0.2)
            return ANSWER

        first = asyncio.create_task(a.run(b"k" * 32, call))
        await asyncio.sleep(0.05)
        results = [await b.run(b"k" * 32, call), await first]
        await close(ba, bb, a, b, ca, cb)
        return results, len(calls)

    results, calls = asyncio.run(go())
    assert calls == 2
    assert results == [(ANSWER, True), (ANSWER, True)]


@needs_redis
def test_a_leader_whose_call_fails_hands_the_flight_on(redis_prefix):
    async def go() -> tuple[Any, int]:
        (a, ca, ba), (b, cb, bb) = flights(redis_prefix), flights(redis_prefix)
        calls = []

        async def failing() -> WholeAnswer:
            calls.append("a")
            await asyncio.sleep(0.2)
            raise RuntimeError("a bug in the leader")

        async def working() -> WholeAnswer:
            calls.append("b")
            return ANSWER

        first = asyncio.create_task(a.run(b"f" * 32, failing))
        await asyncio.sleep(0.05)
        result = await b.run(b"f" * 32, working)
        with pytest.raises(RuntimeError):
            await first
        await close(ba, bb, a, b, ca, cb)
        return result, len(calls)

    result, calls = asyncio.run(go())
    assert result == (ANSWER, True) and calls == 2


@needs_redis
def test_the_cache_skips_entries_over_the_bound(redis_prefix):
    async def go() -> tuple[Any, Any]:
        client = Redis.from_url(REDIS_URL)
        health = RedisHealth(REDIS_URL, client.ping, 1.0)
        background = Background()
        cache: RedisCache[Any] = RedisCache(client, health, background, AnswerCache(60, 10, 1 << 20, answer_size), prefix=redis_prefix, ttl=60,
                                            max_entry_bytes=200, encode=codec.encode, decode=codec.decode)
        big = WholeAnswer(200, {}, b"x" * 500, "openai", "m")
        cache.put(b"s" * 32, ANSWER)
        cache.put(b"b" * 32, big)
        await background.aclose()
        found = await cache.get(b"s" * 32), await cache.get(b"b" * 32)
        await close(health, client)
        return found

    assert asyncio.run(go()) == (ANSWER, None)


def test_no_redis_at_start_means_one_warning_and_in_process_sharing(caplog):
    url = free_port_redis_url()

    async def go() -> list[tuple[Any, bool]]:
        sharing = build_sharing(load_settings({"REDIS_URL": url}))
        await sharing.start()
        calls = []

        async def call() -> WholeAnswer:
            calls.append(1)
            await asyncio.sleep(0.05)
            return ANSWER

        results = await asyncio.gather(*(sharing.flights.run(b"n" * 32, call) for _ in range(4)))
        sharing.cache.put(b"c" * 32, ANSWER)
        hit = await sharing.cache.get(b"c" * 32)
        await sharing.aclose()
        assert len(calls) == 1 and hit == ANSWER
        return results

    with caplog.at_level(logging.WARNING, logger="proxy.redis"):
        results = asyncio.run(go())
    assert sorted(leader for _, leader in results) == [False, False, False, True]
    warnings = [r for r in caplog.records if "cannot be used" in r.getMessage()]
    assert len(warnings) == 1
