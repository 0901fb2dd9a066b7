"""The recorder when the database is in trouble: unwritable, full, locked out past the memory
bound, deleted, unreachable at start, or refusing one row; refusing new calls when nothing can
keep their rows; and what /healthz says meanwhile."""

import asyncio
import logging
import os

import orjson
import pytest

from proxy.record import CallRecord
from proxy.recorder import Recorder
from proxy.store import Store
from recorder_helpers import (
    blocked_journal,
    breakable,
    conditions,
    finished,
    ids,
    journaled_ids,
    messages,
    rows,
    started_recorder,
    until,
)


@pytest.mark.parametrize("message", ["attempt to write a readonly database", "database or disk is full"])
def test_unwritable_database_keeps_the_rows_warns_once_and_writes_them_once_writable(tmp_path, monkeypatch, caplog, message):
    caplog.set_level(logging.INFO, logger="proxy")
    db = tmp_path / "log.db"

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
        await until(lambda: recorder.degraded)
        await asyncio.sleep(0.2)  # a few retries fail meanwhile
        assert recorder.pending == 60 and recorder.written == 5
        assert journaled_ids(tmp_path / "log.db.journal")[-60:] == [r.request_id for r in submitted[5:]]
        assert conditions(recorder) == (200, "degraded", ["database_unwritable"])
        state["broken"] = False
        await until(lambda: not recorder.degraded and recorder.pending == 0)
        assert conditions(recorder) == (200, "ok", [])
        for i in range(65, 70):
            recorder.submit(r := finished(i))
            submitted.append(r)
        await recorder.stop()
        await store.dispose()
        return recorder, [r.request_id for r in submitted]

    recorder, submitted = asyncio.run(go())
    assert ids(db) == submitted  # none lost, none twice, in order
    assert len(rows(db, "SELECT * FROM attempts")) == 70
    assert list((tmp_path / "log.db.journal").iterdir()) == []
    warnings = messages(caplog)
    degraded = [w for w in warnings if "cannot write the log database" in w]
    assert len(degraded) == 1 and message in degraded[0] and "log.db.journal" in degraded[0], warnings
    assert len([w for w in warnings if "is writable again" in w]) == 1
    assert recorder.written == 70 and recorder.stats()["lost"] == 0
    assert not messages(caplog, logging.ERROR)


@pytest.mark.parametrize("durability", ["process", "none"])
def test_past_the_memory_bound_rows_wait_on_disk_only_and_come_back_in_order(tmp_path, monkeypatch, durability):
    db = tmp_path / "log.db"
    bound = 8_000  # a dozen rows or so

    async def go():
        store = Store(str(db))
        await store.migrate()
        state = breakable(monkeypatch, store, "database or disk is full")
        state["broken"] = True
        recorder = Recorder(store, durability=durability, memory_bytes=bound, max_batch=7, retry_interval=0.05)
        await recorder.start()
        submitted = [finished(i) for i in range(100)]
        most = 0
        for r in submitted:
            recorder.submit(r)
            most = max(most, recorder.backlog.memory_bytes)
            if r is submitted[10]:
                await until(lambda: recorder.degraded)
        await asyncio.sleep(0.01)  # a turn of the loop: the last rows reach the journal
        stats = recorder.stats()
        assert stats["pending"] == 100 and stats["on_disk_only"] > 50 and stats["in_memory"] < 30
        assert conditions(recorder)[2] == ["database_unwritable", "rows_only_on_disk"]
        state["broken"] = False
        await until(lambda: recorder.pending == 0)
        assert conditions(recorder) == (200, "ok", [])
        await recorder.stop()
        await store.dispose()
        return [r.request_id for r in submitted], most

    submitted, most = asyncio.run(go())
    assert most <= bound + 2_000  # over the bound by one row at most
    assert ids(db) == submitted
    assert list((tmp_path / "log.db.journal").iterdir()) == []


def test_with_no_journal_and_a_full_memory_new_calls_are_refused_until_rows_can_be_kept(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="proxy")
    db = tmp_path / "log.db"
    blocked = blocked_journal(tmp_path)

    async def go():
        store = Store(str(db))
        await store.migrate()
        state = breakable(monkeypatch, store, "database or disk is full")
        state["broken"] = True
        recorder = Recorder(store, memory_bytes=5_000, retry_interval=0.05)
        await recorder.start()
        submitted = [finished(0)]
        recorder.submit(submitted[0])
        await until(lambda: recorder.degraded)
        for i in range(1, 40):
            submitted.append(r := finished(i))
            recorder.submit(r)
            await asyncio.sleep(0)  # a turn of the loop per call, as requests come
            if not recorder.accepting:
                break
        assert not recorder.accepting and len(submitted) < 40
        status_code, status, found = conditions(recorder)
        assert (status_code, status) == (503, "refusing")
        assert {"database_unwritable", "journal_unwritable", "refusing_calls"} <= set(found)
        assert recorder.stats()["lost"] == 0  # the rows it could not place are still kept
        state["broken"] = False
        await until(lambda: recorder.pending == 0)
        assert recorder.accepting
        blocked.unlink()  # the journal can be made again: the next retry opens it
        await until(lambda: recorder.journal.is_open, timeout=3)
        recorder.submit(r := finished(99))
        submitted.append(r)
        await until(lambda: recorder.pending == 0)
        assert conditions(recorder) == (200, "ok", [])
        await recorder.stop()
        await store.dispose()
        return [r.request_id for r in submitted]

    submitted = asyncio.run(go())
    assert ids(db) == submitted
    errors = messages(caplog, logging.ERROR)
    assert len([e for e in errors if "cannot write the log journal" in e]) == 1, errors
    assert len([e for e in errors if "refusing new calls" in e]) == 1, errors


def test_serve_unlogged_counts_the_rows_lost_instead_of_refusing(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="proxy")
    blocked_journal(tmp_path)

    async def go():
        store = Store(str(tmp_path / "log.db"))
        await store.migrate()
        breakable(monkeypatch, store, "database or disk is full")["broken"] = True
        recorder = Recorder(store, memory_bytes=5_000, serve_unlogged=True, retry_interval=60, stop_timeout=1)
        await recorder.start()
        for i in range(40):
            recorder.submit(finished(i))
            await asyncio.sleep(0)
        assert recorder.accepting
        lost = recorder.stats()["lost"]
        health = conditions(recorder)
        await recorder.stop()
        await store.dispose()
        return lost, health

    lost, (status_code, status, found) = asyncio.run(go())
    assert 20 < lost < 40
    assert (status_code, status) == (200, "degraded") and "rows_lost" in found
    assert any("log rows LOST so far" in e for e in messages(caplog, logging.ERROR))


def test_health_says_the_writer_is_behind_when_a_row_waited_over_a_second(tmp_path, monkeypatch):
    async def go():
        store = Store(str(tmp_path / "log.db"))
        await store.migrate()
        real_write = store.write

        async def slow(runs, attempt_rows):
            await asyncio.sleep(1.5)
            await real_write(runs, attempt_rows)

        monkeypatch.setattr(store, "write", slow)
        recorder = Recorder(store)
        await recorder.start()
        recorder.submit(finished(1))
        await asyncio.sleep(1.2)
        behind = conditions(recorder)
        await until(lambda: recorder.pending == 0)
        caught_up = conditions(recorder)
        await recorder.stop()
        await store.dispose()
        return behind, caught_up

    behind, caught_up = asyncio.run(go())
    assert behind == (200, "degraded", ["writer_behind"])
    assert caught_up == (200, "ok", [])


def test_a_row_the_database_refuses_is_set_aside_and_does_not_block_the_others(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="proxy")
    db = tmp_path / "log.db"

    async def go():
        store, recorder = await started_recorder(db)
        good = [finished(i) for i in range(4)]
        bad = finished(9, usage={"prompt_tokens": 2**70, "completion_tokens": 1, "total_tokens": 1})
        for r in good[:2] + [bad] + good[2:]:
            recorder.submit(r)
        await recorder.stop()
        await store.dispose()
        return recorder, [r.request_id for r in good], bad.request_id

    recorder, good, bad = asyncio.run(go())
    assert ids(db) == good
    assert not recorder.degraded and recorder.stats()["refused"] == 1
    set_aside = orjson.loads((tmp_path / "log.db.bad.jsonl").read_bytes())
    assert set_aside["run"]["request_id"] == bad and "OverflowError" in set_aside["error"]
    assert list((tmp_path / "log.db.journal").iterdir()) == []  # set aside counts as done


@pytest.mark.parametrize("durability", ["process", "none"])
def test_a_record_that_cannot_be_rendered_still_gets_a_row(tmp_path, monkeypatch, durability):
    db = tmp_path / "log.db"

    async def go():
        store, recorder = await started_recorder(db, durability=durability)
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
        store, recorder = await started_recorder(db)
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
        monkeypatch.setattr(store, "write", lambda *a: migrate())  # down until it is up
        recorder = Recorder(store, retry_interval=0.05)
        await recorder.start()
        assert recorder.degraded
        first = finished(0)
        recorder.submit(first)
        await asyncio.sleep(0.2)
        assert recorder.pending == 1
        monkeypatch.undo()
        state["down"] = False
        await until(lambda: not recorder.degraded and recorder.pending == 0)
        await recorder.stop()
        await store.dispose()
        return first.request_id

    first = asyncio.run(go())
    assert ids(db) == [first]
    assert len([w for w in messages(caplog) if "cannot write the log database" in w]) == 1
