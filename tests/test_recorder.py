import asyncio
import sqlite3

import orjson
import pytest

from proxy.record import CallRecord, redact_headers
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


def test_rows_are_written_in_batches_and_drained_on_stop(tmp_path):
    async def go():
        store = Store(str(tmp_path / "log.db"))
        await store.migrate()
        recorder = Recorder(store, max_batch=100)
        await recorder.start()
        for i in range(1234):
            recorder.submit(finished(i))
        await recorder.stop()
        await store.dispose()
        return recorder

    recorder = asyncio.run(go())
    assert recorder.written == 1234
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
    assert calls == [1, 1] and recorder.written == 1 and recorder.failed_batches == 1
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


@pytest.mark.parametrize("name", ["Authorization", "api-key", "X-Api-Key", "Cookie", "Proxy-Authorization", "X-Auth-Token"])
def test_credential_headers_are_redacted(name):
    stored = redact_headers({name: "secret-value", "User-Agent": "sdk"})
    assert stored[name.lower()] == "[redacted]" and stored["user-agent"] == "sdk"


# -- database trouble: spool, warn once, replay ---------------------------------------------------

import logging  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402

from proxy.spool import Spool  # noqa: E402


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


@pytest.mark.parametrize("message", ["attempt to write a readonly database", "database or disk is full"])
def test_unwritable_database_spools_warns_once_and_replays_once_writable(tmp_path, monkeypatch, caplog, message):
    caplog.set_level(logging.INFO, logger="proxy")
    db = tmp_path / "log.db"
    spool_path = tmp_path / "log.db.spool.jsonl"

    async def go():
        store = Store(str(db))
        await store.migrate()
        state = breakable(monkeypatch, store, message)
        recorder = Recorder(store, max_batch=10, retry_interval=0.05)
        await recorder.start()
        submitted = [finished(i) for i in range(5)]
        for r in submitted:
            recorder.submit(r)
        await until(lambda: recorder.written == 5)
        state["broken"] = True
        for i in range(5, 65):  # several batches while the database refuses them
            recorder.submit(r := finished(i))
            submitted.append(r)
            if i % 7 == 0:
                await asyncio.sleep(0.01)
        await until(lambda: recorder.spooled == 60)
        # On disk: in the spool, or in its `.replaying` twin once a (failing) replay has begun.
        assert recorder.degraded and recorder.spool.exists() and recorder.held == 0
        await asyncio.sleep(0.2)  # a few replay attempts fail meanwhile
        state["broken"] = False
        await until(lambda: not recorder.degraded)
        assert not recorder.spool.exists()
        for i in range(65, 70):
            recorder.submit(r := finished(i))
            submitted.append(r)
        await recorder.stop()
        await store.dispose()
        return recorder, [r.request_id for r in submitted]

    recorder, submitted = asyncio.run(go())
    assert ids(db) == submitted  # none lost, none twice, in order
    assert len(rows(db, "SELECT * FROM attempts")) == 70
    warnings = messages(caplog)
    assert len([w for w in warnings if "cannot write the log database" in w]) == 1, warnings
    first = next(w for w in warnings if "cannot write the log database" in w)
    assert str(spool_path) in first and message in first
    recovered = [w for w in warnings if "is writable again" in w]
    assert len(recovered) == 1 and "60 rows replayed" in recovered[0]
    assert (recorder.written, recorder.spooled, recorder.replayed, recorder.lost) == (10, 60, 60, 0)
    assert not messages(caplog, logging.ERROR)


def test_stop_while_the_database_is_locked_spools_and_the_next_start_replays(tmp_path, caplog):
    """A real lock: another connection holds BEGIN IMMEDIATE past the (shortened) busy timeout."""
    caplog.set_level(logging.INFO, logger="proxy")
    db = tmp_path / "log.db"

    async def first_run():
        store = Store(str(db), busy_timeout_ms=100)
        await store.migrate()
        recorder = Recorder(store, retry_interval=60)
        await recorder.start()
        recorder.submit(finished(0))
        await until(lambda: recorder.written == 1)
        locker = sqlite3.connect(db, isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")
        try:
            late = [finished(i) for i in range(1, 30)]
            for r in late:
                recorder.submit(r)
            started = time.monotonic()
            await recorder.stop()
            stop_took = time.monotonic() - started
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        await store.dispose()
        return recorder, [r.request_id for r in late], stop_took

    recorder, late, stop_took = asyncio.run(first_run())
    assert stop_took < 3
    assert recorder.spooled == 29 and recorder.lost == 0
    assert len(ids(db)) == 1
    spool = Spool(tmp_path / "log.db.spool.jsonl")
    assert spool.exists()
    assert any("next start" in w for w in messages(caplog))

    async def second_run():
        store = Store(str(db))
        await store.migrate()
        recorder = Recorder(store)
        await recorder.start()
        assert not spool.exists()  # replayed before start() returned, before any new row
        new = finished(99)
        recorder.submit(new)
        await recorder.stop()
        await store.dispose()
        return recorder, new.request_id

    recorder, new = asyncio.run(second_run())
    assert recorder.replayed == 29 and not recorder.degraded
    written = ids(db)
    assert written[1:] == late + [new] and len(set(written)) == 31
    assert any("left in the spool" in w and "29" in w for w in messages(caplog))


def test_unwritable_spool_holds_rows_in_memory_then_writes_them(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="proxy")
    db = tmp_path / "log.db"
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the spool directory should be")

    async def go():
        store = Store(str(db))
        await store.migrate()
        state = breakable(monkeypatch, store, "database or disk is full")
        state["broken"] = True
        recorder = Recorder(store, max_batch=10, retry_interval=0.05, spool=blocked / "log.spool.jsonl")
        await recorder.start()
        submitted = [finished(i) for i in range(40)]
        for r in submitted:
            recorder.submit(r)
        await until(lambda: recorder.held == 40)
        await asyncio.sleep(0.2)
        assert recorder.held == 40 and recorder.lost == 0
        state["broken"] = False
        await until(lambda: not recorder.degraded)
        assert recorder.held == 0
        await recorder.stop()
        await store.dispose()
        return recorder, [r.request_id for r in submitted]

    recorder, submitted = asyncio.run(go())
    assert ids(db) == submitted
    errors = messages(caplog, logging.ERROR)
    assert len(errors) == 1 and "cannot write the log spool" in errors[0]
    assert any("40 from memory" in w for w in messages(caplog))


def test_past_the_memory_bound_rows_are_counted_and_reported_as_lost(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="proxy")
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("x")

    async def go():
        store = Store(str(tmp_path / "log.db"))
        await store.migrate()
        breakable(monkeypatch, store, "database or disk is full")["broken"] = True
        recorder = Recorder(store, max_batch=4, retry_interval=60, memory_limit=10, stop_timeout=2,
                            spool=blocked / "s.jsonl")
        await recorder.start()
        for i in range(25):
            recorder.submit(finished(i))
        await until(lambda: recorder.pending == 0 and recorder.held == 10)
        lost_before_stop = recorder.lost
        await recorder.stop()
        await store.dispose()
        return recorder, lost_before_stop

    recorder, lost_before_stop = asyncio.run(go())
    assert lost_before_stop == 15
    assert recorder.lost == 25  # at shutdown neither the database nor the spool took the 10 held
    errors = messages(caplog, logging.ERROR)
    assert any("2 log rows LOST so far" in e for e in errors)  # the first overflow; then at most one per 10 s
    assert any("10 log rows LOST at shutdown" in e for e in errors)
    assert any("25 log rows were LOST in this run" in e for e in errors)


def test_stop_is_bounded_even_if_a_write_hangs(tmp_path, monkeypatch):
    async def go():
        store = Store(str(tmp_path / "log.db"))
        await store.migrate()

        async def hang(runs, attempt_rows):
            await asyncio.Event().wait()

        monkeypatch.setattr(store, "write", hang)
        recorder = Recorder(store, max_batch=5)
        await recorder.start()
        for i in range(12):
            recorder.submit(finished(i))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await recorder.stop(timeout=0.3)
        took = time.monotonic() - started
        await store.dispose()
        return recorder, took

    recorder, took = asyncio.run(go())
    assert took < 1.5
    assert recorder.spooled == 12 and recorder.lost == 0
    spooled, _ = __import__("proxy.spool", fromlist=["decode"]).decode(
        (tmp_path / "log.db.spool.jsonl").read_bytes().splitlines()
    )
    assert len({r["request_id"] for r in spooled}) == 12


def test_a_row_the_database_refuses_is_set_aside_and_does_not_block_the_others(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="proxy")
    db = tmp_path / "log.db"

    async def go():
        store = Store(str(db))
        await store.migrate()
        recorder = Recorder(store)
        await recorder.start()
        good = [finished(i) for i in range(4)]
        bad = finished(9, usage={"prompt_tokens": 2**70, "completion_tokens": 1, "total_tokens": 1})
        for r in good[:2] + [bad] + good[2:]:
            recorder.submit(r)
        await recorder.stop()
        await store.dispose()
        return recorder, [r.request_id for r in good], bad.request_id

    recorder, good, bad = asyncio.run(go())
    assert ids(db) == good
    assert not recorder.degraded and recorder.refused == 1 and recorder.spooled == 0
    set_aside = orjson.loads((tmp_path / "log.db.spool.jsonl.bad").read_bytes())
    assert set_aside["run"]["request_id"] == bad and "OverflowError" in set_aside["error"]


def test_a_record_that_cannot_be_rendered_still_gets_a_row(tmp_path, monkeypatch):
    db = tmp_path / "log.db"

    async def go():
        store = Store(str(db))
        await store.migrate()
        recorder = Recorder(store)
        await recorder.start()
        broken = finished(1)
        monkeypatch.setattr(CallRecord, "rows", lambda self: 1 / 0 if self is broken else real_rows(self))
        recorder.submit(finished(0))
        recorder.submit(broken)
        await recorder.stop()
        await store.dispose()
        return broken.request_id

    real_rows = CallRecord.rows
    broken = asyncio.run(go())
    row = rows(db, f"SELECT * FROM inference_runs WHERE request_id = '{broken}'")[0]
    assert row["status_code"] == 200 and row["model"] == "mock/m" and "ZeroDivisionError" in row["error"]


def test_a_deleted_database_file_is_recreated_and_gets_the_next_rows(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="proxy")
    db = tmp_path / "log.db"

    async def go():
        store = Store(str(db))
        await store.migrate()
        recorder = Recorder(store)
        await recorder.start()
        recorder.submit(finished(0))
        await until(lambda: recorder.written == 1)
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(f"{db}{suffix}"):
                os.unlink(f"{db}{suffix}")
        after = finished(1)
        recorder.submit(after)
        await recorder.stop()
        await store.dispose()
        return after.request_id

    after = asyncio.run(go())
    assert ids(db) == [after]
    assert any("deleted or replaced" in w for w in messages(caplog))


def test_rows_submitted_after_stop_go_to_the_spool(tmp_path):
    async def go():
        store = Store(str(tmp_path / "log.db"))
        await store.migrate()
        recorder = Recorder(store)
        await recorder.start()
        await recorder.stop()
        recorder.submit(finished(1))
        await store.dispose()
        return recorder

    recorder = asyncio.run(go())
    assert recorder.spooled == 1 and Spool(tmp_path / "log.db.spool.jsonl").exists()


def test_start_with_an_unreachable_database_degrades_and_recovers(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="proxy")
    db = tmp_path / "log.db"

    async def go():
        store = Store(str(db))
        real_migrate, state = store.migrate, {"down": True}

        async def migrate():
            if state["down"]:
                raise ConnectionRefusedError(111, "Connect call failed")
            return await real_migrate()

        monkeypatch.setattr(store, "migrate", migrate)
        recorder = Recorder(store, retry_interval=0.05)
        await recorder.start()
        assert recorder.degraded
        first = finished(0)
        recorder.submit(first)
        await until(lambda: recorder.spooled == 1)
        state["down"] = False
        await until(lambda: not recorder.degraded)
        await recorder.stop()
        await store.dispose()
        return first.request_id

    first = asyncio.run(go())
    assert ids(db) == [first]
    assert len([w for w in messages(caplog) if "cannot write the log database" in w]) == 1


def test_rows_arriving_during_a_long_replay_are_spooled_not_piled_up_in_memory(tmp_path, monkeypatch):
    db = tmp_path / "log.db"

    async def go():
        store = Store(str(db))
        await store.migrate()
        state = breakable(monkeypatch, store, "database or disk is full")
        recorder = Recorder(store, max_batch=50, retry_interval=0.05)
        await recorder.start()
        state["broken"] = True
        submitted = [finished(i) for i in range(1000)]
        for r in submitted:
            recorder.submit(r)
        await until(lambda: recorder.spooled == 1000)
        broken_write, most_pending = store.write, [0]

        async def write_while_requests_arrive(runs, attempt_rows):
            most_pending[0] = max(most_pending[0], recorder.pending)
            for _ in range(10):  # ten requests finish during each batch of the replay
                recorder.submit(r := finished(len(submitted)))
                submitted.append(r)
            await broken_write(runs, attempt_rows)

        monkeypatch.setattr(store, "write", write_while_requests_arrive)
        state["broken"] = False
        await until(lambda: not recorder.degraded, timeout=10)
        monkeypatch.setattr(store, "write", broken_write)
        await recorder.stop()
        await store.dispose()
        return recorder, [r.request_id for r in submitted], most_pending[0]

    recorder, submitted, most_pending = asyncio.run(go())
    assert most_pending <= 50 + 10  # spooled once a batch has piled up, never more
    written = ids(db)
    assert sorted(written) == sorted(submitted) and len(written) == len(set(written))
    assert written[:1000] == submitted[:1000]  # the outage's rows first, in order
    assert not Spool(tmp_path / "log.db.spool.jsonl").exists()
