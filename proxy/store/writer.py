"""The one thread that writes the log's SQLite file, on a plain `sqlite3` connection of its own.

Through SQLAlchemy's async engine and aiosqlite, every statement of a batch (BEGIN, SELECT,
two executemany, the full-text insert, COMMIT) was a hop to aiosqlite's thread and back,
each waking the event loop. Here the whole transaction is one hop: the event loop hands a
function to the writer thread and is woken once, when it has committed or rolled back. One
writer thread per database, as in Datasette: SQLite takes one writer at a time anyway.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from .engine import BUSY_TIMEOUT_MS, connect_sqlite
from .writable import check_writable, unwritable_file

T = TypeVar("T")


class SQLiteWriter:
    """Runs functions in one transaction each, in order, on one thread and one connection.

    The connection is opened in the thread on first use (and again after a failed open), so
    it is only ever touched by that thread. A caller that stops waiting (the recorder's
    `write_timeout`) does not stop a transaction already running: it commits or rolls back
    in the thread, and the next one waits for it. That is safe because the log's writes are
    idempotent (`Store.write`).
    """

    def __init__(self, path: Path, busy_timeout_ms: int = BUSY_TIMEOUT_MS, synchronous: str = "NORMAL") -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self.synchronous = synchronous
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._connection: sqlite3.Connection | None = None

    async def transaction(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(connection, *args)` between BEGIN IMMEDIATE and COMMIT in the writer thread;
        rolled back if it raises (the exception is raised here, as sqlite3 raised it)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._transaction, fn, *args)

    async def close(self) -> None:
        """Close the connection in its thread (the last close checkpoints the WAL), then end the thread."""
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._close)
        finally:
            self._executor.shutdown(wait=False)

    def _transaction(self, fn: Callable[..., T], *args: Any) -> T:
        check_writable(self.path)  # before SQLite writes to a mapped -shm that would SIGBUS
        if self._connection is None:
            self._connection = connect_sqlite(self.path, self.busy_timeout_ms, self.synchronous)
        connection = self._connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            result = fn(connection, *args)
            connection.execute("COMMIT")
        except BaseException:
            try:
                if connection.in_transaction:  # SQLite may have rolled back by itself (disk full, say)
                    connection.execute("ROLLBACK")
            except sqlite3.Error:  # a fresh connection next time, not one stuck in this transaction
                self._close()
            raise
        return result

    def _close(self) -> None:
        if self._connection is not None:
            if unwritable_file(self.path) is not None:  # closing checkpoints, which writes the -shm
                _ABANDONED.append(self._connection)
            else:
                self._connection.close()
            self._connection = None


#: Connections left open because closing them would write to files that may not be written;
#: the process's exit releases them.
_ABANDONED: list[sqlite3.Connection] = []
