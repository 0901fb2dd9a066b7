"""The recorder: rows written in batches and drained on stop, the SQLite log's mode and
migrations, a failed write retried, and what a call record renders into its row."""

import asyncio
import sqlite3

import orjson
import pytest

from proxy.record import redact_headers
from proxy.recorder import Recorder
from proxy.store import Store
from recorder_helpers import finished, rows


@pytest.mark.parametrize("durability", ["process", "power", "none"])
def test_rows_are_written_in_batches_and_drained_on_stop(tmp_path, durability):
    async def go():
        store = Store(str(tmp_path / "log.db"), synchronous="FULL" if durability == "power" else "NORMAL")
        await store.migrate()
        recorder = Recorder(store, durability=durability, max_batch=100)
        await recorder.start()
        for i in range(1234):
            recorder.submit(finished(i))
        await recorder.stop()
        await store.dispose()
        return recorder

    recorder = asyncio.run(go())
    assert recorder.written == 1234
    assert recorder.stats()["journaled"] == (0 if durability == "none" else 1234)
    assert list((tmp_path / "log.db.journal").iterdir()) == []  # every row in: no journal file left
    written = rows(tmp_path / "log.db")
    assert len(written) == 1234
    assert len({r["request_id"] for r in written}) == 1234
    first = written[0]
    assert first["prompt"] == "user: question 0"
    assert first["response"] == "answer 0"
    assert (first["prompt_tokens"], first["completion_tokens"], first["total_tokens"]) == (2, 2, 4)
    assert first["user"] == "u1" and first["attempts"] == 1 and first["status_code"] == 200
    assert len(rows(tmp_path / "log.db", "SELECT * FROM attempts")) == 1234
    fts = rows(tmp_path / "log.db", "SELECT rowid FROM inference_runs_fts WHERE inference_runs_fts MATCH '\"question 7\"'")
    assert [r["rowid"] for r in fts] == [8]


def test_rows_arriving_one_by_one_share_a_commit_and_none_waits_longer_than_the_linger(tmp_path):
    async def go():
        store = Store(str(tmp_path / "log.db"))
        await store.migrate()
        batches = []
        real_write = store.write

        async def counting_write(runs, attempt_rows):
            batches.append(len(runs))
            await real_write(runs, attempt_rows)

        store.write = counting_write
        recorder = Recorder(store, linger=0.2)
        await recorder.start()
        for i in range(5):  # a trickle: one row every 10 ms, well inside the linger
            recorder.submit(finished(i))
            await asyncio.sleep(0.01)
        started = asyncio.get_running_loop().time()
        while recorder.written < 5:
            await asyncio.sleep(0.005)
        waited = asyncio.get_running_loop().time() - started
        lone = finished(99)
        recorder.submit(lone)
        lone_started = asyncio.get_running_loop().time()
        while recorder.written < 6:
            await asyncio.sleep(0.005)
        lone_waited = asyncio.get_running_loop().time() - lone_started
        await recorder.stop()
        await store.dispose()
        return batches, waited, lone_waited

    batches, waited, lone_waited = asyncio.run(go())
    assert batches == [5, 1]  # the trickle went in as one transaction, the lone row as its own
    assert waited < 0.2 and 0.15 < lone_waited < 1.0


def test_sqlite_runs_in_wal_mode_and_migrations_are_recorded(tmp_path):
    async def go():
        store = Store(str(tmp_path / "log.db"))
        assert await store.migrate() == [1, 2, 3, 4, 5]
        assert await store.migrate() == []
        await store.dispose()

    asyncio.run(go())
    db = sqlite3.connect(tmp_path / "log.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert [r[0] for r in db.execute("SELECT version FROM schema_migrations ORDER BY version")] == [1, 2, 3, 4, 5]


def test_a_failed_write_is_retried(tmp_path, monkeypatch):
    async def go():
        store = Store(str(tmp_path / "log.db"))
        await store.migrate()
        real_write, calls = store.write, []

        async def flaky(runs, attempts):
            calls.append(len(runs))
            if len(calls) == 1:
                raise sqlite3.OperationalError("database is locked")
            await real_write(runs, attempts)

        monkeypatch.setattr(store, "write", flaky)
        recorder = Recorder(store)
        await recorder.start()
        recorder.submit(finished(1))
        await recorder.stop()
        await store.dispose()
        return recorder, calls

    recorder, calls = asyncio.run(go())
    assert calls == [1, 1] and recorder.written == 1 and recorder.stats()["failed_batches"] == 1
    assert len(rows(tmp_path / "log.db")) == 1


def test_meta_logging_keeps_numbers_but_not_text():
    run, _ = finished(1, log_full=False, tags=["a", "b"], session_id="s").rows()
    assert run["prompt"] is None and run["response"] is None and run["request_json"] is None
    assert run["total_tokens"] == 4 and run["tags"] == '["a","b"]' and run["session_id"] == "s"


def test_missing_usage_leaves_tokens_null_and_says_so():
    record = finished(1)
    record.response_body = orjson.dumps({"choices": [{"message": {"content": "x"}}]})
    run, _ = record.rows()
    assert run["prompt_tokens"] is None and run["total_tokens"] is None
    assert "usage" in orjson.loads(run["metadata"])["study_notes"][0]


def test_client_metadata_is_kept_and_upstream_error_message_extracted():
    record = finished(1)
    record.payload["metadata"] = {"experiment": "e1"}
    record.response_body = orjson.dumps({"error": {"message": "bad things", "type": "x"}})
    record.finish(400)
    run, _ = record.rows()
    assert orjson.loads(run["metadata"]) == {"experiment": "e1"}
    assert run["error"] == "bad things" and run["status_code"] == 400


@pytest.mark.parametrize(("reasons", "metadata"), [
    (["stop"], None), (["tool_calls"], None), (["stop", "tool_calls"], None), ([None], None),
    (["length"], {"finish_reason": "length"}), (["content_filter"], {"finish_reason": "content_filter"}),
    (["stop", "length"], {"finish_reason": ["stop", "length"]}),
])
def test_a_cut_answer_says_how_it_ended_in_the_metadata(reasons, metadata):
    record = finished(1)
    usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    choices = [{"index": i, "message": {"content": "x"}, "finish_reason": r} for i, r in enumerate(reasons)]
    record.response_body = orjson.dumps({"choices": choices, "usage": usage})
    run, _ = record.rows()
    assert (orjson.loads(run["metadata"]) if run["metadata"] else None) == metadata


@pytest.mark.parametrize("name", ["Authorization", "api-key", "X-Api-Key", "Cookie", "Proxy-Authorization", "X-Auth-Token"])
def test_credential_headers_are_redacted(name):
    stored = redact_headers({name: "secret-value", "User-Agent": "sdk"})
    assert stored[name.lower()] == "[redacted]" and stored["user-agent"] == "sdk"
