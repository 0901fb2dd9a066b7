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


@pytest.mark.parametrize("name", ["Authorization", "api-key", "X-Api-Key", "Cookie", "Proxy-Authorization", "X-Auth-Token"])
def test_credential_headers_are_redacted(name):
    stored = redact_headers({name: "secret-value", "User-Agent": "sdk"})
    assert stored[name.lower()] == "[redacted]" and stored["user-agent"] == "sdk"


# -- the journal, database trouble, backpressure and /healthz --------------------------------

import logging  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402

from proxy import group_commit  # noqa: E402
from proxy.journal import Journal, read_lines  # noqa: E402
from proxy.logrow import decode  # noqa: E402


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


@pytest.mark.parametrize("durability", ["process", "power"])
def test_an_answer_leaves_only_once_its_row_is_in_the_journal(tmp_path, monkeypatch, durability):
    """Many calls finishing in the same turn of the event loop: one write for all their rows, and
    each answer's first message is sent only after it (and, for power, after a sync)."""
    appends = []
    real_append = Journal.append
    monkeypatch.setattr(Journal, "append", lambda self, lines, rows=1: appends.append(rows) or real_append(self, lines, rows))
    syncs = []
    real_sync = group_commit.sync_all
    monkeypatch.setattr(group_commit, "sync_all", lambda fds: syncs.append(len(appends)) or real_sync(fds))

    async def go():
        store = Store(str(tmp_path / "log.db"))
        recorder = Recorder(store, durability=durability, retry_interval=60)
        await recorder.start()
        seen = {}

        async def call(i: int) -> str:
            record = finished(i)
            recorder.submit(record)

            async def send(message):  # what the client would get: the row must be on disk by now
                on_disk = record.request_id in journaled_ids(tmp_path / "log.db.journal") or \
                    record.request_id in ids(tmp_path / "log.db")  # or already through the journal
                seen[record.request_id] = (on_disk, len(syncs))

            await recorder.commit.durable_send(send)({"type": "http.response.start"})
            return record.request_id

        recorder.commit.active = 50  # as the app counts them: fifty calls in progress
        ids_ = await asyncio.gather(*(call(i) for i in range(50)))
        await recorder.stop()
        await store.dispose()
        return ids_, seen

    ids_, seen = asyncio.run(go())
    assert appends == [50]  # one write for the fifty rows
    assert all(on_disk for on_disk, _ in seen.values()) and set(seen) == set(ids_)
    if durability == "power":
        assert all(synced >= 1 for _, synced in seen.values()) and len(syncs) <= 2
    assert ids(tmp_path / "log.db") == ids_


def test_durability_none_renders_the_row_off_the_response_path_and_journals_nothing(tmp_path, monkeypatch):
    rendered = []
    real_rows = CallRecord.rows
    monkeypatch.setattr(CallRecord, "rows", lambda self: rendered.append(self.request_id) or real_rows(self))

    async def go():
        store = Store(str(tmp_path / "log.db"))
        recorder = Recorder(store, durability="none")
        await recorder.start()
        record = finished(1)
        recorder.submit(record)
        at_submit = list(rendered), journaled_ids(tmp_path / "log.db.journal")
        await recorder.stop()
        await store.dispose()
        return record.request_id, at_submit

    request_id, (rendered_at_submit, journaled_at_submit) = asyncio.run(go())
    assert rendered_at_submit == [] and journaled_at_submit == []
    assert rendered == [request_id] and ids(tmp_path / "log.db") == [request_id]


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
def test_stop_while_the_database_is_locked_leaves_the_rows_in_the_journal_for_the_next_start(tmp_path, caplog, durability):
    """A real lock: another connection holds BEGIN IMMEDIATE past the (shortened) busy timeout."""
    caplog.set_level(logging.INFO, logger="proxy")
    db = tmp_path / "log.db"

    async def first_run():
        store = Store(str(db), busy_timeout_ms=100)
        await store.migrate()
        recorder = Recorder(store, durability=durability, retry_interval=60)
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
    assert stop_took < 3 and recorder.stats()["lost"] == 0
    assert ids(db) == ids(db)[:1] and len(ids(db)) == 1
    assert journaled_ids(tmp_path / "log.db.journal")[-len(late):] == late
    assert any("29 log rows wait in the journal" in w for w in messages(caplog))

    async def second_run():
        store = Store(str(db))
        recorder = Recorder(store, durability=durability)
        await recorder.start()
        assert journaled_ids(tmp_path / "log.db.journal") == []  # written before start() returned
        new = finished(99)
        recorder.submit(new)
        await recorder.stop()
        await store.dispose()
        return recorder, new.request_id

    recorder, new = asyncio.run(second_run())
    assert recorder.replayed == 29 and not recorder.degraded
    assert ids(db)[1:] == late + [new]
    assert any("wrote 29 log rows left in the journal" in w for w in messages(caplog))


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


def blocked_journal(tmp_path):
    """A file where the journal directory should be: the journal cannot be written."""
    path = tmp_path / "log.db.journal"
    path.write_text("not a directory")
    return path


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


@pytest.mark.parametrize("durability", ["process", "none"])
def test_stop_is_bounded_even_if_a_write_hangs_and_the_rows_wait_in_the_journal(tmp_path, monkeypatch, durability):
    async def go():
        store = Store(str(tmp_path / "log.db"))
        await store.migrate()

        async def hang(runs, attempt_rows):
            await asyncio.Event().wait()

        monkeypatch.setattr(store, "write", hang)
        recorder = Recorder(store, durability=durability, max_batch=5)
        await recorder.start()
        submitted = [finished(i) for i in range(12)]
        for r in submitted:
            recorder.submit(r)
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await recorder.stop(timeout=0.3)
        took = time.monotonic() - started
        await store.dispose()
        return recorder, took, [r.request_id for r in submitted]

    recorder, took, submitted = asyncio.run(go())
    assert took < 1.5 and recorder.stats()["lost"] == 0
    assert journaled_ids(tmp_path / "log.db.journal") == submitted


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
    assert not recorder.degraded and recorder.stats()["refused"] == 1
    set_aside = orjson.loads((tmp_path / "log.db.bad.jsonl").read_bytes())
    assert set_aside["run"]["request_id"] == bad and "OverflowError" in set_aside["error"]
    assert list((tmp_path / "log.db.journal").iterdir()) == []  # set aside counts as done


@pytest.mark.parametrize("durability", ["process", "none"])
def test_a_record_that_cannot_be_rendered_still_gets_a_row(tmp_path, monkeypatch, durability):
    db = tmp_path / "log.db"

    async def go():
        store = Store(str(db))
        await store.migrate()
        recorder = Recorder(store, durability=durability)
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


def test_rows_submitted_after_stop_go_to_the_journal_and_the_next_start_writes_them(tmp_path):
    async def go():
        store = Store(str(tmp_path / "log.db"))
        recorder = Recorder(store)
        await recorder.start()
        await recorder.stop()
        late = finished(1)
        recorder.submit(late)
        await store.dispose()
        on_disk = journaled_ids(tmp_path / "log.db.journal")
        store = Store(str(tmp_path / "log.db"))
        again = Recorder(store)
        await again.start()
        await again.stop()
        await store.dispose()
        return late.request_id, on_disk

    late, on_disk = asyncio.run(go())
    assert on_disk == [late] and ids(tmp_path / "log.db") == [late]


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


def test_a_bug_while_journaling_does_not_cost_the_rows(tmp_path, monkeypatch, caplog):
    from proxy.backlog import Backlog

    def broken(self, records):
        raise RuntimeError("a bug")

    monkeypatch.setattr(Backlog, "place_batch", broken)

    async def go():
        store = Store(str(tmp_path / "log.db"))
        recorder = Recorder(store)
        await recorder.start()
        submitted = [finished(i) for i in range(3)]
        for r in submitted:
            recorder.submit(r)
        await recorder.stop()
        await store.dispose()
        return [r.request_id for r in submitted]

    submitted = asyncio.run(go())
    assert ids(tmp_path / "log.db") == submitted
    assert any("could not journal 3 log rows" in m for m in messages(caplog, logging.ERROR))
