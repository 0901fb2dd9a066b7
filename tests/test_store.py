"""The store: idempotent writes (what replaying a journal relies on), migrations, the SQLite
writer thread and its pragmas, private files."""

import asyncio
import re
import sqlite3
import threading
import time
import uuid
from pathlib import Path

import orjson
import pytest
from sqlalchemy import event

from postgres_helpers import POSTGRES_URL, needs_postgres
from proxy import record as record_module
from proxy.record import CallRecord, new_request_id
from proxy.log_writer import is_row_error
from proxy.store import Store
from proxy.store.engine import WAL_AUTOCHECKPOINT_PAGES
from proxy.store.writer import SQLiteWriter

def batch(n: int, attempts_each: int = 1, start: int = 0) -> tuple[list[dict], list[dict]]:
    runs, attempt_rows = [], []
    for i in range(start, start + n):
        record = CallRecord("chat/completions", model="mock/m", provider="mock", upstream_model="m")
        record.payload = {"model": "mock/m", "messages": [{"role": "user", "content": f"question {i} ünïcode"}]}
        record.response_body = orjson.dumps({"choices": [{"message": {"content": f"answer {i}"}}]})
        for _ in range(attempts_each):
            record.begin_attempt("mock", "/chat/completions").finish(200)
        record.finish(200)
        run, its = record.rows()
        runs.append(run)
        attempt_rows.extend(its)
    return runs, attempt_rows


def query(path: Path, sql: str) -> list[tuple]:
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def count(path: Path, table: str = "inference_runs") -> int:
    return query(path, f"SELECT count(*) FROM {table}")[0][0]


async def new_store(path: Path) -> Store:
    store = Store(str(path))
    await store.migrate()
    return store


# -- the store: idempotent writes and migration 3 -------------------------------------------


def test_writing_the_same_rows_twice_adds_nothing(tmp_path):
    async def go():
        store = await new_store(tmp_path / "log.db")
        runs, attempt_rows = batch(5, attempts_each=3)
        await store.write(runs, attempt_rows)
        await store.write(runs, attempt_rows)
        await store.write(runs[:2] + batch(1, start=9)[0], attempt_rows[:4])  # overlapping batch
        await store.dispose()

    asyncio.run(go())
    assert count(tmp_path / "log.db") == 6
    assert count(tmp_path / "log.db", "attempts") == 15
    # full-text search saw each run once
    assert query(tmp_path / "log.db", "SELECT count(*) FROM inference_runs_fts")[0][0] == 6


def test_migration_3_removes_duplicate_attempts_of_an_older_log(tmp_path):
    path = tmp_path / "old.db"

    async def make_old():
        store = await new_store(path)
        await store.write(*batch(2, attempts_each=2))
        await store.dispose()

    asyncio.run(make_old())
    db = sqlite3.connect(path)
    db.execute("DROP INDEX ux_attempts_request_id_attempt")
    db.execute("DELETE FROM schema_migrations WHERE version = 3")
    db.execute("INSERT INTO attempts (request_id, attempt, provider, started_at) "
               "SELECT request_id, attempt, provider, started_at FROM attempts")
    db.commit()
    db.close()
    assert count(path, "attempts") == 8

    async def upgrade():
        store = Store(str(path))
        applied = await store.migrate()
        await store.dispose()
        return applied

    assert asyncio.run(upgrade()) == [3]
    assert count(path, "attempts") == 4
    with pytest.raises(sqlite3.IntegrityError):
        db = sqlite3.connect(path)
        db.execute("INSERT INTO attempts (request_id, attempt, started_at) SELECT request_id, attempt, started_at FROM attempts LIMIT 1")


def test_write_migrates_a_database_that_was_not_migrated(tmp_path):
    async def go():
        store = Store(str(tmp_path / "log.db"))
        await store.write(*batch(2))
        await store.dispose()

    asyncio.run(go())
    assert count(tmp_path / "log.db") == 2


# -- the store's SQLite writer thread -------------------------------------------------------


def test_a_sqlite_write_is_one_call_in_the_writer_thread_not_through_sqlalchemy(tmp_path, monkeypatch):
    async def go():
        store = await new_store(tmp_path / "log.db")
        through_sqlalchemy: list[str] = []
        event.listen(store.engine.sync_engine, "before_cursor_execute", lambda *a: through_sqlalchemy.append(a[2]))
        threads, real = [], SQLiteWriter._transaction

        def spy(self, fn, *args):
            threads.append(threading.current_thread())
            return real(self, fn, *args)

        monkeypatch.setattr(SQLiteWriter, "_transaction", spy)
        for i in range(3):
            await store.write(*batch(4, attempts_each=2, start=i * 4))
        await store.dispose()
        return through_sqlalchemy, threads

    through_sqlalchemy, threads = asyncio.run(go())
    assert through_sqlalchemy == []
    assert len(threads) == 3 and len(set(threads)) == 1  # one hop per batch, always the same thread
    assert threads[0].name.startswith("sqlite-writer") and threads[0] is not threading.main_thread()
    threads[0].join(timeout=5)
    assert not threads[0].is_alive()  # dispose() ended it
    assert count(tmp_path / "log.db") == 12 and count(tmp_path / "log.db", "attempts") == 24
    assert query(tmp_path / "log.db", "SELECT count(*) FROM inference_runs_fts")[0][0] == 12


def test_every_value_is_stored_as_given_whichever_columns_are_null_in_the_batch(tmp_path):
    runs, attempt_rows = batch(4, attempts_each=2)
    runs[1]["error"], runs[2]["session_id"] = "boom", "s1"  # NULL in some rows, not in all
    attempt_rows[3]["error"] = "retried"
    lone_run, lone_attempts = batch(1, start=9)  # a batch of one: every NULL column alone

    async def go():
        store = await new_store(tmp_path / "log.db")
        await store.write(runs, attempt_rows)
        await store.write(lone_run, lone_attempts)
        await store.dispose()

    asyncio.run(go())
    db = sqlite3.connect(tmp_path / "log.db")
    db.row_factory = sqlite3.Row
    stored = [{k: r[k] for k in runs[0]} for r in db.execute("SELECT * FROM inference_runs ORDER BY id")]
    stored_attempts = [{k: r[k] for k in attempt_rows[0]} for r in db.execute("SELECT * FROM attempts ORDER BY id")]
    db.close()
    assert stored == runs + lone_run
    assert stored_attempts == attempt_rows + lone_attempts


def test_the_writer_connection_gets_the_same_pragmas_as_the_engine(tmp_path):
    pragmas = ["PRAGMA journal_mode", "PRAGMA synchronous", "PRAGMA busy_timeout", "PRAGMA wal_autocheckpoint"]

    async def go():
        store = Store(str(tmp_path / "log.db"), busy_timeout_ms=1234)
        await store.migrate()
        await store.write(*batch(1))
        writer = await store._writer.transaction(lambda c: [c.execute(q).fetchone()[0] for q in pragmas])
        async with store.engine.connect() as conn:
            engine = [(await conn.exec_driver_sql(q)).scalar() for q in pragmas]
        await store.dispose()
        return writer, engine

    writer, engine = asyncio.run(go())
    assert writer == engine == ["wal", 1, 1234, WAL_AUTOCHECKPOINT_PAGES]  # synchronous=NORMAL is 1


def test_durability_power_commits_with_synchronous_full(tmp_path):
    async def go():
        store = Store(str(tmp_path / "log.db"), synchronous="FULL")
        await store.write(*batch(1))
        writer = await store._writer.transaction(lambda c: c.execute("PRAGMA synchronous").fetchone()[0])
        async with store.engine.connect() as conn:
            engine = (await conn.exec_driver_sql("PRAGMA synchronous")).scalar()
        await store.dispose()
        return writer, engine

    assert asyncio.run(go()) == (2, 2)  # FULL is 2


def test_a_refused_batch_is_rolled_back_whole_and_the_next_one_is_written(tmp_path):
    async def go():
        store = await new_store(tmp_path / "log.db")
        runs, attempt_rows = batch(3)
        attempt_rows[-1]["latency_ms"] = 2**70  # refused by sqlite3 itself, after the runs went in
        with pytest.raises(OverflowError) as refused:
            await store.write(runs, attempt_rows)
        await store.write(*batch(2, start=10))
        await store.dispose()
        return refused.value

    refused = asyncio.run(go())
    assert is_row_error(refused)
    assert count(tmp_path / "log.db") == 2 and count(tmp_path / "log.db", "attempts") == 2
    assert query(tmp_path / "log.db", "SELECT count(*) FROM inference_runs_fts")[0][0] == 2


def test_a_locked_database_raises_sqlite3s_own_error_and_counts_as_unavailable(tmp_path):
    db = tmp_path / "log.db"

    async def go():
        store = Store(str(db), busy_timeout_ms=50)
        await store.migrate()
        locker = sqlite3.connect(db, isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked") as locked:
                await store.write(*batch(1))
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        await store.write(*batch(1, start=5))  # the writer's connection is not left in a transaction
        await store.dispose()
        return locked.value

    locked = asyncio.run(go())
    assert not is_row_error(locked)
    assert count(db) == 1


def test_an_in_memory_database_is_written_through_the_engine():
    async def go():
        store = Store("sqlite:///:memory:")
        await store.migrate()
        runs, attempt_rows = batch(3, attempts_each=2)
        await store.write(runs, attempt_rows)
        await store.write(runs, attempt_rows)
        async with store.engine.connect() as conn:
            counts = [
                (await conn.exec_driver_sql(f"SELECT count(*) FROM {table}")).scalar()
                for table in ("inference_runs", "attempts", "inference_runs_fts")
            ]
        await store.dispose()
        return counts

    assert asyncio.run(go()) == [3, 6, 3]


@needs_postgres
def test_idempotent_writes_on_postgres():
    async def go():
        store = Store(POSTGRES_URL)
        await store.migrate()
        runs, attempt_rows = batch(4, attempts_each=2)
        runs[0]["prompt"] = "a NUL \x00 in the prompt"  # PostgreSQL text cannot hold it
        await store.write(runs[:2], attempt_rows[:4])
        await store.write(runs, attempt_rows)  # as a journal replay does: the first two are there already
        ids = [r["request_id"] for r in runs]
        async with store.engine.connect() as conn:
            n_runs = (await conn.exec_driver_sql(
                "SELECT count(*) FROM inference_runs WHERE request_id = ANY($1)", (ids,))).scalar()
            n_attempts = (await conn.exec_driver_sql(
                "SELECT count(*) FROM attempts WHERE request_id = ANY($1)", (ids,))).scalar()
            prompt = (await conn.exec_driver_sql(
                "SELECT prompt FROM inference_runs WHERE request_id = $1", (ids[0],))).scalar()
        await store.dispose()
        return n_runs, n_attempts, prompt

    n_runs, n_attempts, prompt = asyncio.run(go())
    assert (n_runs, n_attempts) == (4, 8)
    assert prompt == "a NUL \ufffd in the prompt"


def test_request_ids_are_our_own_time_ordered_uuids():
    runs, _ = batch(3)
    now_ms = time.time_ns() // 1_000_000
    for run in runs:
        assert re.fullmatch("[0-9a-f]{32}", run["request_id"])
        parsed = uuid.UUID(hex=run["request_id"])
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
        assert abs(int(run["request_id"][:12], 16) - now_ms) < 60_000  # 48 bits of Unix milliseconds
    assert len({run["request_id"] for run in runs}) == 3


def test_a_later_request_id_sorts_after_an_earlier_one_whatever_its_random_bits(monkeypatch):
    clock = iter([1_700_000_000_000, 1_700_000_000_001, 1_700_000_000_002])
    randoms = iter([2**80 - 1, 0, 2**79])  # the earlier ids get the larger random parts
    monkeypatch.setattr(record_module.time, "time_ns", lambda: next(clock) * 1_000_000)
    monkeypatch.setattr(record_module.random, "getrandbits", lambda k: next(randoms) & (2**k - 1))
    ids = [new_request_id() for _ in range(3)]
    monkeypatch.undo()
    assert sorted(ids) == ids and len(set(ids)) == 3
    assert all(uuid.UUID(hex=i).version == 7 and uuid.UUID(hex=i).variant == uuid.RFC_4122 for i in ids)


def test_request_ids_sort_by_time_on_the_real_clock():
    ids = []
    for _ in range(5):
        ids.append(new_request_id())
        time.sleep(0.002)  # into the next millisecond
    assert sorted(ids) == ids
