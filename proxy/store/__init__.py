"""The log's storage: schema, migrations and batched writes, with no knowledge of HTTP."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from operator import itemgetter
from pathlib import Path
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite

from .engine import BUSY_TIMEOUT_MS, create_engine, display_url, sqlite_path
from .migrations import migrate
from .schema import attempts, inference_runs
from .writer import SQLiteWriter

log = logging.getLogger("proxy.store")

Row = dict[str, Any]
_SQLITE = sqlite.dialect()  # for quoting column names ("user" is a keyword)

#: The columns that make a row unique: writing a row whose key is already there does nothing.
CONFLICT_KEYS: dict[str, list[str]] = {
    "inference_runs": ["request_id"],
    "attempts": ["request_id", "attempt"],
}


class Store:
    """One database (SQLite file or PostgreSQL) that the recorder writes to.

    `write` is idempotent (rows are keyed by our own UUID `request_id`, and attempts by
    `(request_id, attempt)`), so a batch may safely be written twice. It also migrates a
    database that has not been migrated yet, and notices a SQLite file that was deleted or
    replaced while the proxy runs (SQLite itself would keep writing into the unlinked file,
    and those rows would vanish with it): it then opens the file anew and migrates it.

    Migrations (and everything on PostgreSQL) go through SQLAlchemy's async engine; writes
    to a SQLite file go through one writer thread with its own `sqlite3` connection
    (`SQLiteWriter`), one thread hop per batch.
    """

    def __init__(self, url_or_path: str, busy_timeout_ms: int = BUSY_TIMEOUT_MS, synchronous: str = "NORMAL") -> None:
        """`synchronous`: SQLite's, `NORMAL` (a commit survives the death of the process) or
        `FULL` (a power cut too: durability "power")."""
        self.url = url_or_path
        self.path: Path | None = sqlite_path(url_or_path)
        self.busy_timeout_ms = busy_timeout_ms
        self.synchronous = synchronous
        self.engine = create_engine(url_or_path, busy_timeout_ms, synchronous)
        self._writer: SQLiteWriter | None = None  # started by the first write to a SQLite file
        self.migrated = False
        self._file_id: tuple[int, int] | None = None  # (st_dev, st_ino) of the SQLite file we migrated
        self._inserts: dict[str, Any] = {}  # PostgreSQL's statements, by table

    @property
    def display(self) -> str:
        """The database as it may be printed (password masked)."""
        return str(self.path) if self.path is not None else display_url(self.url)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def migrate(self) -> list[int]:
        async with self.engine.begin() as conn:
            applied = await conn.run_sync(migrate)
        self.migrated = True
        self._file_id = self._stat_file()
        return applied

    async def write(self, runs: Sequence[Row], attempt_rows: Sequence[Row]) -> None:
        """Insert a batch of runs and their attempts in one transaction; rows already there are skipped."""
        await self._ensure_ready()
        if self.path is not None:
            if self._writer is None:
                self._writer = SQLiteWriter(self.path, self.busy_timeout_ms, self.synchronous)
            await self._writer.transaction(_write_sqlite, runs, attempt_rows)
            return
        async with self.engine.begin() as conn:
            if self.dialect == "sqlite":  # in memory: the database lives in the engine's only connection
                await conn.run_sync(lambda sync: _write_sqlite(sync.connection.dbapi_connection, runs, attempt_rows))
                return
            # PostgreSQL: its text cannot hold NUL, the row would be refused
            runs, attempt_rows = _without_nul(runs), _without_nul(attempt_rows)
            for table, rows in ((inference_runs, runs), (attempts, attempt_rows)):
                if rows:
                    await conn.execute(self._insert(table), list(rows))

    async def dispose(self) -> None:
        """Close the writer thread (and its connection) and the engine's pool; a later write opens them again."""
        writer, self._writer = self._writer, None
        try:
            if writer is not None:
                await writer.close()
        finally:
            await self.engine.dispose()

    def _insert(self, table: Table) -> Any:
        """PostgreSQL's INSERT … ON CONFLICT DO NOTHING, built with the dialect's own construct (cached)."""
        statement = self._inserts.get(table.name)
        if statement is None:
            statement = postgresql.insert(table).on_conflict_do_nothing(index_elements=CONFLICT_KEYS[table.name])
            self._inserts[table.name] = statement
        return statement

    async def _ensure_ready(self) -> None:
        """Migrate if needed; reopen a SQLite file that disappeared or was replaced (one stat call)."""
        if self.migrated and self.path is not None and self._file_id is not None:
            if self._stat_file() != self._file_id:
                log.warning(
                    "the log database %s was deleted or replaced while the proxy was running: "
                    "opening it anew (rows already written to the old file are where that file went)",
                    self.path,
                )
                # Close the old connections first (the writer's and the engine's): the last close
                # checkpoints and removes the old file's -wal/-shm, which must not be mistaken
                # for the new file's.
                await self.dispose()
                self.engine = create_engine(self.url, self.busy_timeout_ms, self.synchronous)
                self.migrated = False
        if not self.migrated:
            await self.migrate()

    def _stat_file(self) -> tuple[int, int] | None:
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)


def _write_sqlite(connection: Any, runs: Sequence[Row], attempt_rows: Sequence[Row]) -> None:
    """The batch's statements, inside the caller's transaction: the runs, their full-text
    indexing in one statement (see migration 4), the attempts. `connection` is a DB-API
    one: sqlite3's in the writer thread, aiosqlite's adapter for an in-memory database."""
    cursor = connection.cursor()
    try:
        if runs:
            cursor.execute("SELECT coalesce(max(id), 0) FROM inference_runs")
            (last_id,) = cursor.fetchone()
            cursor.executemany(*_sqlite_insert(inference_runs, runs))
            cursor.execute(
                "INSERT INTO inference_runs_fts(rowid, prompt, response) "
                "SELECT id, prompt, response FROM inference_runs WHERE id > ?",
                (last_id,),
            )
        if attempt_rows:
            cursor.executemany(*_sqlite_insert(attempts, attempt_rows))
    finally:
        cursor.close()


def _sqlite_insert(table: Table, rows: Sequence[Row]) -> tuple[str, Iterator[tuple[Any, ...]]]:
    """`INSERT … ON CONFLICT DO NOTHING` for a batch (every row has the columns of the first)
    and the rows' values in its order: the driver's executemany on tuples, ~20% faster than
    SQLAlchemy's compiled statements.

    A column that is NULL in every row of the batch gets a literal NULL, not a parameter:
    sqlite3 binds None through its adapter lookup (~0.5 µs a value, an integer ~0.15), and a
    logged call has eight or so such columns, ~5 µs of the ~45 that writing a row costs.
    """
    first = rows[0]
    nulls = frozenset(k for k, v in first.items() if v is None and all(row[k] is None for row in rows))
    sql, values = _sqlite_statement(table, tuple(first), nulls)
    return sql, map(values, rows)


@lru_cache(maxsize=256)  # a few column sets in practice; bounded all the same
def _sqlite_statement(table: Table, keys: tuple[str, ...], nulls: frozenset[str]) -> tuple[str, Callable[[Row], tuple[Any, ...]]]:
    unknown = set(keys) - set(table.c.keys())
    if unknown:
        raise ValueError(f"not columns of {table.name}: {sorted(unknown)}")
    quote = _SQLITE.identifier_preparer.quote_identifier
    bound = tuple(k for k in keys if k not in nulls)
    sql = (
        f"INSERT INTO {table.name} ({', '.join(quote(k) for k in keys)}) "
        f"VALUES ({', '.join('NULL' if k in nulls else '?' for k in keys)}) "
        f"ON CONFLICT ({', '.join(quote(k) for k in CONFLICT_KEYS[table.name])}) DO NOTHING"
    )
    values = itemgetter(*bound) if len(bound) > 1 else lambda row: tuple(row[k] for k in bound)
    return sql, values


def _without_nul(rows: Sequence[dict[str, Any]]) -> Sequence[dict[str, Any]]:
    """Rows with any NUL character in a text value replaced by U+FFFD (a copy only where needed)."""
    if not any(isinstance(v, str) and "\x00" in v for row in rows for v in row.values()):
        return rows
    return [
        {k: v.replace("\x00", "\ufffd") if isinstance(v, str) else v for k, v in row.items()} for row in rows
    ]


__all__ = ["Store", "inference_runs", "attempts", "CONFLICT_KEYS"]
