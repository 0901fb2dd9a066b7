"""`study-query-llm export`: the log (PostgreSQL or SQLite) copied into a SQLite file for Datasette.

People who outgrow SQLite keep their analysis home: the copy has the log's schema, its
migrations and its full-text index, so `study-query-llm ui --db COPY.db` serves it with every
canned query and the dashboard, and `serve` on PostgreSQL mounts one at `/ui/`
(`analytics.ui_copy`).

The target is migrated with the proxy's own migrations, then filled in batches, keeping the
source's `id`s (the full-text index's rowids). Run again on the same file, it copies only
what is new: rows above the copy's highest id, and rows up to `LOOKBACK_IDS` below it that it
lacks, because on PostgreSQL ids are taken when a transaction starts, so a batch that
committed late can hold ids below rows already copied. Rows already there are skipped, so a
copy interrupted halfway is finished by the next run.

The table `copy_state` (hidden in Datasette) says where the copy comes from and when it was
made; the start page shows its age.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncConnection

from proxy.clock import utc_now
from proxy.store import Store, attempts, inference_runs
from proxy.store.engine import connect_sqlite, display_url, sqlite_path

from .timespec import log_time, parse_time

BATCH_ROWS = 1000
#: How far below the copy's highest id a run looks for rows that committed late.
LOOKBACK_IDS = 10_000
COPY_STATE = "copy_state"
#: Tables copied, and the column their `--since` applies to.
TABLES: tuple[tuple[Table, str], ...] = ((inference_runs, "created_at"), (attempts, "started_at"))


@dataclass(frozen=True)
class Exported:
    """What one export run copied."""

    target: Path
    runs: int
    attempts: int
    seconds: float


async def export(
    source: str,
    target: str | os.PathLike[str],
    since: str | None = None,
    *,
    refresh_seconds: float | None = None,
    batch_rows: int = BATCH_ROWS,
    stopping: Callable[[], bool] = lambda: False,
) -> Exported:
    """Copy what `target` lacks of the log at `source` (a URL or a file); `since` is an ISO time.

    `refresh_seconds` is only noted in `copy_state`, for the start page (`serve` refreshes).
    `stopping` is asked between batches: true, and the copy ends there (the next run goes on).
    """
    started = time.monotonic()
    path = Path(target)
    log_file = sqlite_path(source)
    if log_file is not None and not log_file.is_file():
        raise ValueError(f"no log database at {log_file}")
    if log_file is not None and log_file.resolve() == path.resolve():
        raise ValueError("export --to names the log itself: choose another file")
    await prepare(path)
    source_store = Store(source)
    counts: dict[str, int] = {}
    connection = connect_sqlite(path)
    try:
        async with source_store.engine.connect() as conn:
            for table, time_column in TABLES:
                counts[table.name] = await _copy_table(conn, connection, table, time_column, since, batch_rows, stopping)
        _note_state(connection, display_url(source), since, refresh_seconds)
    finally:
        connection.close()
        await source_store.dispose()
    return Exported(path, counts["inference_runs"], counts["attempts"], round(time.monotonic() - started, 3))


async def prepare(path: Path) -> None:
    """Create the copy (readable by its owner only: it holds prompts) and migrate it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    store = Store(str(path))
    try:
        await store.migrate()
    finally:
        await store.dispose()
    connection = connect_sqlite(path)
    try:
        connection.execute(
            f"CREATE TABLE IF NOT EXISTS {COPY_STATE} (source TEXT, refreshed_at TEXT, since TEXT, "
            "refresh_seconds REAL, runs INTEGER, attempts INTEGER)"
        )
    finally:
        connection.close()


async def _copy_table(
    source: AsyncConnection, target: sqlite3.Connection, table: Table, time_column: str, since: str | None,
    batch_rows: int, stopping: Callable[[], bool],
) -> int:
    ids = table.c.id
    condition = []
    if since:
        column = table.c[time_column]
        condition.append((column.collate("C") if source.dialect.name == "postgresql" else column) >= since)
    (top,) = target.execute(f"SELECT coalesce(max(id), 0) FROM {table.name}").fetchone()
    copied = 0
    if top:  # rows that committed after higher ids were copied
        low = max(0, top - LOOKBACK_IDS)
        result = await source.execute(select(ids).where(ids > low, ids <= top, *condition))
        there = {row[0] for row in target.execute(f"SELECT id FROM {table.name} WHERE id > ? AND id <= ?", (low, top))}
        missing = sorted({row[0] for row in result} - there)
        for chunk in _chunks(missing, batch_rows):
            rows = (await source.execute(select(table).where(ids.in_(chunk)).order_by(ids))).mappings().all()
            copied += _insert(target, table, rows)
    last = top
    while True:
        query = select(table).where(ids > last, *condition).order_by(ids).limit(batch_rows)
        rows = (await source.execute(query)).mappings().all()
        if not rows or stopping():
            return copied
        copied += _insert(target, table, rows)
        last = rows[-1]["id"]


def _insert(target: sqlite3.Connection, table: Table, rows: Sequence[Any]) -> int:
    """One transaction: the rows the copy lacks, and their full-text indexing."""
    columns = list(table.c.keys())
    sql = (
        f"INSERT INTO {table.name} ({', '.join(_quote(c) for c in columns)}) "
        f"VALUES ({', '.join('?' for _ in columns)}) ON CONFLICT DO NOTHING"
    )
    added = []
    target.execute("BEGIN IMMEDIATE")
    try:
        for row in rows:
            if target.execute(sql, tuple(row[c] for c in columns)).rowcount == 1:
                added.append(row["id"])
        if table is inference_runs and added:
            for chunk in _chunks(added, 500):
                target.execute(
                    "INSERT INTO inference_runs_fts(rowid, prompt, response) SELECT id, prompt, response "
                    f"FROM inference_runs WHERE id IN ({', '.join('?' for _ in chunk)})",
                    chunk,
                )
        target.execute("COMMIT")
    except BaseException:
        target.execute("ROLLBACK")
        raise
    return len(added)


def _note_state(target: sqlite3.Connection, source: str, since: str | None, refresh_seconds: float | None) -> None:
    (runs,) = target.execute("SELECT count(*) FROM inference_runs").fetchone()
    (tries,) = target.execute("SELECT count(*) FROM attempts").fetchone()
    target.execute("BEGIN IMMEDIATE")
    target.execute(f"DELETE FROM {COPY_STATE}")
    target.execute(
        f"INSERT INTO {COPY_STATE} (source, refreshed_at, since, refresh_seconds, runs, attempts) VALUES (?, ?, ?, ?, ?, ?)",
        (source, utc_now(), since, refresh_seconds, runs, tries),
    )
    target.execute("COMMIT")


def _quote(column: str) -> str:
    return f'"{column}"'


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# -- the command ---------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `export` command's arguments (the CLI adds the sub-parser and calls `run`)."""
    parser.add_argument("--to", required=True, metavar="FILE.db", help="the SQLite copy (created, or brought up to date)")
    parser.add_argument("--since", metavar="WHEN", help="only calls since then: 24h, 7d, 2026-11-01 (default: the whole log)")
    database = parser.add_mutually_exclusive_group()
    database.add_argument("--db", metavar="PATH", help="SQLite file of the log")
    database.add_argument("--database-url", metavar="URL",
                          help="postgresql://… or sqlite:///file.db (default: $DATABASE_URL, else study_query_llm.db)")


def run(args: argparse.Namespace) -> int:
    """`study-query-llm export …`: 0 once the copy is up to date, 2 when the log cannot be read."""
    from .report import default_database

    source = args.database_url or args.db or default_database()
    try:
        since = log_time(parse_time(args.since)) if args.since else None
        done = asyncio.run(export(source, args.to, since))
    except ValueError as exc:
        print(f"study-query-llm export: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # the source cannot be read: say which and why, no traceback
        reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        print(f"study-query-llm export: cannot copy {display_url(source)}: {reason}", file=sys.stderr)
        return 2
    print(
        f"Copied {done.runs:,} calls and {done.attempts:,} attempts from {display_url(source)} to {done.target} "
        f"in {done.seconds:g}s. Browse it with: study-query-llm ui --db {done.target}"
    )
    return 0
