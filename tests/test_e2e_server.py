"""The server as a process: start-up output, the UI mount, /healthz, SIGTERM draining the recorder."""

from __future__ import annotations

import signal
import sqlite3
import threading
import time

import httpx
import pytest
from openai import OpenAI

from conftest import fake_key, provider_env
from fake_failures import slow_answer

pytestmark = pytest.mark.timeout(90)

CLIENT_KEY = fake_key("sk-test-client")


def test_start_prints_urls_and_serves_ui(proxy_factory):
    proxy = proxy_factory(ui=True)
    output = proxy.output()
    assert f"http://127.0.0.1:{proxy.port}" in output
    assert f"http://127.0.0.1:{proxy.port}/ui" in output
    health = httpx.get(proxy.url + "/healthz", timeout=5)
    assert health.status_code == 200 and isinstance(health.json(), dict)
    # Datasette under /ui/ sees the log.
    client = OpenAI(base_url=proxy.v1, api_key=CLIENT_KEY, max_retries=0, timeout=10)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "ui"}])
    request_id = raw.headers["x-study-request-id"]
    proxy.log.wait_row(request_id)
    page = httpx.get(proxy.url + "/ui/", timeout=10, follow_redirects=True)
    assert page.status_code == 200
    databases = httpx.get(proxy.url + "/ui/-/databases.json", timeout=10).json()
    names = [d["name"] for d in databases if not d.get("is_memory")]
    assert len(names) == 1, databases
    found = httpx.get(f"{proxy.url}/ui/{names[0]}/inference_runs.json",
                      params={"_shape": "array", "request_id": request_id}, timeout=10)
    assert found.status_code == 200, found.text[:500]
    assert [r["request_id"] for r in found.json()] == [request_id]


def test_no_ui_flag_leaves_ui_unmounted_and_log_is_wal_sqlite(proxy_factory):
    proxy = proxy_factory(ui=False)
    assert f"http://127.0.0.1:{proxy.port}" in proxy.output()
    assert httpx.get(proxy.url + "/ui/", timeout=5).status_code == 404
    httpx.post(proxy.v1 + "/chat/completions", timeout=10,
               json={"model": "m", "messages": [{"role": "user", "content": "wal"}]})
    proxy.log.wait_count(1)
    conn = sqlite3.connect(proxy.db_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
    finally:
        conn.close()
    assert {"inference_runs", "attempts", "inference_runs_fts"} <= tables


def test_sigterm_under_load_loses_no_answered_request(proxy_factory, fake_upstream_server):
    """Clients keep calling (plain and streamed) while SIGTERM arrives: every answer has its row."""
    proxy = proxy_factory(env=provider_env(fake_upstream_server, openai=fake_key("sk-test-openai")))
    answered: list[str] = []
    started = threading.Event()

    def worker(i: int) -> None:
        stream = i < 2
        body = {"model": "slow-stream-load" if stream else "gpt-4o-mini", "stream": stream,
                "messages": [{"role": "user", "content": f"load {i}"}]}
        with httpx.Client(timeout=10) as http:
            while proxy.running():
                try:
                    response = http.post(proxy.v1 + "/chat/completions", json=body)
                except httpx.HTTPError:
                    return  # the server stopped listening
                if response.status_code == 200:
                    answered.append(response.headers["x-study-request-id"])
                    started.set()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    assert started.wait(10)
    time.sleep(0.3)  # the streams are mid-way now
    proxy.stop_ok()
    for thread in threads:
        thread.join(15)
    assert len(answered) > 10
    row_ids = {r["request_id"] for r in proxy.log.rows()}
    missing = set(answered) - row_ids
    assert not missing, f"{len(missing)} of {len(answered)} answered requests have no row"


def test_sigterm_drains_rows_held_back_by_a_locked_database(proxy_factory):
    """While another process holds the write lock, answers still go out at once (the recorder never
    blocks a response) and rows wait in memory; SIGTERM must write them all before exiting."""
    proxy = proxy_factory()
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "first"}]}
    first = httpx.post(proxy.v1 + "/chat/completions", json=body, timeout=10)
    proxy.log.wait_row(first.headers["x-study-request-id"])

    lock = sqlite3.connect(proxy.db_path, isolation_level=None, timeout=5)
    lock.execute("BEGIN IMMEDIATE")
    try:
        ids = []
        with httpx.Client(timeout=10) as http:
            for i in range(20):
                began = time.monotonic()
                response = http.post(proxy.v1 + "/chat/completions",
                                     json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"held {i}"}]})
                assert response.status_code == 200
                assert time.monotonic() - began < 1.0, "a response waited for the database"
                ids.append(response.headers["x-study-request-id"])
        proxy.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # shutdown begins while the rows cannot be written
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    proxy.stop_ok()
    rows = proxy.log.rows()
    assert {r["request_id"] for r in rows} == {first.headers["x-study-request-id"], *ids}
    assert sorted(r["prompt"] for r in rows if r["prompt"] != "user: first") == sorted(f"user: held {i}" for i in range(20))


def test_sigterm_lets_a_running_stream_finish_and_records_it(proxy_factory, fake_upstream_server):
    proxy = proxy_factory(env=provider_env(fake_upstream_server, openai=fake_key("sk-test-openai")))
    body = {"model": "slow-stream-term", "messages": [{"role": "user", "content": "finish me"}], "stream": True}
    lines: list[str] = []
    with httpx.stream("POST", proxy.v1 + "/chat/completions", json=body, timeout=10) as response:
        request_id = response.headers["x-study-request-id"]
        iterator = response.iter_lines()
        for line in iterator:
            lines.append(line)
            if "w2" in line:
                break
        stopper = threading.Thread(target=proxy.stop)
        stopper.start()
        try:
            for line in iterator:
                lines.append(line)
        except httpx.HTTPError:
            pass
    stopper.join(20)
    assert not proxy.running()
    row = proxy.log.row(request_id)
    assert row["stream"] == 1
    if "data: [DONE]" in lines:
        # Graceful shutdown let it finish: the whole answer is logged.
        assert row["response"] == slow_answer()
        assert row["error"] is None
    else:
        # Cut by the shutdown: still a row, with what was sent.
        assert row["error"]
        assert slow_answer().startswith(row["response"] or "")
