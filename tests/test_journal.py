"""The journal's files: one write per row, rotation and deletion once rows are in the database,
locks that tell dead processes from live ones, and replaying what a dead process left."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from proxy.group_commit import GroupCommit
from proxy.journal import Journal, read_lines
from proxy.logrow import decode, dump_line, journal_line
from proxy.orphans import adopt
from proxy.record import CallRecord
from proxy.recorder import Recorder
from proxy.store import Store

REPO = Path(__file__).resolve().parent.parent


def record(i: int) -> CallRecord:
    r = CallRecord("chat/completions", model="mock/m", provider="mock", upstream_model="m")
    r.payload = {"model": "mock/m", "messages": [{"role": "user", "content": f"question {i} ünïcode"}]}
    r.request_text = orjson.dumps(r.payload).decode()
    r.response_body = orjson.dumps({"choices": [{"message": {"content": f"answer {i}"}}]})
    r.begin_attempt("mock", "/chat/completions").finish(200)
    r.finish(200)
    return r


def lines(n: int, start: int = 0) -> list[bytes]:
    return [journal_line(record(i)) for i in range(start, start + n)]


def row_lines(n: int, start: int = 0) -> list[bytes]:
    """Rendered rows as lines: what the spools of earlier versions hold."""
    return [dump_line(dict(zip(("run", "attempts"), record(i).rows()))) for i in range(start, start + n)]


def files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def replay(db: Path) -> Recorder:
    """Start a recorder over `db` (it replays the journals it finds) and stop it; the recorder."""

    async def go() -> Recorder:
        store = Store(str(db))
        recorder = Recorder(store)
        await recorder.start()
        await recorder.stop()
        await store.dispose()
        return recorder

    return asyncio.run(go())


def ids_in(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute("SELECT request_id FROM inference_runs ORDER BY id")]
    finally:
        conn.close()


def crash(journal: Journal) -> None:
    """What the death of the process leaves: the files, and no lock held."""
    for segment in journal.segments.values():
        os.close(segment.fd)
    os.close(journal._lock_fd)
    journal.segments.clear()
    journal.current = journal._lock_fd = None


def test_each_row_is_one_write_of_its_line_and_reads_back_as_the_same_row(tmp_path, monkeypatch):
    journal = Journal(tmp_path / "j")
    journal.open()
    writes = []
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: writes.append(len(data)) or real_write(fd, data))
    records = [record(i) for i in range(3)]
    segments = [journal.append(journal_line(r)) for r in records]
    monkeypatch.undo()
    assert writes == [len(journal_line(r)) for r in records]  # one write each, the whole line
    assert segments == [journal.current] * 3 and journal.current.rows == 3
    got, end, torn = read_lines(journal.current.path, 0, None, 10)
    runs, attempt_rows = decode(got)
    rows = [r.rows() for r in records]
    assert runs == [run for run, _ in rows] and attempt_rows == [a for _, its in rows for a in its]
    assert end == journal.current.size and torn == b""
    journal.close()


def test_a_failed_append_leaves_nothing_behind(tmp_path, monkeypatch):
    journal = Journal(tmp_path / "j")
    journal.open()
    first, second = lines(2)
    journal.append(first)
    real_write = os.write

    def disk_full(fd, data):
        real_write(fd, bytes(data[:20]))  # part of the line made it, then the disk filled up
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full)
    with pytest.raises(OSError):
        journal.append(second)
    monkeypatch.undo()
    assert journal.current.path.read_bytes() == first and journal.current.rows == 1
    journal.close()


def test_segments_rotate_and_are_deleted_once_their_rows_are_in_the_database(tmp_path):
    six = lines(6)
    journal = Journal(tmp_path / "j", segment_bytes=2 * min(map(len, six)))  # a new file every 2 rows
    journal.open()
    held = [journal.append(line) for line in six]
    assert len(journal.segments) >= 3 and held[0] is not journal.current
    first = held[0]
    journal.settle(first, held.count(first) - 1)
    assert first.path.exists()  # one row of it is not in the database yet
    journal.settle(first, 1)
    assert not first.path.exists() and first.seq not in journal.segments
    for segment in {s.seq: s for s in held[1:]}.values():
        journal.settle(segment, held.count(segment))
    current = journal.current
    if current.rows:  # the file being appended to is truncated once all of its rows are in
        assert current.size == 0
    assert journal.unsettled == 0
    journal.close()
    assert files(tmp_path / "j") == []  # a clean close with every row written leaves nothing


def test_close_keeps_unwritten_rows_and_releases_the_lock_for_the_next_start(tmp_path):
    journal = Journal(tmp_path / "j")
    journal.open()
    for line in lines(3):
        journal.append(line)
    assert journal.close() == 3
    [orphan] = adopt(tmp_path / "j", own_id=None)
    assert orphan.name == journal.id and len(orphan.files) == 1
    got, _, _ = orphan.read(10)
    assert len(got) == 3
    orphan.release()


def test_a_live_siblings_journal_is_not_touched_and_a_dead_ones_is_adopted(tmp_path):
    directory = tmp_path / "j"
    script = (
        "import sys; from proxy.journal import Journal; j = Journal(sys.argv[1]); j.open(); "
        "j.append(b'{\"run\": null, \"attempts\": []}\\n'); print(j.id, flush=True); sys.stdin.read()"
    )
    child = subprocess.Popen([sys.executable, "-c", script, str(directory)], cwd=REPO, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        sibling = child.stdout.readline().strip()
        assert sibling, "the sibling did not start"
        before = files(directory)
        assert adopt(directory, own_id=None) == []  # alive: its lock cannot be taken
        assert files(directory) == before
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        [orphan] = adopt(directory, own_id=None)
        assert orphan.name == sibling
        assert adopt(directory, own_id=None) == []  # adopted: held by us now, not by a second starter
        orphan.release()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)


def test_segments_without_a_lock_are_adopted_and_a_lock_with_nothing_left_is_removed(tmp_path):
    directory = tmp_path / "j"
    directory.mkdir()
    (directory / "111-aaaa.000000.jsonl").write_bytes(b"".join(lines(2)))
    (directory / "222-bbbb.lock").write_bytes(b"")
    [orphan] = adopt(directory, own_id=None)
    assert orphan.name == "111-aaaa" and (directory / "111-aaaa.lock").exists()
    assert not (directory / "222-bbbb.lock").exists()
    orphan.release()


def test_replaying_a_dead_processs_journal_twice_adds_nothing(tmp_path):
    db = tmp_path / "log.db"

    def run(journal_copy: bytes | None) -> Recorder:
        if journal_copy is not None:
            (tmp_path / "log.db.journal").mkdir(exist_ok=True)
            (tmp_path / "log.db.journal" / "9-dead.000000.jsonl").write_bytes(journal_copy)
        return replay(db)

    dead = Journal(tmp_path / "log.db.journal")
    dead.open()
    for line in lines(5):
        dead.append(line)
    copy = dead.current.path.read_bytes()
    crash(dead)
    first = run(None)
    again = run(copy)  # the same rows once more (a replay cut short after its commit)
    assert first.replayed == 5 and again.replayed == 5
    assert len(ids_in(db)) == 5 and len(set(ids_in(db))) == 5
    assert files(tmp_path / "log.db.journal") == []


def test_a_torn_last_line_is_skipped_counted_and_set_aside(tmp_path):
    directory = tmp_path / "log.db.journal"
    dead = Journal(directory)
    dead.open()
    for line in lines(3):
        dead.append(line)
    with open(dead.current.path, "ab") as f:
        f.write(lines(1, start=9)[0][:40])  # the crash came in the middle of a write
    crash(dead)

    recorder = replay(tmp_path / "log.db")
    assert recorder.replayed == 3 and recorder.torn == 1 and recorder.stats()["torn"] == 1
    assert len(ids_in(tmp_path / "log.db")) == 3
    bad = (tmp_path / "log.db.bad.jsonl").read_bytes()
    assert bad.count(b"\n") == 1 and bad.startswith(lines(1, start=9)[0][:20])
    assert files(directory) == []


def test_a_spool_of_an_earlier_version_is_replayed_on_start(tmp_path):
    spool = tmp_path / "log.db.spool.jsonl"
    replaying = tmp_path / "log.db.spool.jsonl.replaying"
    replaying.write_bytes(b"".join(row_lines(2)))  # a replay cut short
    spool.write_bytes(b"".join(row_lines(3, start=10)))

    assert replay(tmp_path / "log.db").replayed == 5
    assert not spool.exists() and not replaying.exists()
    assert len(ids_in(tmp_path / "log.db")) == 5


def test_read_lines_stops_at_the_limit_and_at_a_torn_tail(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_bytes(b"a\nbb\nccc\ndd")
    assert read_lines(path, 0, None, 2) == ([b"a\n", b"bb\n"], 5, b"")
    assert read_lines(path, 5, None, 10) == ([b"ccc\n"], 9, b"dd")
    assert read_lines(path, 0, 5, 10) == ([b"a\n", b"bb\n"], 5, b"")


def test_group_commit_syncs_many_waiters_with_few_syncs(tmp_path, monkeypatch):
    syncs = []

    def slow_sync(fds):
        syncs.append(fds)
        time.sleep(0.01)

    monkeypatch.setattr("proxy.group_commit.sync_all", slow_sync)
    fd = os.open(tmp_path / "f", os.O_CREAT | os.O_WRONLY, 0o600)
    written = []

    async def go() -> tuple[int, int]:
        commit = GroupCommit(lambda: written.append(commit.queued), lambda: [fd])

        async def answer() -> None:
            commit.submitted()  # a row, then its answer's send
            await commit.durable_send(lambda message: asyncio.sleep(0))({"type": "http.response.start"})

        tasks = []
        for _ in range(50):  # 50 calls answered within a few ms of each other
            tasks.append(asyncio.create_task(answer()))
            await asyncio.sleep(0.001)
        await asyncio.gather(*tasks)
        await commit.close()
        return commit.synced, len(syncs)

    try:
        synced, count = asyncio.run(go())
    finally:
        os.close(fd)
    assert synced == 50 and written[-1] == 50
    assert 2 <= count <= 15, count  # grouped: far fewer syncs than answers (each write came alone)


def _turns_waited(active: int, answers: int) -> tuple[list[int], list[int]]:
    """(the journal writes, each as the tickets it covered; how many turns of the loop each
    answer's send waited), for `answers` answered in one turn with `active` calls in progress."""
    writes: list[int] = []

    async def go() -> list[int]:
        commit = GroupCommit(lambda: writes.append(commit.queued))
        commit.active = active
        turns = 0

        async def ticker() -> None:
            nonlocal turns
            while True:
                turns += 1
                await asyncio.sleep(0)

        async def sent(message: dict) -> None:  # the transport's write: no wait
            return None

        async def answer() -> int:
            commit.submitted()
            start = turns
            await commit.durable_send(sent)({"type": "http.response.start"})
            return turns - start

        clock = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        waited = await asyncio.gather(*(answer() for _ in range(answers)))
        clock.cancel()
        return list(waited)

    return writes, asyncio.run(go())


def test_under_load_answers_share_one_write_and_wait_one_turn():
    writes, waited = _turns_waited(active=32, answers=5)
    assert writes == [5]  # the five rows of one turn, one write
    assert max(waited) <= 1, waited  # waiting for a future took two turns: milliseconds at moderate load


def test_with_few_calls_in_progress_each_answer_writes_its_row_at_once():
    writes, waited = _turns_waited(active=2, answers=2)
    assert writes == [1, 2] and waited == [0, 0]
