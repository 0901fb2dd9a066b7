"""The two databases a log lives in, behind one small interface the `Study` queries through.

Each answers SQL with a DataFrame (`frame`), and does in its own way what SQL does not
share: the epoch of a time, a row's tags as rows, percentiles and full-text search.
SQLite has no percentile function: only the group keys and the two timings of the
successful calls leave it, and pandas takes the quantiles (1.6 s on a million rows, where
window functions ranking the same rows in SQL took 4 s); PostgreSQL computes them itself.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd

from proxy.store.engine import async_database_url

from .measures import ANSWERED, PERCENTILES, quantiles


class LogError(Exception):
    """The log cannot be read: no such file, not a log, or the database does not answer."""


class SQLiteLog:
    """A SQLite log, opened read-only (a mistyped path must not create an empty database,
    and an analysis must never take the proxy's write lock)."""

    dialect = "sqlite"
    tag_rows = "json_each(r.tags) AS t"  # a row's tags as rows with a `value` column
    lateral = ""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise LogError(f"no log at {path}")
        uri = f"file:{quote(str(path.resolve()))}?mode=ro"
        self.connection = sqlite3.connect(uri, uri=True, timeout=5, isolation_level=None)

    def frame(self, sql: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        cursor = self.connection.execute(sql, dict(params or {}))
        try:
            columns = [d[0] for d in cursor.description]
            return pd.DataFrame.from_records(cursor.fetchall(), columns=columns)
        finally:
            cursor.close()

    def epoch(self) -> str:
        """SQL for a row's time as seconds since the Unix epoch (the time buckets count from it)."""
        return "CAST(strftime('%s', r.created_at) AS INTEGER)"

    def percentiles(self, keys: Sequence[tuple[str, str]], source: str, where: str, params: Mapping[str, Any]) -> pd.DataFrame:
        """Only the keys and timings of the successful calls leave SQLite; pandas ranks them."""
        selected = ", ".join([*(f"{expr} AS {name}" for name, expr in keys), "r.latency_ms", "r.ttft_ms"])
        timings = self.frame(f"SELECT {selected} FROM {source} WHERE {where} AND {ANSWERED}", params)
        return quantiles(timings, [name for name, _ in keys])

    def search(self, text: str, raw: bool, where: str, params: dict[str, Any], limit: int) -> pd.DataFrame:
        """FTS5 over prompt and response, best matches first (bm25), with marked snippets."""
        params = {**params, "query": text if raw else _fts_literal(text), "limit": limit}
        return self.frame(
            f"""SELECT r.id, r.created_at, r.provider, r.model, r.status_code, r.latency_ms,
                   snippet(inference_runs_fts, 0, '[', ']', '…', 12) AS prompt_snippet,
                   snippet(inference_runs_fts, 1, '[', ']', '…', 12) AS response_snippet,
                   r.prompt, r.response
                FROM inference_runs_fts JOIN inference_runs r ON r.id = inference_runs_fts.rowid
                WHERE inference_runs_fts MATCH :query AND {where}
                ORDER BY rank LIMIT :limit""",
            params,
        )

    def close(self) -> None:
        self.connection.close()


class PostgresLog:
    """A PostgreSQL log, read through the proxy's own driver (asyncpg).

    asyncpg is async-only: each query runs `asyncio.run` on a worker thread, which works
    the same from a script and from a notebook (whose event loop is already running), and
    needs no second PostgreSQL driver. One connection per query, none kept open.
    """

    dialect = "postgresql"
    tag_rows = "json_array_elements_text(CAST(r.tags AS json)) AS t(value)"
    lateral = "LATERAL "

    def __init__(self, url: str) -> None:
        self.url = async_database_url(url)

    def frame(self, sql: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        with ThreadPoolExecutor(max_workers=1) as worker:
            return worker.submit(asyncio.run, self._frame(sql, dict(params or {}))).result()

    async def _frame(self, sql: str, params: dict[str, Any]) -> pd.DataFrame:
        from sqlalchemy import text
        from sqlalchemy.ext.asyncio import create_async_engine
        from sqlalchemy.pool import NullPool

        engine = create_async_engine(self.url, poolclass=NullPool, hide_parameters=True, connect_args={"timeout": 10})
        try:
            async with engine.connect() as conn:
                result = await conn.execute(text(sql), params)
                return pd.DataFrame.from_records(result.fetchall(), columns=list(result.keys()))
        finally:
            await engine.dispose()

    def epoch(self) -> str:
        """SQL for a row's time as seconds since the Unix epoch (the time buckets count from it)."""
        return "CAST(extract(epoch FROM CAST(r.created_at AS timestamptz)) AS bigint)"

    def percentiles(self, keys: Sequence[tuple[str, str]], source: str, where: str, params: Mapping[str, Any]) -> pd.DataFrame:
        """`percentile_cont` (linear interpolation, NULLs ignored) in the database."""
        columns = [
            f"percentile_cont({p / 100}) WITHIN GROUP (ORDER BY r.{column}) AS p{p}_{column}"
            for column, ps in PERCENTILES
            for p in ps
        ]
        selected = ", ".join([*(f"{expr} AS {name}" for name, expr in keys), *columns])
        return self.frame(f"SELECT {selected} FROM {source} WHERE {where} AND {ANSWERED}{group_by(keys)}", params)

    def search(self, text: str, raw: bool, where: str, params: dict[str, Any], limit: int) -> pd.DataFrame:
        """No index on PostgreSQL: text search over the rows at query time, ranked by ts_rank."""
        document = "to_tsvector('simple', coalesce(r.prompt, '') || ' ' || coalesce(r.response, ''))"
        query = "websearch_to_tsquery" if raw else "plainto_tsquery"
        mark = "'StartSel=[, StopSel=], MaxWords=24, MinWords=8'"
        return self.frame(
            f"""SELECT r.id, r.created_at, r.provider, r.model, r.status_code, r.latency_ms,
                   ts_headline('simple', coalesce(r.prompt, ''), q, {mark}) AS prompt_snippet,
                   ts_headline('simple', coalesce(r.response, ''), q, {mark}) AS response_snippet,
                   r.prompt, r.response
                FROM inference_runs r CROSS JOIN {query}('simple', :query) AS q
                WHERE {document} @@ q AND {where}
                ORDER BY ts_rank({document}, q) DESC, r.id LIMIT :limit""",
            {**params, "query": text, "limit": limit},
        )

    def close(self) -> None:
        pass


def _fts_literal(text: str) -> str:
    """Each word as an FTS5 string, so punctuation ("gpt-4o", "C++") is searched, not parsed."""
    return " ".join('"' + word.replace('"', '""') + '"' for word in text.split())


def group_by(keys: Sequence[tuple[str, str]]) -> str:
    """` GROUP BY 1, 2, …` over the key columns that start a SELECT; nothing without keys."""
    return f" GROUP BY {', '.join(str(i + 1) for i in range(len(keys)))}" if keys else ""
