"""End to end: the real server keeps answering while its database is locked, keeps the rows in its
journal and writes every one of them once the lock is gone, also across a restart; when no row
can be kept at all, it refuses calls with 503 `log_unavailable` and `/healthz` says so.

The lock is real: a second SQLite connection holds `BEGIN IMMEDIATE` past the proxy's busy
timeout (5 s). The mock provider answers in-process, so no key and no upstream are needed.
"""

from __future__ import annotations

import sqlite3
import time

import httpx
import pytest

from conftest import ProxyServer, assert_error_shape, start_proxy
from proxy.journal import Journal, read_lines
from proxy.logrow import decode, dump_line, journal_line
from proxy.record import CallRecord

pytestmark = pytest.mark.timeout(60)

DEGRADED = "cannot write the log database"
RECOVERED = "is writable again"


def ask(client: httpx.Client, text: str) -> str:
    """One chat request to the mock provider: answered fast and well, whatever the log does."""
    started = time.monotonic()
    response = client.post("/chat/completions", json={"model": "mock/echo", "messages": [{"role": "user", "content": text}]})
    took = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert took < 1.0, f"answer took {took:.2f}s: recording must never delay the response"
    return response.headers["x-study-request-id"]


def health(server: ProxyServer) -> tuple[int, dict]:
    response = httpx.get(server.url + "/healthz", timeout=5)
    return response.status_code, response.json()


def journaled(server: ProxyServer) -> list[str]:
    found = []
    for path in sorted((server.directory / "log.db.journal").glob("*.jsonl")):
        runs, _ = decode(read_lines(path, 0, None, 10**6)[0])
        found += [run["request_id"] for run in runs]
    return found


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout}s")
        time.sleep(0.05)


def lock(db_path) -> sqlite3.Connection:
    locker = sqlite3.connect(db_path, isolation_level=None, timeout=5)
    locker.execute("BEGIN IMMEDIATE")
    return locker


def release(locker: sqlite3.Connection) -> None:
    locker.execute("ROLLBACK")
    locker.close()


def test_a_locked_database_keeps_rows_in_the_journal_and_every_row_lands_once_released(proxy_factory):
    server = proxy_factory()
    with httpx.Client(base_url=server.v1, timeout=10) as client:
        before = [ask(client, f"before {i}") for i in range(3)]
        for request_id in before:
            server.log.wait_row(request_id)

        locker = lock(server.db_path)
        try:
            during = []
            deadline = time.monotonic() + 15
            while "database_unwritable" not in health(server)[1]["conditions"]:  # after the busy timeout
                during.append(ask(client, f"during {len(during)}"))
                assert time.monotonic() < deadline, "/healthz did not say the database refuses writes"
                time.sleep(0.1)
            during += [ask(client, f"degraded {i}") for i in range(5)]
            status_code, body = health(server)
            assert status_code == 200 and body["status"] == "degraded", body
            assert body["log"]["pending"] == len(during)
            assert server.log.count() == len(before)
            assert set(during) <= set(journaled(server))  # on disk, safe from the death of the process
            assert server.output().count(DEGRADED) == 1, server.output()
        finally:
            release(locker)

        for request_id in before + during:
            server.log.wait_row(request_id, timeout=10)
        wait_for(lambda: health(server)[1]["status"] == "ok", 5, "/healthz did not say ok again")
        after = ask(client, "after")
        server.log.wait_row(after)

    ids = [row["request_id"] for row in server.log.rows()]
    assert ids == before + during + [after]  # every row once, in order
    assert len(server.log.query("SELECT * FROM attempts")) == len(ids)
    output = server.output()
    assert output.count(DEGRADED) == 1 and output.count(RECOVERED) == 1, output
    server.stop_ok()
    assert list((server.directory / "log.db.journal").iterdir()) == []


def test_shutdown_with_a_locked_database_leaves_the_journal_and_the_next_start_writes_it(proxy_factory):
    server = proxy_factory()
    with httpx.Client(base_url=server.v1, timeout=10) as client:
        first = ask(client, "first")
        server.log.wait_row(first)
        locker = lock(server.db_path)
        try:
            late = [ask(client, f"late {i}") for i in range(5)]
            started = time.monotonic()
            server.stop_ok()  # SIGTERM while the database is locked: bounded, no row dropped
            assert time.monotonic() - started < 12
        finally:
            release(locker)
    left = journaled(server)  # `first` too, when its row reached the database after the late ones were journaled
    assert left[-5:] == late and len(left) in (5, 6)
    assert [row["request_id"] for row in server.log.rows()] == [first]
    assert "5 log rows wait in the journal" in server.output(), server.output()

    again = start_proxy(server.directory)
    try:
        assert journaled(again) == []  # written before the server answered /healthz
        assert [row["request_id"] for row in again.log.rows()] == [first, *late]  # `first` once
        assert f"{len(left)} log rows left in the journal" in again.output(), again.output()
    finally:
        again.stop_ok()


def test_a_journal_left_by_a_dead_process_and_an_old_spool_are_written_on_start(tmp_path):
    directory = tmp_path / "proxy"
    dead = Journal(directory / "log.db.journal")
    dead.open()
    left = []
    for i in range(4):
        record = CallRecord("chat/completions", model="mock/old", provider="mock", upstream_model="old")
        record.payload = {"model": "mock/old", "messages": [{"role": "user", "content": f"old {i}"}]}
        record.begin_attempt("mock", "/chat/completions").finish(200)
        record.finish(200)
        dead.append(journal_line(record))
        left.append(record.request_id)
    dead.close()  # as the kernel closes a killed process's files: the lock is free, the rows stay
    spooled = CallRecord("chat/completions", model="mock/old", provider="mock")
    spooled.finish(200)
    run, attempts = spooled.rows()
    (directory / "log.db.spool.jsonl").write_bytes(dump_line({"run": run, "attempts": attempts}))  # an earlier version's spool

    server = start_proxy(directory)
    try:
        assert journaled(server) == [] and not (directory / "log.db.spool.jsonl").exists()
        with httpx.Client(base_url=server.v1, timeout=10) as client:
            new = ask(client, "new")
        server.log.wait_row(new)
        assert sorted(row["request_id"] for row in server.log.rows()) == sorted([*left, spooled.request_id, new])
        assert len(server.log.attempts(left[0])) == 1
    finally:
        server.stop_ok()


def test_with_no_place_for_rows_calls_get_503_log_unavailable_until_there_is_one(tmp_path):
    directory = tmp_path / "proxy"
    directory.mkdir()
    (directory / "log.db.journal").write_text("a file where the journal directory should be")
    server = start_proxy(directory, config="[log]\nmemory_bytes = 20000\n")
    answered = []
    try:
        with httpx.Client(base_url=server.v1, timeout=10) as client:
            answered.append(ask(client, "first"))
            server.log.wait_row(answered[0])
            locker = lock(server.db_path)
            try:
                refused = None
                deadline = time.monotonic() + 20
                while refused is None:
                    assert time.monotonic() < deadline, "the proxy never refused a call"
                    response = client.post("/chat/completions", json={"model": "mock/echo", "messages": [
                        {"role": "user", "content": "x" * 2000}]})
                    if response.status_code == 503:
                        refused = response
                    else:
                        assert response.status_code == 200, response.text
                        answered.append(response.headers["x-study-request-id"])
                error = assert_error_shape(refused.json())
                assert error["code"] == "log_unavailable" and error["type"] == "server_error"
                status_code, body = health(server)
                assert status_code == 503 and body["status"] == "refusing", body
                assert {"journal_unwritable", "refusing_calls"} <= set(body["conditions"])  # the writer waits on the lock
                assert body["log"]["lost"] == 0
            finally:
                release(locker)
            wait_for(lambda: health(server)[0] == 200, 10, "/healthz did not come back to 200")
            answered.append(ask(client, "after"))
        for request_id in answered:
            server.log.wait_row(request_id, timeout=10)
        assert "refusing new calls" in server.output()
    finally:
        server.stop_ok()
