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

Analysis: metadata.yml holds the descriptions, units (ms, USD), facets, the canned queries
(most take `since` and `model`) and the `datasette-dashboards` charts at `/-/dashboards/overview`;
`plugin.py` renders JSON, tags, sessions and dollars; `templates/` holds the start page and the
side-by-side view of a study. Every connection gets a `since_utc(text)` SQL function that turns
"24h", "7d", "2026-11-01" or "" (all time) into the ISO time the log's `created_at` compares to.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml
from datasette.app import Datasette
from datasette.database import Database
from datasette.plugins import pm
from datasette.views.base import ureg

from . import plugin as _plugin

ASGIApp = Callable[[dict[str, Any], Callable[..., Any], Callable[..., Any]], Any]

DATABASE_NAME = "log"
METADATA_PATH = Path(__file__).with_name("metadata.yml")
TEMPLATES_DIR = Path(__file__).with_name("templates")

# Defaults beyond Datasette's own, for a log that grows to millions of rows:
# - suggest_facets off: it tries two time-limited queries per column (~28 columns) on every
#   table page, 2.3 s at 200k rows; the useful facets are configured in metadata.yml.
# - sql_time_limit_ms 5000: the per-model stats query sorts the whole log for its medians
#   (~1 s per 200k rows here); Datasette's 1 s default would cut it off.
# - truncate_cells_html 300: long prompts and JSON bodies are cut in the table view
#   (the row page shows them whole).
DEFAULT_SETTINGS: dict[str, Any] = {
    "suggest_facets": False,
    "sql_time_limit_ms": 5000,
    "truncate_cells_html": 300,
}


# Datasette's units go through pint, which knows no currency: cost_usd's unit "USD" needs defining
# (once per process: pint warns on every redefinition). Cells show it as dollars (plugin.py).
if "USD" not in ureg:
    ureg.define("USD = [currency]")

# The hooks in plugin.py act only for a LogDatasette; registered once per process.
if not pm.is_registered(_plugin):
    pm.register(_plugin, name="study-query-llm")

_SPAN = re.compile(r"^(\d+(?:\.\d+)?)\s*([a-z]*)$")
_SPAN_UNITS = {
    "": "hours", "h": "hours", "hr": "hours", "hrs": "hours", "hour": "hours", "hours": "hours",
    "m": "minutes", "min": "minutes", "mins": "minutes", "minute": "minutes", "minutes": "minutes",
    "d": "days", "day": "days", "days": "days",
    "w": "weeks", "wk": "weeks", "week": "weeks", "weeks": "weeks",
}


def _iso(moment: datetime) -> str:
    """The log's own time format: UTC, milliseconds, Z (as in created_at)."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def since_utc(value: str | int | float | None, now: datetime | None = None) -> str:
    """The start of a time window as the log writes times, for `created_at >= since_utc(:since)`.

    "" / "all" → "" (everything); a number of hours ("24", "24h"), or "90m", "7d", "2w";
    "today" (since 00:00 UTC); an ISO date or time ("2026-11-01", "2026-11-01T09:30",
    "2026-11-01T09:30+01:00"; without a zone it is UTC). Anything else raises ValueError
    (the SQL function answers INVALID_SINCE instead, and the page says what is wrong).
    """
    now = now or datetime.now(UTC)
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _iso(now - timedelta(hours=float(value)))
    text = str(value).strip().lower()
    if text in ("", "all", "*"):
        return ""
    if text == "today":
        return _iso(now.replace(hour=0, minute=0, second=0, microsecond=0))
    match = _SPAN.match(text)
    if match and match.group(2) in _SPAN_UNITS:
        return _iso(now - timedelta(**{_SPAN_UNITS[match.group(2)]: float(match.group(1))}))
    try:
        moment = datetime.fromisoformat(str(value).strip())
    except ValueError:
        raise ValueError(
            f"since: {value!r} is not a time window: use 24h, 7d, 90m, today, 2026-11-01 or leave it empty"
        ) from None
    return _iso(moment if moment.tzinfo else moment.replace(tzinfo=UTC))


#: What the SQL function `since_utc` answers for a `since` it cannot read: later than any time,
#: so the window is empty; the query page shows why (plugin.py). Raising instead would print a
#: traceback (Datasette turns sqlite3's callback tracebacks on) and show only "user-defined
#: function raised exception".
INVALID_SINCE = "~invalid since"


def _since_sql(value: str | int | float | None) -> str:
    try:
        return since_utc(value)
    except ValueError:
        return INVALID_SINCE


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
        # deterministic: SQLite then computes since_utc(:since) once per query, not once per row
        # (the clock moves, but not within a query).
        conn.create_function("since_utc", 1, _since_sql, deterministic=True)
        self._all_file_connections.append(conn)
        return conn

    async def execute_write_fn(self, fn: Callable[[sqlite3.Connection], Any], block: bool = True) -> Any:
        # execute_write, execute_write_script and execute_write_many all end up here.
        raise ReadOnlyError("the log is read-only in Datasette: the proxy is its only writer")


class LogDatasette(Datasette):
    """Datasette whose ASGI app accepts paths with or without the `base_url` prefix."""

    def app(self) -> ASGIApp:
        datasette_app: ASGIApp = super().app()

        async def inner(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> Any:
            # plugin.render_cell shows JSON whole on a row's page only: it needs to know the page.
            token = _plugin.CURRENT_PATH.set(scope.get("path", "") if scope["type"] == "http" else "")
            try:
                return await datasette_app(scope, receive, send)
            finally:
                _plugin.CURRENT_PATH.reset(token)

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

    def absolute_url(self, request: Any, path: str) -> str:
        # Datasette 0.65's array facet (tags) builds its links from the request's path without
        # urls.path(): behind our prefix stripping they would lose the /ui. Every path of this
        # Datasette lives under base_url, so a root path without it is one of those.
        prefix = self.setting("base_url").rstrip("/")
        if prefix and path.startswith("/") and path != prefix and not path.startswith(prefix + "/"):
            path = prefix + path
        return str(super().absolute_url(request, path))


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

    `db_path` is a file or a `sqlite:///` URL (as in DATABASE_URL); a PostgreSQL log is served
    through a SQLite copy (`study-query-llm export`, analytics/export.py).
    """
    import uvicorn

    from proxy.store.engine import display_url, sqlite_path

    path = sqlite_path(os.fspath(db_path))
    if path is None:
        raise ValueError(
            f"Datasette serves SQLite files, and {display_url(os.fspath(db_path))} is not one: copy it with "
            "`study-query-llm export --database-url URL --to log-copy.db`, then `study-query-llm ui --db log-copy.db`"
        )
    if not path.is_file():
        raise FileNotFoundError(f"no log database at {path}: run `study-query-llm serve` first")
    ds = create_datasette(path, base_url="/")
    base = f"http://{host}:{port}"
    print(f"Datasette UI: {base}/  (log: {path})", flush=True)
    print(f"Dashboard:    {base}/-/dashboards/overview", flush=True)
    # Datasette's app answers the lifespan itself and runs invoke_startup there.
    uvicorn.run(ds.app(), host=host, port=port, lifespan="on")


__all__ = [
    "DATABASE_NAME",
    "INVALID_SINCE",
    "LogDatasette",
    "METADATA_PATH",
    "ReadOnlyDatabase",
    "ReadOnlyError",
    "create_datasette",
    "load_metadata",
    "serve_ui",
    "since_utc",
]
