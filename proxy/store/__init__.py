"""The log's storage: schema, migrations and batched writes, with no knowledge of HTTP."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .engine import create_engine, sqlite_path
from .migrations import migrate
from .schema import attempts, inference_runs


class Store:
    """One database (SQLite file or PostgreSQL) that the recorder writes to."""

    def __init__(self, url_or_path: str) -> None:
        self.url = url_or_path
        self.path: Path | None = sqlite_path(url_or_path)
        self.engine = create_engine(url_or_path)

    async def migrate(self) -> list[int]:
        async with self.engine.begin() as conn:
            return await conn.run_sync(migrate)

    async def write(self, runs: Sequence[dict[str, Any]], attempt_rows: Sequence[dict[str, Any]]) -> None:
        """Insert a batch of runs and their attempts in one transaction."""
        async with self.engine.begin() as conn:
            if runs:
                await conn.execute(inference_runs.insert(), list(runs))
            if attempt_rows:
                await conn.execute(attempts.insert(), list(attempt_rows))

    async def dispose(self) -> None:
        await self.engine.dispose()


__all__ = ["Store", "inference_runs", "attempts"]
