"""What the recorder tests share: a finished call record, the rows and journal lines it leaves,
a store that can be made to fail, and a recorder started over a migrated store."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time

import orjson

from proxy.journal import read_lines
from proxy.logrow import decode
from proxy.record import CallRecord
from proxy.recorder import Recorder
from proxy.store import Store


def finished(i: int, **fields) -> CallRecord:
    record = CallRecord("chat/completions", model="mock/m", provider="mock", upstream_model="m")
    record.payload = {"model": "mock/m", "messages": [{"role": "user", "content": f"question {i}"}], "user": "u1"}
    record.request_text = orjson.dumps(record.payload).decode()
    record.response_body = orjson.dumps(
        {"choices": [{"message": {"content": f"answer {i}"}}], "usage": {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}}
    )
    record.begin_attempt("mock", "/chat/completions").finish(200)
    for name, value in fields.items():
        setattr(record, name, value)
    record.finish(200)
    return record


def rows(path, sql="SELECT * FROM inference_runs ORDER BY id"):
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    return [dict(r) for r in db.execute(sql)]


async def started_recorder(db, **options) -> tuple[Store, Recorder]:
    """A migrated store at `db` and a recorder over it, started."""
    store = Store(str(db))
    await store.migrate()
    recorder = Recorder(store, **options)
    await recorder.start()
    return store, recorder


async def until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def breakable(monkeypatch, store: Store, message: str) -> dict:
    """Make `store.write` fail with `message` while `state["broken"]`; counts the calls."""
    real_write, state = store.write, {"broken": False, "calls": 0}

    async def write(runs, attempt_rows):
        state["calls"] += 1
        if state["broken"]:
            raise sqlite3.OperationalError(message)
        await real_write(runs, attempt_rows)

    monkeypatch.setattr(store, "write", write)
    return state


def messages(caplog, level=logging.WARNING) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("proxy") and r.levelno == level]


def ids(path) -> list[str]:
    return [r["request_id"] for r in rows(path, "SELECT request_id FROM inference_runs ORDER BY id")]


def journaled_ids(directory) -> list[str]:
    found = []
    for path in sorted(directory.glob("*.jsonl")):
        runs, _ = decode(read_lines(path, 0, None, 10**6)[0])
        found += [run["request_id"] for run in runs]
    return found


def conditions(recorder: Recorder) -> tuple[int, str, list[str]]:
    status_code, body = recorder.health()
    return status_code, body["status"], body["conditions"]


def blocked_journal(tmp_path):
    """A file where the journal directory should be: the journal cannot be written."""
    path = tmp_path / "log.db.journal"
    path.write_text("not a directory")
    return path
