"""Single-flight and the answer cache shared through Redis by two proxy processes.

Each test runs two `python -m proxy serve` processes with the same `REDIS_URL` and key prefix
(each with its own SQLite log), in front of the fake upstream, whose `slow-*` models answer
after 300 ms so that identical requests sent together overlap.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import threading
import time

import httpx
import pytest

from conftest import fake_key, free_port, provider_env, unique
from fake_answers import chat_answer
from redis_helpers import REDIS_URL, OwnRedis, needs_redis, prefixed_keys, redis_config, redis_prefix  # noqa: F401

pytestmark = pytest.mark.timeout(90)

OPENAI_KEY = fake_key("sk-test-openai")
CLIENT_KEY = fake_key("sk-test-client")
HEADERS = {"Authorization": f"Bearer {CLIENT_KEY}"}


def two_proxies(proxy_factory, upstream, prefix: str, url: str = REDIS_URL, extra: str = "", **policy):
    env = provider_env(upstream, openai=OPENAI_KEY, REDIS_URL=url)
    config = redis_config(prefix, **policy) + extra
    return proxy_factory(env=env, config=config), proxy_factory(env=env, config=config)


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def send_together(calls: list[tuple[str, dict]], headers: dict[str, str] | None = None) -> list[httpx.Response]:
    """POST every (base URL, body) at once; the responses in order."""

    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=20) as client:
            return await asyncio.gather(*[
                client.post(base + "/chat/completions", json=body, headers={**HEADERS, **(headers or {})})
                for base, body in calls
            ])

    return asyncio.run(main())


def settle(upstream, expected: int, model: str) -> int:
    upstream.wait_count(expected, model, timeout=10)
    time.sleep(0.3)
    return upstream.count(model)


@needs_redis
def test_identical_requests_across_two_processes_make_one_upstream_call(proxy_factory, upstream, redis_prefix):
    a, b = two_proxies(proxy_factory, upstream, redis_prefix)
    model = unique("slow")
    body = {"model": model, "messages": ask("one answer for all")}
    responses = send_together([(server.v1, body) for server in (a, b) * 4])

    assert settle(upstream, 1, model) == 1
    assert [r.status_code for r in responses] == [200] * 8
    assert all(r.json() == responses[0].json() for r in responses)
    assert responses[0].json()["choices"][0]["message"]["content"] == chat_answer("one answer for all")
    assert sorted(r.headers.get("x-study-cache", "") for r in responses).count("dedup") == 7

    rows = [server.log.wait_row(r.headers["x-study-request-id"]) for server, r in zip((a, b) * 4, responses)]
    assert sum(r["cache"] == "dedup" for r in rows) == 7
    [leader] = [r for r in rows if r["cache"] != "dedup"]
    assert leader["attempts"] == 1
    assert all(r["attempts"] == 0 for r in rows if r["cache"] == "dedup")
    assert all(r["status_code"] == 200 and r["response"] == chat_answer("one answer for all") for r in rows)


@needs_redis
def test_the_cache_is_shared_and_keyed_by_hashes_only(proxy_factory, upstream, redis_prefix):
    a, b = two_proxies(proxy_factory, upstream, redis_prefix)
    model, text = unique("cached"), unique("cache me once")
    body = {"model": model, "messages": ask(text)}
    on = {"X-Study-Cache": "on"}
    first = httpx.post(a.v1 + "/chat/completions", json=body, headers={**HEADERS, **on}, timeout=15)
    assert first.headers["x-study-cache"] == "miss"
    deadline = time.monotonic() + 5
    while not any(b":cache:" in key for key in prefixed_keys(redis_prefix)) and time.monotonic() < deadline:
        time.sleep(0.02)  # the entry is written in the background
    second = httpx.post(b.v1 + "/chat/completions", json=body, headers={**HEADERS, **on}, timeout=15)
    assert second.headers["x-study-cache"] == "hit"
    assert second.json() == first.json()
    assert settle(upstream, 1, model) == 1
    row = b.log.wait_row(second.headers["x-study-request-id"])
    assert (row["cache"], row["attempts"], row["provider"]) == ("hit", 0, "openai")

    # Another key is another identity: no shared entry.
    other = httpx.post(b.v1 + "/chat/completions", json=body, timeout=15,
                       headers={"Authorization": f"Bearer {fake_key('sk-test-other')}", **on})
    assert other.headers["x-study-cache"] == "miss"

    keys = prefixed_keys(redis_prefix)
    assert keys
    for key, value in keys.items():
        # a lease (freed in the background after its answer), a flight's answer, a cache entry
        assert re.fullmatch(rb"(cache:[0-9a-f]{64}|flight:\{[0-9a-f]{64}\}(:answer:[0-9a-f]{32})?)", key[len(redis_prefix):]), key
        for secret in (OPENAI_KEY, CLIENT_KEY):
            assert secret.encode() not in key and secret.encode() not in (value or b"")


@needs_redis
def test_answers_over_the_size_bound_are_not_cached(proxy_factory, upstream, redis_prefix):
    a, b = two_proxies(proxy_factory, upstream, redis_prefix, max_entry_bytes=200)
    model = unique("big")
    body = {"model": model, "messages": ask("an answer longer than two hundred bytes")}
    on = {**HEADERS, "X-Study-Cache": "on"}
    first = httpx.post(a.v1 + "/chat/completions", json=body, headers=on, timeout=15)
    time.sleep(0.3)
    second = httpx.post(b.v1 + "/chat/completions", json=body, headers=on, timeout=15)
    assert (first.headers["x-study-cache"], second.headers["x-study-cache"]) == ("miss", "miss")
    assert settle(upstream, 2, model) == 2
    assert not any(b":cache:" in key for key in prefixed_keys(redis_prefix))


@needs_redis
def test_followers_call_upstream_themselves_when_the_leader_dies(proxy_factory, upstream, redis_prefix):
    a, b = two_proxies(proxy_factory, upstream, redis_prefix)
    model = unique("hang-once")  # the first call never answers, the next one does
    body = {"model": model, "messages": ask("who answers")}
    results: dict[str, object] = {}

    def call(name: str, base: str) -> None:
        started = time.monotonic()
        try:
            response = httpx.post(base + "/chat/completions", json=body, headers=HEADERS, timeout=20)
            results[name] = (response, time.monotonic() - started)
        except httpx.HTTPError as exc:
            results[name] = exc

    leader = threading.Thread(target=call, args=("leader", a.v1))
    leader.start()
    assert upstream.wait_count(1, model) == 1  # a leads: its lease is taken, its call hangs
    follower = threading.Thread(target=call, args=("follower", b.v1))
    follower.start()
    time.sleep(0.3)  # b follows a's flight
    a.process.kill()  # a dies with the lease; it runs out after 1 s
    follower.join(20)
    leader.join(20)

    response, waited = results["follower"]  # type: ignore[misc]
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == chat_answer("who answers")
    assert waited > 0.8  # it waited for the lease to run out before calling itself
    assert upstream.count(model) == 2
    row = b.log.wait_row(response.headers["x-study-request-id"])
    assert (row["cache"], row["attempts"]) == (None, 1)
    assert "Traceback" not in b.output()


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server binary to start and stop")
def test_redis_going_away_degrades_to_per_process_and_comes_back(proxy_factory, upstream, tmp_path):
    redis = OwnRedis(free_port(), tmp_path)
    redis.start()
    try:
        a, b = two_proxies(proxy_factory, upstream, "sqllm-own:", url=redis.url)
        model = unique("slow")
        body = {"model": model, "messages": ask("before")}
        assert [r.status_code for r in send_together([(a.v1, body), (b.v1, body)] * 2)] == [200] * 4
        assert settle(upstream, 1, model) == 1

        redis.stop()
        model = unique("slow")
        during = {"model": model, "messages": ask("during")}
        for _ in range(2):  # identical concurrent calls, cache on: every one answered
            responses = send_together([(a.v1, during), (b.v1, during)] * 2, {"X-Study-Cache": "on"})
            assert [r.status_code for r in responses] == [200] * 4
            assert all(r.json()["choices"][0]["message"]["content"] == chat_answer("during") for r in responses)
        assert upstream.count(model) == 2  # one call per process: within each, still one flight and a cache
        for server in (a, b):
            assert server.output().count("Redis at redis://127.0.0.1") == 1, server.output()
            assert "cannot be used" in server.output()

        redis.start()
        deadline = time.monotonic() + 15
        while not all("answers again" in s.output() for s in (a, b)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert all("answers again" in s.output() for s in (a, b)), a.output() + b.output()
        model = unique("slow")
        after = {"model": model, "messages": ask("after")}
        assert [r.status_code for r in send_together([(a.v1, after), (b.v1, after)] * 2)] == [200] * 4
        assert settle(upstream, 1, model) == 1
        for server in (a, b):
            assert "Traceback" not in server.output(), server.output()
    finally:
        redis.stop()
