"""kill -9 under load: after a restart on the same database, every answered call has its row.

32 connections call the real proxy (`python -m proxy serve`, the mock provider; chat completions
and the Responses API in turn, every fourth call of each a stream) for a second and a half or
more (until 300 calls were answered); then the process gets SIGKILL while calls are
in flight. An answer counts when the client received it whole: a non-streamed body, or a
stream through its last event (`data: [DONE]`, `response.completed`). The proxy is started again on the same
database and must hold a row for every answered request id, for the durabilities `process`
and `power`, also when another connection held the SQLite write lock (`BEGIN EXCLUSIVE`)
during the whole load and the kill. Durability `none` may lose rows: it is only run.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from conftest import ProxyServer, fake_key, provider_env, start_proxy

pytestmark = pytest.mark.timeout(90)

CONNECTIONS = 32
LOAD_SECONDS = 1.5  # at least; then until ENOUGH calls were answered, at most MAX_LOAD_SECONDS
ENOUGH = 300
MAX_LOAD_SECONDS = 8.0
MAX_CALLS_PER_CONNECTION = 2_000  # a bound on the loop, far above what 1.5 s allows


def load_then_kill(
    proxy: ProxyServer, interrupt: Callable[[list[str]], None] | None = None
) -> tuple[list[str], list[int]]:
    """Call the proxy from 32 threads, SIGKILL it mid-load; the ids of the calls answered whole,
    and how many of them were streams of each API (chat, Responses). `interrupt` (given the ids answered so far, a list that
    keeps growing) does something else mid-load instead, and returns once the process has exited."""
    answered: list[str] = []
    streams = [0, 0]  # chat, Responses
    lock = threading.Lock()
    stop = threading.Event()

    def worker(n: int) -> None:
        with httpx.Client(base_url=proxy.v1, timeout=10) as http:
            for i in range(MAX_CALLS_PER_CONNECTION):
                if stop.is_set():
                    return
                stream, api = i % 8 < 2, i % 2  # 0: chat, 1: Responses
                said = f"call {n}-{i}"
                path, body, last = (
                    ("/chat/completions", {"messages": [{"role": "user", "content": said}]}, "data: [DONE]"),
                    ("/responses", {"input": said}, "event: response.completed"),
                )[api]
                try:
                    with http.stream("POST", path, json={"model": "mock/echo", "stream": stream, **body}) as response:
                        text = response.read().decode()
                except httpx.HTTPError:
                    if not proxy.running():
                        return
                    continue
                if response.status_code == 200 and (not stream or last in text):
                    with lock:
                        answered.append(response.headers["x-study-request-id"])
                        streams[api] += stream

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    began = time.monotonic()
    while time.monotonic() - began < MAX_LOAD_SECONDS:  # a shared disk may make power's syncs slow
        time.sleep(0.1)
        if time.monotonic() - began >= LOAD_SECONDS and len(answered) >= ENOUGH:
            break
    if interrupt is None:
        proxy.process.kill()
        proxy.process.wait(10)
    else:
        interrupt(answered)
    stop.set()
    for thread in threads:
        thread.join(15)
    return answered, streams


def lost_after_restart(proxy: ProxyServer, answered: list[str]) -> set[str]:
    again = start_proxy(proxy.directory, env={k: v for k, v in proxy.env.items() if k.startswith("STUDY_")})
    try:
        logged = {row["request_id"] for row in again.log.query("SELECT request_id FROM inference_runs")}
    finally:
        again.stop_ok()
    return set(answered) - logged


@pytest.mark.parametrize("durability", ["process", "power", "none"])
@pytest.mark.parametrize("locked", [False, True], ids=["free", "locked"])
def test_kill_9_mid_load_loses_no_answered_call(proxy_factory, durability, locked):
    proxy = proxy_factory(env={"STUDY_DURABILITY": durability})
    locker = None
    if locked:
        locker = sqlite3.connect(proxy.db_path, isolation_level=None, timeout=5)
        locker.execute("BEGIN EXCLUSIVE")
    try:
        answered, streams = load_then_kill(proxy)
    finally:
        if locker is not None:
            locker.execute("ROLLBACK")
            locker.close()
    assert len(answered) >= 50 and min(streams) >= 3, (len(answered), streams, proxy.output()[-2000:])
    lost = lost_after_restart(proxy, answered)
    print(f"durability {durability}, database {'locked' if locked else 'free'}: "
          f"{len(answered)} answered ({streams[0]} chat and {streams[1]} Responses streams), "
          f"{len(answered) - len(lost)} logged, {len(lost)} lost")
    if durability != "none":
        assert not lost, f"{len(lost)} of {len(answered)} answered calls have no row"


def test_the_journal_a_killed_proxy_leaves_holds_its_rows_and_no_key(proxy_factory, fake_upstream_server):
    """The journal holds whole rows, so it must be as free of keys as the database: calls with an
    upstream key, proxy keys and a cookie, the database locked so that the rows stay in the
    journal, then SIGKILL; the journal has every row and none of the secrets."""
    upstream_key, alice_key, cookie = fake_key("sk-test-openai"), fake_key("sk-proxy-alice"), fake_key("cookie")
    env = provider_env(fake_upstream_server, openai=upstream_key, ALICE_PROXY_KEY=alice_key)
    proxy = proxy_factory(env=env, config='[clients]\nalice = { key_env = "ALICE_PROXY_KEY" }\n')
    locker = sqlite3.connect(proxy.db_path, isolation_level=None, timeout=5)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        ids = []
        with httpx.Client(base_url=proxy.v1, timeout=10) as http:
            for i, stream in enumerate([False, True, False]):
                response = http.post("/chat/completions", json={
                    "model": "gpt-4o-mini", "stream": stream, "messages": [{"role": "user", "content": f"secret {i}"}]},
                    headers={"Authorization": f"Bearer {alice_key}", "Cookie": f"session={cookie}"})
                assert response.status_code == 200, response.text
                ids.append(response.headers["x-study-request-id"])
            refused = http.post("/chat/completions", json={"model": "gpt-4o-mini", "messages": []},
                                headers={"Authorization": f"Bearer {upstream_key}"})  # a wrong proxy key: 401, a row
            assert refused.status_code == 401
            ids.append(refused.headers["x-study-request-id"])
        proxy.process.kill()
        proxy.process.wait(10)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    journal = b"".join(p.read_bytes() for p in (proxy.directory / "log.db.journal").glob("*.jsonl"))
    assert all(request_id.encode() in journal for request_id in ids)
    for secret in (upstream_key, alice_key, cookie):
        assert secret.encode() not in journal
