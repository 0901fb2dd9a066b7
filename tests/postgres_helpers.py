"""The PostgreSQL the tests use where one listens: `STUDY_TEST_POSTGRES_URL` (by default the
`test` database of a local server), a mark that skips a test without it, and scratch databases
made and dropped around a test."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import pytest

POSTGRES_URL = os.environ.get("STUDY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def postgres_listening() -> bool:
    parts = urlsplit(POSTGRES_URL)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), timeout=0.5).close()
        return True
    except OSError:
        return False


needs_postgres = pytest.mark.skipif(not postgres_listening(), reason=f"no PostgreSQL at {POSTGRES_URL}")


def admin(statement: str) -> None:
    """One statement on `POSTGRES_URL`'s server, outside a transaction (as CREATE DATABASE needs)."""
    import asyncpg

    async def go() -> None:
        conn = await asyncpg.connect(POSTGRES_URL.replace("postgresql+asyncpg", "postgresql"))
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(go())


@contextmanager
def scratch_database(prefix: str) -> Iterator[str]:
    """The name of a new, empty database `<prefix>_<random>`, dropped afterwards (connections and all)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def database_url(name: str) -> str:
    """`POSTGRES_URL` with database `name` instead of its own."""
    return POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
