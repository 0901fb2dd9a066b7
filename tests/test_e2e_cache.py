"""Single-flight de-duplication and the answer cache, end to end.

One proxy for the module with two proxy keys (alice, bob), the cache off by default and an
alias `cheap` that turns it on; a second proxy (per test) with the cache on everywhere, a
one-second TTL and room for two entries. The fake upstream's `slow-*` models answer after
300 ms, so identical requests sent together overlap upstream.
"""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from conftest import fake_key, provider_env, unique
from fake_answers import chat_answer

pytestmark = pytest.mark.timeout(60)

OPENAI_KEY = fake_key("sk-test-openai")
ALICE_KEY = fake_key("sk-test-alice")
BOB_KEY = fake_key("sk-test-bob")

CONFIG = """
[retry]
backoff_base = 0.05
backoff_max = 0.2

[cache]
enabled = false
ttl = 3600
max_entries = 1000

[clients]
alice = { key_env = "ALICE_PROXY_KEY" }
bob = { key_env = "BOB_PROXY_KEY" }

[aliases.cheap]
routes = ["openai/gpt-4o-mini"]
cache = true
"""


@pytest.fixture(scope="module")
def proxy(module_proxy_factory, fake_upstream_server):
    env = provider_env(fake_upstream_server, openai=OPENAI_KEY, ALICE_PROXY_KEY=ALICE_KEY, BOB_PROXY_KEY=BOB_KEY)
    return module_proxy_factory(env=env, config=CONFIG)


def sdk(proxy, key: str = ALICE_KEY) -> OpenAI:
    return OpenAI(base_url=proxy.v1, api_key=key, max_retries=0, timeout=15)


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def post(proxy, body: dict, key: str = ALICE_KEY, headers: dict[str, str] | None = None,
         timeout: float = 15) -> httpx.Response:
    return httpx.post(proxy.v1 + "/chat/completions", json=body, timeout=timeout,
                      headers={"Authorization": f"Bearer {key}", **(headers or {})})


def concurrently(proxy, calls: list[tuple[str, dict]], headers: dict[str, str] | None = None) -> list:
    """Send every (key, body) at once through AsyncOpenAI; the raw responses, in order."""

    async def main() -> list:
        clients = {key: AsyncOpenAI(base_url=proxy.v1, api_key=key, max_retries=0, timeout=15)
                   for key in {key for key, _ in calls}}
        try:
            return await asyncio.gather(*[
                clients[key].chat.completions.with_raw_response.create(**body, extra_headers=headers or {})
                for key, body in calls
            ])
        finally:
            for client in clients.values():
                await client.close()

    return asyncio.run(main())


def settle(upstream, expected: int, model: str | None = None, content: str | None = None) -> int:
    upstream.wait_count(expected, model, content, timeout=5)
    time.sleep(0.3)
    return upstream.count(model, content)


# --------------------------------------------------------------------------------------
# Single-flight
# --------------------------------------------------------------------------------------


def test_identical_concurrent_requests_make_one_upstream_call(proxy, upstream):
    model = unique("slow")
    body = {"model": model, "messages": ask("same question")}
    raws = concurrently(proxy, [(ALICE_KEY, body)] * 8)

    assert settle(upstream, 1, model) == 1
    answers = [raw.http_response.json() for raw in raws]
    assert all(answer == answers[0] for answer in answers)
    assert answers[0]["choices"][0]["message"]["content"] == chat_answer("same question")
    caches = sorted(raw.headers.get("x-study-cache", "") for raw in raws)
    assert caches.count("dedup") == 7, caches
    assert caches[0] in ("", "miss"), caches

    rows = {raw.headers["x-study-request-id"]: proxy.log.wait_row(raw.headers["x-study-request-id"]) for raw in raws}
    assert len(rows) == 8
    followers = [r for r in rows.values() if r["cache"] == "dedup"]
    [leader] = [r for r in rows.values() if r["cache"] != "dedup"]
    assert len(followers) == 7
    assert leader["cache"] in (None, "miss")
    assert leader["attempts"] == 1 and len(proxy.log.attempts(leader["request_id"])) == 1
    for row in followers:
        assert row["attempts"] == 0
        assert proxy.log.attempts(row["request_id"]) == []
    for row in rows.values():
        assert (row["status_code"], row["provider"], row["client"]) == (200, "openai", "alice")
        assert row["response"] == chat_answer("same question")
    for raw in raws:
        expected = "0" if raw.headers.get("x-study-cache") == "dedup" else "1"
        assert raw.headers["x-study-attempts"] == expected


def test_different_bodies_are_separate_calls(proxy, upstream):
    model = unique("slow")
    raws = concurrently(proxy, [(ALICE_KEY, {"model": model, "messages": ask(f"question {i}")}) for i in range(4)])
    assert settle(upstream, 4, model) == 4
    assert all("x-study-cache" not in raw.headers for raw in raws)
    for i, raw in enumerate(raws):
        assert raw.parse().choices[0].message.content == chat_answer(f"question {i}")
        assert proxy.log.wait_row(raw.headers["x-study-request-id"])["cache"] is None


def test_different_client_keys_are_not_merged(proxy, upstream):
    model = unique("slow")
    body = {"model": model, "messages": ask("whose question")}
    raws = concurrently(proxy, [(ALICE_KEY, body), (BOB_KEY, body), (ALICE_KEY, body), (BOB_KEY, body)])
    assert settle(upstream, 2, model) == 2
    rows = [proxy.log.wait_row(raw.headers["x-study-request-id"]) for raw in raws]
    assert sorted((r["client"], r["cache"] or "") for r in rows) == [
        ("alice", ""), ("alice", "dedup"), ("bob", ""), ("bob", "dedup")]


def test_streams_are_not_deduplicated(proxy, upstream):
    model = unique("slow")
    body = {"model": model, "messages": ask("stream me"), "stream": True}

    async def main() -> list[str]:
        async with AsyncOpenAI(base_url=proxy.v1, api_key=ALICE_KEY, max_retries=0, timeout=15) as client:
            async def one() -> str:
                stream = await client.chat.completions.create(**body)
                return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            return await asyncio.gather(*[one() for _ in range(3)])

    texts = asyncio.run(main())
    assert texts == [chat_answer("stream me")] * 3
    assert settle(upstream, 3, model) == 3


def _call_in_thread(proxy, body: dict, timeout: float, results: dict, name: str, session: str) -> threading.Thread:
    def run() -> None:
        try:
            results[name] = post(proxy, body, headers={"X-Study-Session": session}, timeout=timeout)
        except httpx.TimeoutException:
            results[name] = "gone"

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _wait_rows(proxy, session: str, n: int, timeout: float = 5.0) -> list:
    deadline = time.monotonic() + timeout
    while len(rows := proxy.log.rows("session_id = ?", (session,))) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    return rows


def test_a_follower_leaving_does_not_cancel_the_call_for_the_others(proxy, upstream):
    model, session = unique("slow"), unique("session")
    body = {"model": model, "messages": ask("I will wait")}
    results: dict = {}
    threads = [_call_in_thread(proxy, body, 15, results, "leader", session)]
    assert upstream.wait_count(1, model) == 1  # the leader's call is under way upstream
    threads.append(_call_in_thread(proxy, body, 0.1, results, "quitter", session))
    threads += [_call_in_thread(proxy, body, 15, results, f"follower{i}", session) for i in range(2)]
    for thread in threads:
        thread.join(15)

    assert results["quitter"] == "gone"
    answered = [results[name] for name in ("leader", "follower0", "follower1")]
    assert [r.status_code for r in answered] == [200, 200, 200]
    assert all(r.json() == answered[0].json() for r in answered)
    assert [r.headers.get("x-study-cache") for r in answered[1:]] == ["dedup", "dedup"]
    assert settle(upstream, 1, model) == 1
    rows = _wait_rows(proxy, session, 4)  # the quitter has its row too
    assert len(rows) == 4, [dict(r) for r in rows]
    assert sum(r["cache"] == "dedup" for r in rows) == 3


def test_the_leader_leaving_does_not_cancel_the_call_for_the_others(proxy, upstream):
    model, session = unique("slow"), unique("session")
    body = {"model": model, "messages": ask("the leader leaves")}
    results: dict = {}
    threads = [_call_in_thread(proxy, body, 0.1, results, "leader", session)]
    assert upstream.wait_count(1, model) == 1
    threads += [_call_in_thread(proxy, body, 15, results, f"follower{i}", session) for i in range(2)]
    for thread in threads:
        thread.join(15)

    assert results["leader"] == "gone"
    followers = [results["follower0"], results["follower1"]]
    assert [r.status_code for r in followers] == [200, 200]
    assert followers[0].json()["choices"][0]["message"]["content"] == chat_answer("the leader leaves")
    assert [r.headers.get("x-study-cache") for r in followers] == ["dedup", "dedup"]
    assert settle(upstream, 1, model) == 1
    assert upstream.calls(model)[0].completed
    rows = _wait_rows(proxy, session, 3)
    assert len(rows) == 3, [dict(r) for r in rows]


# --------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------


def test_cache_on_header_second_call_is_a_hit(proxy, upstream):
    model, text = unique("cached"), unique("cache me")
    client = sdk(proxy)
    on = {"X-Study-Cache": "on"}
    first = client.chat.completions.with_raw_response.create(model=model, messages=ask(text), extra_headers=on)
    second = client.chat.completions.with_raw_response.create(model=model, messages=ask(text), extra_headers=on)

    assert first.headers["x-study-cache"] == "miss"
    assert second.headers["x-study-cache"] == "hit"
    assert second.headers["x-study-attempts"] == "0"
    assert second.http_response.json() == first.http_response.json()
    assert second.parse().choices[0].message.content == chat_answer(text)
    assert settle(upstream, 1, model) == 1

    row1 = proxy.log.wait_row(first.headers["x-study-request-id"])
    row2 = proxy.log.wait_row(second.headers["x-study-request-id"])
    assert (row1["cache"], row1["attempts"], row1["status_code"]) == ("miss", 1, 200)
    assert (row2["cache"], row2["attempts"], row2["status_code"]) == ("hit", 0, 200)
    assert proxy.log.attempts(row2["request_id"]) == []
    assert row2["response"] == row1["response"] == chat_answer(text)
    assert (row2["provider"], row2["upstream_model"], row2["client"]) == ("openai", model, "alice")


def test_cache_is_off_by_default(proxy, upstream):
    model = unique("uncached")
    body = {"model": model, "messages": ask("again and again")}
    responses = [post(proxy, body) for _ in range(2)]
    assert all("x-study-cache" not in r.headers for r in responses)
    assert settle(upstream, 2, model) == 2
    assert [proxy.log.wait_row(r.headers["x-study-request-id"])["cache"] for r in responses] == [None, None]


def test_cache_refresh_calls_upstream_again(proxy, upstream):
    model = unique("refreshed")
    body = {"model": model, "messages": ask("fresh please")}
    first = post(proxy, body, headers={"X-Study-Cache": "on"})
    refreshed = post(proxy, body, headers={"X-Study-Cache": "refresh"})
    assert refreshed.status_code == 200
    assert refreshed.headers.get("x-study-cache") != "hit"
    assert settle(upstream, 2, model) == 2
    row = proxy.log.wait_row(refreshed.headers["x-study-request-id"])
    assert row["cache"] != "hit" and row["attempts"] == 1
    # The refreshed entry answers the next lookup.
    third = post(proxy, body, headers={"X-Study-Cache": "on"})
    assert third.headers["x-study-cache"] == "hit"
    assert third.json() == refreshed.json() == first.json()
    assert settle(upstream, 2, model) == 2


def test_alias_with_cache_on_and_the_off_header(proxy, upstream):
    text = unique("cheap question")
    body = {"model": "cheap", "messages": ask(text)}
    first, second = post(proxy, body), post(proxy, body)
    assert (first.headers["x-study-cache"], second.headers["x-study-cache"]) == ("miss", "hit")
    assert second.json() == first.json()
    assert settle(upstream, 1, content=text) == 1
    assert upstream.calls(content=text)[0].json["model"] == "gpt-4o-mini"
    row = proxy.log.wait_row(second.headers["x-study-request-id"])
    assert (row["model"], row["cache"], row["attempts"]) == ("cheap", "hit", 0)

    off = post(proxy, body, headers={"X-Study-Cache": "off"})
    assert off.status_code == 200 and "x-study-cache" not in off.headers
    assert settle(upstream, 2, content=text) == 2
    assert proxy.log.wait_row(off.headers["x-study-request-id"])["cache"] is None


def test_different_client_keys_never_share_cache_entries(proxy, upstream):
    model = unique("shared")
    body = {"model": model, "messages": ask("mine or yours")}
    on = {"X-Study-Cache": "on"}
    alice = post(proxy, body, ALICE_KEY, on)
    bob = post(proxy, body, BOB_KEY, on)
    assert (alice.headers["x-study-cache"], bob.headers["x-study-cache"]) == ("miss", "miss")
    assert settle(upstream, 2, model) == 2
    assert post(proxy, body, ALICE_KEY, on).headers["x-study-cache"] == "hit"
    assert post(proxy, body, BOB_KEY, on).headers["x-study-cache"] == "hit"
    assert settle(upstream, 2, model) == 2


def test_only_successful_answers_are_cached(proxy, upstream):
    model = unique("fail-400")
    body = {"model": model, "messages": ask("still bad")}
    responses = [post(proxy, body, headers={"X-Study-Cache": "on"}) for _ in range(2)]
    assert [r.status_code for r in responses] == [400, 400]
    assert all(r.headers.get("x-study-cache") != "hit" for r in responses)
    assert settle(upstream, 2, model) == 2
    assert proxy.log.wait_row(responses[1].headers["x-study-request-id"])["cache"] != "hit"


def test_a_cached_stream_replays_as_a_stream(proxy, upstream):
    model, text = unique("streamed"), unique("stream and cache")
    client = sdk(proxy)

    def stream_once():
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=ask(text), stream=True, extra_headers={"X-Study-Cache": "on"})
        chunks = list(raw.parse())
        return raw, chunks, "".join((c.choices[0].delta.content or "") for c in chunks if c.choices)

    first, first_chunks, first_text = stream_once()
    second, second_chunks, second_text = stream_once()
    assert first_text == second_text == chat_answer(text)
    assert (first.headers["x-study-cache"], second.headers["x-study-cache"]) == ("miss", "hit")
    assert second.headers["content-type"].startswith("text/event-stream")
    assert len(second_chunks) > 1
    assert all(c.object == "chat.completion.chunk" for c in second_chunks)
    assert all(c.usage is None for c in second_chunks)  # the client did not ask for usage
    assert settle(upstream, 1, model) == 1

    row = proxy.log.wait_row(second.headers["x-study-request-id"])
    assert (row["stream"], row["cache"], row["attempts"], row["status_code"]) == (1, "hit", 0, 200)
    assert row["response"] == chat_answer(text)
    assert proxy.log.wait_row(first.headers["x-study-request-id"])["cache"] == "miss"


def test_unauthenticated_requests_are_never_answered_from_cache(proxy, upstream):
    model = unique("guarded")
    body = {"model": model, "messages": ask("guarded")}
    assert post(proxy, body, headers={"X-Study-Cache": "on"}).status_code == 200
    with pytest.raises(openai.AuthenticationError):
        sdk(proxy, "sk-wrong").chat.completions.create(**body, extra_headers={"X-Study-Cache": "on"})
    assert settle(upstream, 1, model) == 1


def test_ttl_size_bound_and_config_default(proxy_factory, fake_upstream_server, upstream):
    config = """
[cache]
enabled = true
ttl = 1
max_entries = 2
"""
    proxy = proxy_factory(env=provider_env(fake_upstream_server, openai=OPENAI_KEY), config=config)
    model = unique("ttl")

    def call(text: str, headers: dict[str, str] | None = None) -> httpx.Response:
        response = post(proxy, {"model": model, "messages": ask(text)}, headers=headers)
        assert response.status_code == 200
        return response

    # On for every request by config; `off` opts out.
    assert call("a").headers["x-study-cache"] == "miss"
    assert call("a").headers["x-study-cache"] == "hit"
    off = call("a", {"X-Study-Cache": "off"})
    assert "x-study-cache" not in off.headers
    assert proxy.log.wait_row(off.headers["x-study-request-id"])["cache"] is None
    assert upstream.count(model, "a") == 2

    # Two entries at most: a third pushes out the least recently used ("a").
    assert call("b").headers["x-study-cache"] == "miss"
    assert call("c").headers["x-study-cache"] == "miss"
    assert call("a").headers["x-study-cache"] == "miss"
    assert call("c").headers["x-study-cache"] == "hit"
    assert upstream.count(model, "a") == 3

    # After the TTL, an entry is gone.
    time.sleep(1.3)
    assert call("c").headers["x-study-cache"] == "miss"
    assert upstream.count(model, "c") == 2


def test_an_answer_larger_than_the_caches_bytes_is_not_kept(proxy_factory, fake_upstream_server, upstream):
    proxy = proxy_factory(env=provider_env(fake_upstream_server, openai=OPENAI_KEY),
                          config="[cache]\nenabled = true\nmax_bytes = 4000\n")
    model = unique("bytes")

    def cache_state(text: str) -> str:
        response = post(proxy, {"model": model, "messages": ask(text)})
        assert response.status_code == 200
        return response.headers["x-study-cache"]

    long = "long " * 1000  # the fake quotes it: a 5 KB answer
    assert [cache_state(long), cache_state(long)] == ["miss", "miss"]
    assert [cache_state("short"), cache_state("short")] == ["miss", "hit"]
    assert upstream.count(model, long) == 2 and upstream.count(model, "short") == 1


def test_the_server_output_holds_no_traceback(proxy):
    """Last in the module: nothing above made the proxy log a traceback."""
    output = proxy.output()
    assert "Traceback" not in output, output
