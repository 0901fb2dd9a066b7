"""Connections to the log: SQLite (WAL, NORMAL sync, busy timeout, BEGIN IMMEDIATE) or PostgreSQL.

A SQLite file is created 0600 before SQLite opens it (`proxy.private_files`), so that its
`-wal` and `-shm`, which SQLite gives the database file's mode, are private too.

SQLAlchemy's async engine serves migrations (and every PostgreSQL statement); the SQLite
writes go through a plain `sqlite3` connection (`connect_sqlite`, used by
`proxy.store.writer`). Both get their pragmas from `configure_sqlite_connection`.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ..private_files import prepare_sqlite_file

BUSY_TIMEOUT_MS = 5000
#: `NORMAL`: a commit survives the death of the process; `FULL` (durability "power"): a power cut too.
SYNCHRONOUS = ("NORMAL", "FULL")
#: Checkpoint the WAL every ~80 MB instead of SQLite's ~4 MB: checkpoints run inside the
#: writer's COMMIT (copy and fsync), and a larger WAL copies an often-rewritten page (an
#: index's last leaf, full-text segments) once for many commits. Writing 100,000 rows on
#: the writer thread's connection, pinned to one core, COMMIT cost 30-41 µs a row with the
#: default against 10-12 with this (and ~4 with no checkpoint at all).
WAL_AUTOCHECKPOINT_PAGES = 20_000


def async_database_url(url_or_path: str) -> str:
    """`sqlite:///x.db`, `postgresql://…` or a bare file path → the async driver's URL."""
    if "://" not in url_or_path:
        return f"sqlite+aiosqlite:///{url_or_path}"
    url = make_url(url_or_path)
    driver = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg"}
    if url.drivername in driver:
        url = url.set(drivername=driver[url.drivername])
    elif url.drivername not in driver.values():
        raise ValueError(f"unsupported database URL scheme {url.drivername!r}: use sqlite:/// or postgresql://")
    return url.render_as_string(hide_password=False)


def sqlite_path(url_or_path: str) -> Path | None:
    """The file behind a SQLite URL (None for PostgreSQL or an in-memory database)."""
    url = make_url(async_database_url(url_or_path))
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


#: How long asyncpg may take to connect before the write counts as failed (a dropped packet
#: would otherwise hold the recorder for asyncpg's default of 60 s).
PG_CONNECT_TIMEOUT_S = 10


def create_engine(url_or_path: str, busy_timeout_ms: int = BUSY_TIMEOUT_MS, synchronous: str = "NORMAL") -> AsyncEngine:
    url = async_database_url(url_or_path)
    path = sqlite_path(url_or_path)
    if path is None:
        connect_args = {"timeout": PG_CONNECT_TIMEOUT_S} if url.startswith("postgresql+asyncpg") else {}
        return create_async_engine(url, pool_pre_ping=True, hide_parameters=True, connect_args=connect_args)
    prepare_sqlite_file(path)
    engine = create_async_engine(url, hide_parameters=True)
    _configure_sqlite(engine, busy_timeout_ms, synchronous)
    return engine


def configure_sqlite_connection(connection: Any, busy_timeout_ms: int = BUSY_TIMEOUT_MS, synchronous: str = "NORMAL") -> None:
    """The log's pragmas, on a `sqlite3` connection or SQLAlchemy's aiosqlite adapter of one.

    The busy timeout comes first, so that switching to WAL waits for a lock like any write;
    WAL + NORMAL sync make batches fast and durable. We emit BEGIN IMMEDIATE ourselves (no
    implicit transactions), so the busy timeout applies when a writer starts, not mid-batch.
    """
    if synchronous not in SYNCHRONOUS:
        raise ValueError(f"synchronous must be one of {SYNCHRONOUS}, not {synchronous!r}")
    connection.isolation_level = None
    cursor = connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA synchronous={synchronous}")
    cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
    cursor.close()


def connect_sqlite(path: Path, busy_timeout_ms: int = BUSY_TIMEOUT_MS, synchronous: str = "NORMAL") -> sqlite3.Connection:
    """A plain `sqlite3` connection to the log file, configured like the engine's (for the writer thread)."""
    prepare_sqlite_file(path)
    connection = sqlite3.connect(path)
    try:
        configure_sqlite_connection(connection, busy_timeout_ms, synchronous)
    except BaseException:
        connection.close()
        raise
    return connection


def _configure_sqlite(engine: AsyncEngine, busy_timeout_ms: int, synchronous: str) -> None:
    """The pragmas on every connection of the engine; BEGIN IMMEDIATE for its transactions."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        configure_sqlite_connection(dbapi_connection, busy_timeout_ms, synchronous)

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection):  # type: ignore[no-untyped-def]
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def display_url(url_or_path: str) -> str:
    """The database URL as it may be printed: any password masked."""
    if "://" not in url_or_path:
        return url_or_path
    return make_url(url_or_path).render_as_string(hide_password=True)
