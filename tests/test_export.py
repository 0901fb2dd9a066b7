"""`study-query-llm export` and the PostgreSQL log in Datasette: a SQLite copy with the log's
schema and full-text index, brought up to date incrementally, served by `ui` and by `serve`.

Against the real PostgreSQL on 127.0.0.1:5432 (a database per test, dropped after); the SQLite
source needs no server.
"""

from __future__ import annotations

import asyncio
import sqlite3
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from analytics.export import export
from conftest import REPO_ROOT, START_TIMEOUT, ProxyServer, free_port, minimal_env
from postgres_helpers import needs_postgres, scratch_database
from proxy.record import CallRecord
from proxy.store import Store
from proxy.store.migrations import MIGRATIONS

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh database; its URL carries a password (ignored by trust auth) that must never be printed."""
    with scratch_database("sqllm_export") as name:
        yield f"postgresql://postgres:pw-{uuid.uuid4().hex}@127.0.0.1:5432/{name}"


def records(n: int, start: int = 0, day: str = "2026-11-02") -> list[CallRecord]:
    made = []
    for i in range(start, start + n):
        record = CallRecord("chat/completions", model="mock/echo", provider="mock", upstream_model="echo",
                            created_at=f"{day}T10:{i // 60:02d}:{i % 60:02d}.000Z")
        record.payload = {"model": "mock/echo", "messages": [{"role": "user", "content": f"question {i} about the weather"}]}
        record.response_body = b'{"choices": [{"message": {"content": "sunny"}}], "usage": {"prompt_tokens": 4, "completion_tokens": 1, "total_tokens": 5}}'
        attempt = record.begin_attempt("mock", "/chat/completions")
        attempt.started_at = record.created_at
        attempt.finish(200)
        record.finish(200)
        made.append(record)
    return made


def write(url: str, batch: list[CallRecord]) -> None:
    async def go() -> None:
        store = Store(url)
        await store.migrate()
        rows = [r.rows() for r in batch]
        await store.write([run for run, _ in rows], [a for _, its in rows for a in its])
        await store.dispose()

    asyncio.run(go())


def query(path: Path, sql: str, params: tuple = ()) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy", *args], capture_output=True, text=True, timeout=60,
                          env=minimal_env(), cwd=REPO_ROOT)


@needs_postgres
def test_export_copies_the_log_with_schema_ids_and_full_text_index(pg_url, tmp_path):
    write(pg_url, records(30))
    copy = tmp_path / "copy.db"
    done = asyncio.run(export(pg_url, copy))
    assert (done.runs, done.attempts) == (30, 30)

    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    assert [v for (v,) in query(copy, "SELECT version FROM schema_migrations ORDER BY version")] == [m[0] for m in MIGRATIONS]
    assert query(copy, "SELECT count(*) FROM inference_runs")[0][0] == 30
    assert query(copy, "SELECT count(*) FROM inference_runs_fts WHERE inference_runs_fts MATCH 'weather'")[0][0] == 30
    hits = query(copy, "SELECT r.prompt FROM inference_runs_fts f JOIN inference_runs r ON r.id = f.rowid "
                       "WHERE inference_runs_fts MATCH '\"question 7\"'")
    assert hits == [("user: question 7 about the weather",)]

    async def source_ids() -> list[int]:
        store = Store(pg_url)
        async with store.engine.connect() as conn:
            ids = [row[0] for row in await conn.exec_driver_sql("SELECT id FROM inference_runs ORDER BY id")]
        await store.dispose()
        return ids

    assert [i for (i,) in query(copy, "SELECT id FROM inference_runs ORDER BY id")] == asyncio.run(source_ids())
    [(source, refreshed_at)] = query(copy, "SELECT source, refreshed_at FROM copy_state")
    assert source.startswith("postgresql://postgres:***@127.0.0.1:5432/") and "pw-" not in source
    assert refreshed_at.endswith("Z")


@needs_postgres
def test_a_second_export_copies_only_what_is_new_including_late_commits(pg_url, tmp_path):
    write(pg_url, records(20))

    async def sql(statement: str) -> None:
        store = Store(pg_url)
        async with store.engine.begin() as conn:
            await conn.exec_driver_sql(statement)
        await store.dispose()

    # Id 10 is taken by a transaction that commits only after the first export.
    asyncio.run(sql("DELETE FROM inference_runs WHERE id = 10"))
    copy = tmp_path / "copy.db"
    assert asyncio.run(export(pg_url, copy)).runs == 19
    assert asyncio.run(export(pg_url, copy)).runs == 0

    write(pg_url, records(5, start=20))
    asyncio.run(sql(
        "INSERT INTO inference_runs (id, request_id, created_at, endpoint, stream, attempts, prompt, response) "
        "VALUES (10, 'late-row', '2026-11-02T11:00:00.000Z', 'chat/completions', 0, 0, 'user: late', 'late answer')"
    ))
    again = asyncio.run(export(pg_url, copy))
    assert again.runs == 6 and again.attempts == 5
    assert query(copy, "SELECT count(*) FROM inference_runs")[0][0] == 25
    assert query(copy, "SELECT count(*) FROM inference_runs_fts WHERE inference_runs_fts MATCH 'late'")[0][0] == 1


@needs_postgres
def test_the_export_command_with_since(pg_url, tmp_path):
    write(pg_url, records(4, day="2026-11-01") + records(6, start=4, day="2026-11-03"))
    copy = tmp_path / "recent.db"
    result = run_cli("export", "--database-url", pg_url, "--since", "2026-11-02", "--to", str(copy))
    assert result.returncode == 0, result.stderr
    assert "Copied 6 calls and 6 attempts" in result.stdout
    assert "pw-" not in result.stdout + result.stderr
    assert query(copy, "SELECT min(created_at) FROM inference_runs")[0][0].startswith("2026-11-03")


def test_export_from_a_sqlite_log(tmp_path):
    log = tmp_path / "log.db"
    write(str(log), records(12))
    copy = tmp_path / "copy.db"
    result = run_cli("export", "--db", str(log), "--to", str(copy))
    assert result.returncode == 0, result.stderr
    assert query(copy, "SELECT count(*) FROM inference_runs_fts WHERE inference_runs_fts MATCH 'weather'")[0][0] == 12
    assert run_cli("export", "--db", str(log), "--to", str(log)).returncode == 2
    missing = run_cli("export", "--db", str(tmp_path / "nope.db"), "--to", str(copy))
    assert missing.returncode == 2 and "no log database" in missing.stderr


def _wait_http(url: str, process: subprocess.Popen[bytes], output: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        assert process.poll() is None, output.read_text()
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, output.read_text()
        time.sleep(0.1)


@needs_postgres
def test_ui_serves_the_copy_with_its_canned_queries(pg_url, tmp_path):
    write(pg_url, records(8))
    copy = tmp_path / "copy.db"
    asyncio.run(export(pg_url, copy))
    port, output = free_port(), tmp_path / "ui.txt"
    with open(output, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "proxy", "ui", "--db", str(copy), "--port", str(port)],
                                   env=minimal_env(), cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_http(base + "/", process, output)
        by_model = httpx.get(base + "/log/calls_by_model.json", params={"since": "", "model": "", "_shape": "array"}, timeout=10)
        assert by_model.status_code == 200, by_model.text
        assert [(row["model"], row["calls"]) for row in by_model.json()] == [("mock/echo", 8)]
        search = httpx.get(base + "/log/inference_runs.json", params={"_search": "weather", "_shape": "array"}, timeout=10)
        assert len(search.json()) == 8
        start = httpx.get(base + "/", timeout=10).text
        assert "This is a copy of the log at" in start and "postgresql://postgres:***@" in start
        assert "pw-" not in start
    finally:
        process.terminate()
        process.wait(10)


@needs_postgres
def test_serve_on_postgres_answers_ui_over_a_refreshed_copy(pg_url, tmp_path):
    copy = tmp_path / "ui-copy.db"
    (tmp_path / "config.toml").write_text(f'[ui]\nrefresh = 0.5\ncopy_path = "{copy}"\n')
    port, output = free_port(), tmp_path / "serve.txt"
    args = [sys.executable, "-m", "proxy", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--database-url", pg_url, "--config", str(tmp_path / "config.toml")]
    with open(output, "wb") as out:
        process = subprocess.Popen(args, env=minimal_env(), cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    server = ProxyServer(tmp_path, port, process, output, {})
    try:
        _wait_http(server.url + "/healthz", process, output)
        ids = []
        for i in range(3):
            answer = httpx.post(server.v1 + "/chat/completions", timeout=10,
                                json={"model": "mock/echo", "messages": [{"role": "user", "content": f"copy me {i}"}]})
            assert answer.status_code == 200
            ids.append(answer.headers["x-study-request-id"])
        deadline = time.monotonic() + 20
        while True:
            found = httpx.get(server.url + "/ui/log/inference_runs.json", timeout=10,
                              params={"request_id__in": ",".join(ids), "_shape": "array"})
            assert found.status_code == 200, found.text
            if len(found.json()) == 3 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert sorted(row["request_id"] for row in found.json()) == sorted(ids)
        assert {row["prompt"] for row in found.json()} == {f"user: copy me {i}" for i in range(3)}
        start = httpx.get(server.url + "/ui/", timeout=10).text
        assert "This is a copy of the log at" in start and "refreshes it every 0.5 s" in start
        assert f"refreshed every 0.5s: {copy}" in server.output()
        assert stat.S_IMODE(copy.stat().st_mode) == 0o600
        server.stop_ok()
        assert "pw-" not in server.output()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
