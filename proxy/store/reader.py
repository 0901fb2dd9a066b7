"""Reading the log back while the proxy runs: the rows that name one Responses API response.

Follow-ups (`previous_response_id`, `GET /v1/responses/{id}`, …) must find the provider that
created a response, and for a provider that keeps no state, its input and output. On SQLite
the read takes its own read-only connection in a worker thread, so it never waits for the
writer thread's batches nor holds its lock; PostgreSQL goes through the engine.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from .schema import SQLITE_RESPONSE_ID

COLUMNS = "id, endpoint, provider, upstream_model, status_code, request_json, response_json, metadata"
#: SQLite finds them through the expression index of migration 5.
SQLITE_QUERY = f"SELECT {COLUMNS} FROM inference_runs WHERE {SQLITE_RESPONSE_ID} = ? ORDER BY id"
#: PostgreSQL keeps `metadata` as text: a LIKE narrows, the JSON check below decides.
POSTGRES_QUERY = f"SELECT {COLUMNS} FROM inference_runs WHERE metadata LIKE :pattern ORDER BY id"


async def rows_for_response(path: Path | None, engine: AsyncEngine, response_id: str) -> list[dict[str, Any]]:
    """Every row whose `metadata.response_id` is `response_id`, oldest first."""
    if path is not None:
        return await asyncio.to_thread(_sqlite_rows, path, response_id)
    async with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            result = await conn.exec_driver_sql(SQLITE_QUERY, (response_id,))
        else:
            result = await conn.execute(text(POSTGRES_QUERY), {"pattern": f'%"response_id":"{response_id}"%'})
        rows = [dict(row._mapping) for row in result]
    return [row for row in rows if _names(row, response_id)]


def _sqlite_rows(path: Path, response_id: str) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        connection.row_factory = sqlite3.Row
        return [dict(row) for row in connection.execute(SQLITE_QUERY, (response_id,))]
    except sqlite3.OperationalError:  # a log not migrated yet has no such rows
        return []
    finally:
        connection.close()


def _names(row: dict[str, Any], response_id: str) -> bool:
    try:
        metadata = orjson.loads(row.get("metadata") or "null")
    except orjson.JSONDecodeError:
        return False
    return isinstance(metadata, dict) and metadata.get("response_id") == response_id
