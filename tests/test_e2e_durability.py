"""End to end: the real server keeps answering while its database is locked, spools the rows
and writes every one of them once the lock is gone, also across a restart.

The lock is real: a second SQLite connection holds `BEGIN IMMEDIATE` past the proxy's busy
timeout (5 s). The mock provider answers in-process, so no key and no upstream are needed.
"""

from __future__ import annotations

import sqlite3
import time
import uuid

import httpx
import pytest

from conftest import ProxyServer, start_proxy
from proxy.record import CallRecord
from proxy.spool import Spool

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


def spool_of(server: ProxyServer) -> Spool:
    return Spool(server.directory / "log.db.spool.jsonl")


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


def test_a_locked_database_is_spooled_and_every_row_lands_once_released(proxy_factory):
    server = proxy_factory()
    spool = spool_of(server)
    with httpx.Client(base_url=server.v1, timeout=10) as client:
        before = [ask(client, f"before {i}") for i in range(3)]
        for request_id in before:
            server.log.wait_row(request_id)

        locker = lock(server.db_path)
        try:
            during = []
            deadline = time.monotonic() + 15
            while not spool.exists():  # the writer waits out the busy timeout, then spools
                during.append(ask(client, f"during {len(during)}"))
                assert time.monotonic() < deadline, "no spool file while the database was locked"
                time.sleep(0.1)
            during += [ask(client, f"degraded {i}") for i in range(5)]  # straight to the spool
            assert server.log.count() == len(before)
            assert server.output().count(DEGRADED) == 1, server.output()
        finally:
            release(locker)

        for request_id in before + during:
            server.log.wait_row(request_id, timeout=10)
        wait_for(lambda: not spool.exists(), 5, "the spool was not removed after its replay")
        after = ask(client, "after")
        server.log.wait_row(after)

    ids = [row["request_id"] for row in server.log.rows()]
    assert ids == before + during + [after]  # every row once, in order
    assert len(server.log.query("SELECT * FROM attempts")) == len(ids)
    output = server.output()
    assert output.count(DEGRADED) == 1 and output.count(RECOVERED) == 1, output
    assert f"{len(during)} rows replayed" in output, output
    server.stop_ok()


def test_shutdown_with_a_locked_database_spools_and_the_next_start_replays(proxy_factory):
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
    assert spool_of(server).exists()
    assert [row["request_id"] for row in server.log.rows()] == [first]

    again = start_proxy(server.directory)
    try:
        assert not spool_of(again).exists()  # replayed before the server answered /healthz
        assert [row["request_id"] for row in again.log.rows()] == [first, *late]
        assert "5 log rows left in the spool" in again.output(), again.output()
    finally:
        again.stop_ok()


def test_a_spool_left_by_an_earlier_run_is_replayed_on_start(tmp_path):
    directory = tmp_path / "proxy"
    directory.mkdir()
    spool = Spool(directory / "log.db.spool.jsonl")
    left = []
    for i in range(4):
        record = CallRecord("chat/completions", model="mock/old", provider="mock", upstream_model="old")
        record.payload = {"model": "mock/old", "messages": [{"role": "user", "content": f"old {i}"}]}
        record.begin_attempt("mock", "/chat/completions").finish(200)
        record.finish(200)
        run, attempts = record.rows()
        spool.append([run], attempts)
        left.append(record.request_id)
    spool.path.rename(spool.replaying_path)  # as a crash in the middle of a replay leaves it
    spool.append(*_one_more(left))

    server = start_proxy(directory)
    try:
        assert not spool.exists()
        with httpx.Client(base_url=server.v1, timeout=10) as client:
            new = ask(client, "new")
        server.log.wait_row(new)
        assert [row["request_id"] for row in server.log.rows()] == [*left, new]
        assert len(server.log.attempts(left[0])) == 1
    finally:
        server.stop_ok()


def _one_more(ids: list[str]) -> tuple[list[dict], list[dict]]:
    record = CallRecord("chat/completions", request_id=uuid.uuid4().hex, model="mock/old", provider="mock")
    record.finish(200)
    ids.append(record.request_id)
    run, attempts = record.rows()
    return [run], attempts
