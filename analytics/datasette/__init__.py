"""Datasette over the proxy's log, read-only, with the shipped metadata.yml.

`create_datasette` is what the proxy mounts at `/ui/`; `serve_ui` is `study-query-llm ui`.

Read-only: the proxy is the log's only writer. The file is opened `mode=ro` with
`PRAGMA query_only`, and there is no write path at all (no write connection, no writable
canned query). It is *not* opened `immutable=1`: the proxy keeps appending to it (WAL) while
Datasette reads, and an immutable reader would miss or misread those rows.

Mounting: Datasette 0.65 expects a reverse proxy to strip `base_url` before it sees a request.
Under a Starlette `Mount` it gets the full path and writes some links (sort, facets, .json/.csv,
show/hide SQL) with the prefix twice, `/ui/ui/...` (datasette#1590, #2105), so
`LogDatasette.app()` strips the prefix first, as such a proxy would.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml
from datasette.app import Datasette
from datasette.database import Database

ASGIApp = Callable[[dict[str, Any], Callable[..., Any], Callable[..., Any]], Any]

DATABASE_NAME = "log"
METADATA_PATH = Path(__file__).with_name("metadata.yml")
TEMPLATES_DIR = Path(__file__).with_name("templates")

# Defaults beyond Datasette's own, for a log that grows to millions of rows:
# - suggest_facets off: it tries two time-limited queries per column (~28 columns) on every
#   table page, 2.3 s at 200k rows; the useful facets are configured in metadata.yml.
# - sql_time_limit_ms 5000: the per-model stats query sorts the whole log for its medians
#   (~0.6 s per 200k rows here); Datasette's 1 s default would cut it off.
# - truncate_cells_html 300: long prompts and JSON bodies are cut in the table view
#   (the row page shows them whole).
DEFAULT_SETTINGS: dict[str, Any] = {
    "suggest_facets": False,
    "sql_time_limit_ms": 5000,
    "truncate_cells_html": 300,
}


class ReadOnlyError(PermissionError):
    """Raised for any attempt to write the log through Datasette."""


class ReadOnlyDatabase(Database):
    """A Datasette database that can only read: `mode=ro`, `query_only`, and no writer thread."""

    def __init__(self, ds: Datasette, path: str | os.PathLike[str]) -> None:
        # is_mutable=True: the file changes under us, so no immutable=1, no cached counts or hash.
        super().__init__(ds, path=str(Path(path).resolve()), is_mutable=True)

    def connect(self, write: bool = False) -> sqlite3.Connection:
        if write:
            raise ReadOnlyError("the log is read-only in Datasette: the proxy is its only writer")
        uri = f"file:{quote(str(self.path))}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        conn.execute("PRAGMA query_only = 1")
        self._all_file_connections.append(conn)
        return conn

    async def execute_write_fn(self, fn: Callable[[sqlite3.Connection], Any], block: bool = True) -> Any:
        # execute_write, execute_write_script and execute_write_many all end up here.
        raise ReadOnlyError("the log is read-only in Datasette: the proxy is its only writer")


class LogDatasette(Datasette):
    """Datasette whose ASGI app accepts paths with or without the `base_url` prefix."""

    def app(self) -> ASGIApp:
        inner: ASGIApp = super().app()
        prefix = self.setting("base_url").rstrip("/")
        if not prefix:
            return inner
        raw_prefix = prefix.encode("latin-1")

        async def strip_base_url(
            scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]
        ) -> Any:
            path = scope.get("path", "")
            if scope["type"] in ("http", "websocket") and (path == prefix or path.startswith(prefix + "/")):
                root_path = scope.get("root_path") or prefix
                scope = dict(scope, path=path[len(prefix) :] or "/", root_path=root_path)
                raw_path = scope.get("raw_path")
                if raw_path and (raw_path == raw_prefix or raw_path.startswith(raw_prefix + b"/")):
                    scope["raw_path"] = raw_path[len(raw_prefix) :] or b"/"
            return await inner(scope, receive, send)

        return strip_base_url


def load_metadata() -> dict[str, Any]:
    """The shipped metadata.yml as a dict (title, descriptions, units, facets, canned queries)."""
    metadata: dict[str, Any] = yaml.safe_load(METADATA_PATH.read_text(encoding="utf-8"))
    queries = metadata.get("databases", {}).get(DATABASE_NAME, {}).get("queries", {})
    writable = [name for name, query in queries.items() if isinstance(query, dict) and query.get("write")]
    if writable:
        raise ValueError(f"canned queries must be read-only, these are not: {writable}")
    return metadata


def create_datasette(
    db_path: str | os.PathLike[str],
    base_url: str = "/ui/",
    settings: Mapping[str, Any] | None = None,
) -> Datasette:
    """A read-only Datasette over one log file, served as database `log` under `base_url`.

    `settings` overrides Datasette settings, e.g. {"default_allow_sql": False} when exposed.
    The file need not exist yet (it is opened at the first request); the proxy migrates it first.
    Mounted elsewhere, call `await ds.invoke_startup()` before serving (the proxy's lifespan does).
    """
    ds = LogDatasette(
        files=[],
        metadata=load_metadata(),
        settings={**DEFAULT_SETTINGS, **(settings or {}), "base_url": base_url},
        template_dir=str(TEMPLATES_DIR) if TEMPLATES_DIR.is_dir() else None,
    )
    # Datasette adds an in-memory "_memory" database when given no files: show the log alone.
    if "_memory" in ds.databases:
        ds.remove_database("_memory")
    ds.add_database(ReadOnlyDatabase(ds, db_path), name=DATABASE_NAME, route=DATABASE_NAME)
    return ds


def serve_ui(db_path: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 8001) -> None:
    """Serve Datasette alone over an existing log (`study-query-llm ui`), until interrupted.

    `db_path` is a file or a `sqlite:///` URL (as in DATABASE_URL); PostgreSQL logs have no UI.
    """
    import uvicorn

    from proxy.store.engine import sqlite_path

    path = sqlite_path(os.fspath(db_path))
    if path is None:
        raise ValueError(f"Datasette serves SQLite logs only, not {db_path!r}")
    if not path.is_file():
        raise FileNotFoundError(f"no log database at {path}: run `study-query-llm serve` first")
    ds = create_datasette(path, base_url="/")
    # Datasette's app answers the lifespan itself and runs invoke_startup there.
    uvicorn.run(ds.app(), host=host, port=port, lifespan="on")


__all__ = [
    "DATABASE_NAME",
    "LogDatasette",
    "METADATA_PATH",
    "ReadOnlyDatabase",
    "ReadOnlyError",
    "create_datasette",
    "load_metadata",
    "serve_ui",
]
