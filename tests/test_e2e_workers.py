"""`serve --workers N`: N processes on one port, one log, one `/metrics`; drained on SIGTERM,
replaced when killed, with a row for every answered call.

Which worker answered is told by `/healthz` (`pid`); each `httpx.get` opens a connection of
its own, which the kernel hands to one of the workers' sockets (SO_REUSEPORT).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from conftest import ProxyServer, fake_key, minimal_env, provider_env, sse_data, unique
from redis_helpers import REDIS_URL, needs_redis, prefixed_keys, redis_config, redis_prefix  # noqa: F401
from test_e2e_kill import load_then_kill
from test_e2e_metrics import scrape, value
from postgres_helpers import POSTGRES_URL, needs_postgres

pytestmark = pytest.mark.timeout(90)

#: uvicorn's grace for calls in flight plus the recorder's last writes (proxy/cli.py, proxy/recorder.py).
DRAIN_TIMEOUT = 45.0


def workers_of(proxy: ProxyServer) -> list[int]:
    """The parent's worker processes (Linux)."""
    pid = proxy.process.pid
    return sorted(int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())


def answering_pids(proxy: ProxyServer, want: int, tries: int = 200) -> set[int]:
    """The pids `/healthz` names over fresh connections, until `want` distinct ones are seen."""
    seen: set[int] = set()
    for _ in range(tries):
        seen.add(httpx.get(proxy.url + "/healthz", timeout=5).json()["pid"])
        if len(seen) >= want:
            break
    return seen


def chat(proxy: ProxyServer, text: str, model: str = "mock/echo") -> str:
    """One call on a connection of its own; its request id."""
    response = httpx.post(proxy.v1 + "/chat/completions", timeout=15,
                          json={"model": model, "messages": [{"role": "user", "content": text}]})
    assert response.status_code == 200, response.text
    return response.headers["x-study-request-id"]


def stop_cleanly(proxy: ProxyServer) -> None:
    """SIGTERM to the parent: it drains every worker and exits 0, with nothing left in the journal."""
    assert proxy.stop(DRAIN_TIMEOUT) == 0, proxy.output()[-3000:]
    assert "Traceback" not in proxy.output(), proxy.output()
    assert not list((proxy.directory / "log.db.journal").glob("*.jsonl"))


def test_two_workers_share_the_port_and_log_every_call(proxy_factory):
    proxy = proxy_factory(extra_args=["--workers", "2"])
    workers = workers_of(proxy)
    assert len(workers) == 2 and proxy.process.pid not in workers
    assert answering_pids(proxy, 2) == set(workers)
    journals = {p.name.split("-")[0] for p in (proxy.directory / "log.db.journal").glob("*.lock")}
    assert journals == {str(pid) for pid in workers}  # a journal of its own per worker
    assert "2 workers" in proxy.output()
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda i: chat(proxy, f"call {i}"), range(80)))
    misdirected = httpx.get(proxy.url + "/healthz", headers={"Host": "evil.example"}, timeout=5)
    assert misdirected.status_code == 421  # ALLOWED_HOSTS holds in every worker
    stop_cleanly(proxy)
    logged = {row["request_id"] for row in proxy.log.query("SELECT request_id FROM inference_runs")}
    assert set(ids) <= logged and len(ids) == 80


def test_the_workers_env_is_read_and_the_flag_wins(proxy_factory):
    from_env = proxy_factory(env={"WORKERS": "3"})
    assert len(workers_of(from_env)) == 3
    assert answering_pids(from_env, 3) == set(workers_of(from_env))
    flag = proxy_factory(env={"WORKERS": "3"}, extra_args=["--workers", "1"])
    assert workers_of(flag) == []  # one process, as without workers: it answers itself
    assert answering_pids(flag, 2, tries=5) == {flag.process.pid}
    stop_cleanly(from_env)


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--workers", "0"], {}, "--workers must be 1 or more"),
    (["--workers", "-1"], {}, "--workers must be 1 or more"),
    (["--workers", "abc"], {}, "--workers must be a whole number"),
    ([], {"WORKERS": "0"}, "WORKERS must be 1 or more"),
    ([], {"WORKERS": "abc"}, "WORKERS must be a whole number"),
    (["--workers", "2", "--host", "0.0.0.0"], {}, "refusing to listen on 0.0.0.0"),
])
def test_bad_worker_counts_and_open_binds_are_refused(tmp_path, args, env, message):
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "serve", "--port", "1", "--db", str(tmp_path / "log.db"), *args],
        cwd=tmp_path, env=minimal_env(env), capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2, result
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_a_second_serve_with_workers_on_the_same_port_is_refused(proxy_factory, tmp_path):
    proxy = proxy_factory(extra_args=["--workers", "2"])
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "serve", "--port", str(proxy.port), "--db", str(tmp_path / "other.db"),
         "--no-ui", "--workers", "2"],
        cwd=tmp_path, env=minimal_env(), capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 1 and "listens on port" in result.stderr, result
    assert len(answering_pids(proxy, 2)) == 2


def test_a_killed_worker_is_replaced_and_every_answered_call_keeps_its_row(proxy_factory):
    proxy = proxy_factory(extra_args=["--workers", "2"])
    before = workers_of(proxy)
    replaced: list[int] = []

    def kill_a_worker_then_stop(answered: list[str]) -> None:
        os.kill(before[0], signal.SIGKILL)
        at_kill = len(answered)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            now = workers_of(proxy)
            if len(now) == 2 and before[0] not in now and len(answered) >= at_kill + 200:
                replaced.extend(set(now) - set(before))
                break
            time.sleep(0.1)
        assert replaced, (workers_of(proxy), len(answered), at_kill, proxy.output()[-3000:])
        assert replaced[0] in answering_pids(proxy, 2)  # the new worker serves
        proxy.process.send_signal(signal.SIGTERM)
        assert proxy.process.wait(DRAIN_TIMEOUT) == 0, proxy.output()[-3000:]

    answered, streams = load_then_kill(proxy, kill_a_worker_then_stop)
    assert len(answered) >= 300 and sum(streams) >= 20 and min(streams) >= 5, (len(answered), streams)
    assert f"worker {before[0]} was killed by SIGKILL" in proxy.output()
    stop_cleanly(proxy)
    logged = {row["request_id"] for row in proxy.log.query("SELECT request_id FROM inference_runs")}
    lost = set(answered) - logged
    assert not lost, f"{len(lost)} of {len(answered)} answered calls have no row"


def gone(pid: int) -> bool:
    """Exited (reaped, or a zombie waiting for its new parent to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_workers_drain_by_themselves_when_the_parent_is_killed(proxy_factory):
    proxy = proxy_factory(extra_args=["--workers", "2"])
    workers = workers_of(proxy)
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda i: chat(proxy, f"call {i}"), range(40)))
    proxy.process.kill()
    proxy.process.wait(10)
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while not all(gone(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(gone(pid) for pid in workers), "workers outlived their parent"
    assert not list((proxy.directory / "log.db.journal").glob("*.jsonl"))  # they wrote their rows and left
    logged = {row["request_id"] for row in proxy.log.query("SELECT request_id FROM inference_runs")}
    assert set(ids) <= logged


def test_sigterm_drains_every_worker_and_streams_in_flight_complete(proxy_factory, upstream):
    proxy = proxy_factory(env=provider_env(upstream, openai=fake_key("sk-test-openai")), extra_args=["--workers", "2"])
    model = unique("slow-stream")  # 50 chunks, 20 ms apart
    started = threading.Barrier(7)
    results: list[tuple[str, list[str]]] = []

    def stream(i: int) -> None:
        body = {"model": model, "stream": True, "messages": [{"role": "user", "content": f"stream {i}"}]}
        with httpx.stream("POST", proxy.v1 + "/chat/completions", json=body, timeout=30) as response:
            chunks = response.iter_text()
            first = next(chunks)
            started.wait(10)
            results.append((response.headers["x-study-request-id"], sse_data(first + "".join(chunks))))

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    started.wait(10)
    proxy.process.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(30)
    assert len(results) == 6
    assert all(events[-1] == "[DONE]" for _, events in results), results
    assert proxy.process.wait(DRAIN_TIMEOUT) == 0, proxy.output()[-3000:]
    stop_cleanly(proxy)
    for request_id, _ in results:
        row = proxy.log.row(request_id)
        assert row["status_code"] == 200 and row["stream"] == 1 and row["response"]


def test_metrics_are_summed_across_workers_in_a_directory_serve_makes(proxy_factory, tmp_path):
    proxy = proxy_factory(env={"TMPDIR": str(tmp_path)}, extra_args=["--workers", "2"])
    workers = workers_of(proxy)
    [directory] = tmp_path.glob("study-query-llm-metrics-*")  # no PROMETHEUS_MULTIPROC_DIR given: serve makes one
    model = f"mock/{unique('summed')}"
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: chat(proxy, f"call {i}", model), range(40)))
    deadline = time.monotonic() + 10
    while value(scrape(proxy), "requests_total", model=model, status="200") < 40 and time.monotonic() < deadline:
        time.sleep(0.2)  # each worker writes its counts every second
    # both workers counted calls, each in files of its own
    assert {p.name.rsplit("_", 1)[1].split(".")[0] for p in directory.glob("counter_*.db")} >= {str(w) for w in workers}
    for _ in range(6):  # scrapes answered by either worker see the same sums
        samples = scrape(proxy)
        assert value(samples, "requests_total", model=model, status="200") == 40
        assert value(samples, "request_duration_seconds_count", model=model) == 40
    stop_cleanly(proxy)
    assert not directory.exists()  # serve made it, serve removes it


@needs_redis
def test_identical_calls_to_different_workers_make_one_upstream_call_through_redis(proxy_factory, upstream, redis_prefix):
    env = provider_env(upstream, openai=fake_key("sk-test-openai"), REDIS_URL=REDIS_URL)
    proxy = proxy_factory(env=env, config=redis_config(redis_prefix), extra_args=["--workers", "2"])
    model = unique("slow")  # answers after 300 ms: the calls overlap
    body = {"model": model, "messages": [{"role": "user", "content": "the same question"}]}
    clients = [httpx.Client(timeout=20) for _ in range(8)]  # a connection each: both workers get some
    together = threading.Barrier(8)  # all sent within the leader's 300 ms, however busy the machine

    def call(client: httpx.Client) -> httpx.Response:
        together.wait()
        return client.post(proxy.v1 + "/chat/completions", json=body)

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(call, clients))
    for client in clients:
        client.close()
    assert [r.status_code for r in responses] == [200] * 8
    assert [r.headers.get("x-study-cache") for r in responses].count("dedup") == 7
    time.sleep(0.3)
    assert upstream.count(model) == 1
    stop_cleanly(proxy)


@needs_redis
def test_an_answer_cached_by_one_worker_is_a_hit_on_every_worker_through_redis(proxy_factory, upstream, redis_prefix):
    """Twelve calls after the first, each on a connection of its own: with the cache in each
    worker's memory, the other worker would ask upstream again (all twelve landing on the first
    one's worker has a chance of 1 in 4,096)."""
    env = provider_env(upstream, openai=fake_key("sk-test-openai"), REDIS_URL=REDIS_URL)
    proxy = proxy_factory(env=env, config=redis_config(redis_prefix), extra_args=["--workers", "2"])
    model = unique("cached")
    body = {"model": model, "messages": [{"role": "user", "content": "cache me once"}]}
    on = {"X-Study-Cache": "on"}
    first = httpx.post(proxy.v1 + "/chat/completions", json=body, headers=on, timeout=15)
    assert first.headers["x-study-cache"] == "miss"
    deadline = time.monotonic() + 5
    while not any(b":cache:" in key for key in prefixed_keys(redis_prefix)) and time.monotonic() < deadline:
        time.sleep(0.02)  # the entry is written in the background
    later = [httpx.post(proxy.v1 + "/chat/completions", json=body, headers=on, timeout=15) for _ in range(12)]
    assert [r.headers["x-study-cache"] for r in later] == ["hit"] * 12
    assert all(r.json() == first.json() for r in later)
    assert upstream.count(model) == 1
    stop_cleanly(proxy)


@needs_postgres
def test_workers_share_a_postgres_log(proxy_factory):
    proxy = proxy_factory(extra_args=["--workers", "2", "--database-url", POSTGRES_URL])
    assert len(answering_pids(proxy, 2)) == 2
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda i: chat(proxy, f"postgres call {i}"), range(60)))
    stop_cleanly(proxy)

    async def logged() -> set[str]:
        import asyncpg

        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            rows = await conn.fetch("SELECT request_id FROM inference_runs WHERE request_id = ANY($1::text[])", ids)
        finally:
            await conn.close()
        return {row["request_id"] for row in rows}

    assert asyncio.run(logged()) == set(ids)
