"""The recorder's journal: an answer leaves only once its row is on disk, rows left in the
journal at stop (a locked database, a hanging write, a submit after stop) are written by the next
start, and a bug while journaling costs no row."""

import asyncio
import logging
import sqlite3
import time

import pytest

from proxy import group_commit
from proxy.journal import Journal
from proxy.record import CallRecord
from proxy.recorder import Recorder
from proxy.store import Store
from recorder_helpers import finished, ids, journaled_ids, messages, until


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
    assert any("29 log rows left in the journal" in w and "are in the log now" in w for w in messages(caplog))


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


def test_a_big_batch_is_rendered_in_slices_with_the_event_loop_turning_between_them(tmp_path, monkeypatch):
    """No call in flight waits behind a whole batch's rendering: between two slices of
    `RENDER_SLICE` rows, the loop runs other tasks."""
    from proxy.backlog import RENDER_SLICE

    turns: list[int] = []  # at each row rendered, how many turns the other task had seen
    seen = 0
    real_rows = CallRecord.rows
    monkeypatch.setattr(CallRecord, "rows", lambda self: turns.append(seen) or real_rows(self))

    async def go():
        nonlocal seen
        store = Store(str(tmp_path / "log.db"))
        recorder = Recorder(store, durability="none", linger=0.05)
        await recorder.start()
        records = [finished(i) for i in range(5 * RENDER_SLICE)]
        for record in records:
            recorder.submit(record)
        deadline = time.monotonic() + 10
        while len(turns) < len(records) and time.monotonic() < deadline:  # the writer takes them all
            await asyncio.sleep(0)
            seen += 1
        await recorder.stop()
        await store.dispose()
        return [r.request_id for r in records]

    request_ids = asyncio.run(go())
    assert ids(tmp_path / "log.db") == request_ids
    slices = [turns[i:i + RENDER_SLICE] for i in range(0, len(turns), RENDER_SLICE)]
    assert len(slices) == 5
    assert all(len(set(s)) == 1 for s in slices)  # a slice renders without a break
    assert len({s[0] for s in slices}) == 5  # and the loop turned between any two
