"""Every log file is readable by its owner only (0600; the journal directory 0700), whatever the
umask: the database, its -wal and -shm (which SQLite creates later), the journal's lock and
segments, and the `.bad` file; an existing database made 0644 by an earlier version is narrowed."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat

import pytest

from proxy.recorder import Recorder
from proxy.store import Store
from test_recorder import finished


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_every_log_file_is_private_under_umask_022(tmp_path, umask_022):
    db = tmp_path / "log.db"
    seen = {}

    async def go():
        store = Store(str(db))
        recorder = Recorder(store, retry_interval=60)
        await recorder.start()
        recorder.submit(finished(1))
        recorder.submit(finished(2, usage={"prompt_tokens": 2**70, "completion_tokens": 1, "total_tokens": 1}))
        while recorder.pending:
            await asyncio.sleep(0.01)
        journal = tmp_path / "log.db.journal"
        seen.update({p.name: mode(p) for p in [db, tmp_path / "log.db-wal", tmp_path / "log.db-shm", journal,
                                               *journal.iterdir()]})
        await recorder.stop()
        await store.dispose()

    asyncio.run(go())
    assert seen.pop("log.db.journal") == 0o700
    assert any(name.endswith(".lock") for name in seen) and any(name.endswith(".jsonl") for name in seen)
    assert seen == {name: 0o600 for name in seen}, seen
    assert mode(tmp_path / "log.db.bad.jsonl") == 0o600  # the refused row went there
    with open(tmp_path / "control", "w"):
        pass
    assert mode(tmp_path / "control") == 0o644  # the umask was really 022


def test_an_existing_world_readable_database_is_narrowed(tmp_path, umask_022):
    db = tmp_path / "old.db"
    sqlite3.connect(db).execute("CREATE TABLE t (x)").connection.close()
    os.chmod(db, 0o644)

    async def go():
        store = Store(str(db))
        await store.write(*_rows())
        await store.dispose()

    asyncio.run(go())
    assert mode(db) == 0o600


def _rows():
    run, attempts = finished(1).rows()
    return [run], attempts
