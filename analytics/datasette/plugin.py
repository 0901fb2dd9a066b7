"""Datasette hooks for the log's UI: how cells look, and what the start page links.

Registered once per process by `analytics.datasette` (not through an entry point), and every
hook does nothing unless the Datasette it is called for is ours (`LogDatasette`), so another
Datasette in the same process is left alone.

- JSON columns (request_json, response_json, metadata, request_headers, any `*_json`) are shown
  pretty-printed and whole on a row's page; compact, cut to `truncate_cells_html` characters, in
  tables and query results.
- `tags` are links to the calls carrying each tag; `session_id` links to the session's calls;
  `study` links to the study's answers side by side; `request_id` links a call to its upstream
  attempts and back.
- `*_usd` numbers are shown as dollars ($0.000450); the JSON and CSV keep the raw number.
- The start page (`index.html`), `study_answers` and `conversation` get their extra variables here.
"""

from __future__ import annotations

import contextvars
import json
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from datasette import hookimpl
from markupsafe import Markup, escape

if TYPE_CHECKING:
    from datasette.app import Datasette

#: The path of the request being served (without the base_url prefix), set by LogDatasette.app().
CURRENT_PATH: contextvars.ContextVar[str] = contextvars.ContextVar("study_query_llm_path", default="")

DATABASE = "log"
JSON_COLUMNS = frozenset({"request_json", "response_json", "metadata", "request_headers"})
ROW_PAGE = re.compile(r"^/[^/]+/[^/]+/[^/.]+$")  # /log/inference_runs/123 (not .json)
PRE_STYLE = "white-space: pre-wrap; margin: 0; font-size: 0.85em; line-height: 1.3"


def _ours(datasette: Any) -> bool:
    from . import LogDatasette

    return isinstance(datasette, LogDatasette)


def _on_row_page() -> bool:
    return bool(ROW_PAGE.match(CURRENT_PATH.get()))


def format_usd(value: float) -> str:
    """Dollars for people: 2 decimals from $1, else 6 ($0.000450)."""
    if abs(value) >= 1:
        return f"${value:,.2f}"
    return f"${value:.6f}"


def _json_cell(value: str, row_page: bool, limit: int) -> Markup | None:
    """Pretty (indented, whole) on a row's page; compact, one wrapped line cut to `limit`
    characters in tables and query results, so a page of rows stays a page."""
    text = value.strip()
    if not (text.startswith("{") or text.startswith("[")):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if row_page:
        pretty = json.dumps(data, indent=2, ensure_ascii=False)
        return Markup(f'<pre class="json" style="{PRE_STYLE}">{escape(pretty)}</pre>')
    compact = json.dumps(data, ensure_ascii=False, separators=(", ", ": "))
    if limit and len(compact) > limit:
        compact = compact[:limit] + "\u2026"
    return Markup(f'<code class="json" style="white-space: pre-wrap; font-size: 0.85em">{escape(compact)}</code>')


def _tag_links(value: str, datasette: Datasette) -> Markup | None:
    try:
        tags = json.loads(value)
    except ValueError:
        return None
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        return None
    table = datasette.urls.table(DATABASE, "inference_runs")
    links = [
        f'<a href="{escape(table)}?{escape(urlencode({"tags__arraycontains": tag}))}">{escape(tag)}</a>' for tag in tags
    ]
    return Markup(", ".join(links) or "&nbsp;")


@hookimpl
def render_cell(value: Any, column: str, table: str | None, database: str, datasette: Datasette) -> Any:
    if not _ours(datasette) or database != DATABASE or value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and column.endswith("_usd"):
        return Markup(f'<span title="{escape(repr(value))} USD">{escape(format_usd(float(value)))}</span>')
    if not isinstance(value, str) or not value:
        return None
    if column == "tags":
        return _tag_links(value, datasette)
    if column in JSON_COLUMNS or column.endswith("_json"):
        return _json_cell(value, _on_row_page(), int(datasette.setting("truncate_cells_html") or 0))
    if column == "session_id":
        href = datasette.urls.query(DATABASE, "session") + "?" + urlencode({"session": value})
        return Markup(f'<a href="{escape(href)}" title="this session\'s calls in order">{escape(value)}</a>')
    if column == "request_id" and table == "inference_runs" and _on_row_page():
        href = datasette.urls.table(DATABASE, "attempts") + "?" + urlencode({"request_id": value})
        return Markup(f'{escape(value)} (<a href="{escape(href)}">its upstream attempts</a>)')
    if column == "request_id" and table == "attempts":
        href = datasette.urls.table(DATABASE, "inference_runs") + "?" + urlencode({"request_id": value})
        return Markup(f'<a href="{escape(href)}" title="the client request">{escape(value)}</a>')
    if column == "study" and table is None:
        href = datasette.urls.query(DATABASE, "study_answers") + "?" + urlencode({"study": value})
        return Markup(f'<a href="{escape(href)}" title="answers side by side">{escape(value)}</a>')
    return None


STUDIES_SQL = """
with s as (
  select case when json_valid(metadata) then json_extract(metadata, '$.study') end as study,
    model, created_at
  from inference_runs
  where metadata like '%"study"%'
)
select study, count(*) as calls, count(distinct model) as models, max(created_at) as last_call
from s where study is not null
group by study order by last_call desc limit 50
"""


SESSIONS_SQL = """
with recent as (
  select session_id, model, created_at, tags from inference_runs
  where session_id is not null order by created_at desc limit 5000
)
select session_id, count(*) as calls, count(distinct model) as models, max(created_at) as last_call,
  max(coalesce(tags, '') like '%"playground"%') as playground
from recent group by session_id order by last_call desc limit 30
"""


async def _start_page_vars(datasette: Datasette, request: Any) -> dict[str, Any]:
    actor = request.actor if request is not None else None
    queries = []
    for name, query in (await datasette.get_canned_queries(DATABASE, actor)).items():
        if await datasette.permission_allowed(actor, "view-query", (DATABASE, name), default=True):
            queries.append(
                {
                    "name": name,
                    "title": query.get("title") or name,
                    # the start page says once what `since` and `model` take
                    "description": (query.get("description") or "").split(" since:")[0],
                    "url": datasette.urls.query(DATABASE, name),
                    "params": query.get("params") or [],
                }
            )
    from datasette.plugins import pm

    charts_installed = any(getattr(p, "__name__", "") == "datasette_dashboards" for p in pm.get_plugins())
    dashboards = [
        {
            "slug": slug,
            "title": config.get("title") or slug,
            "description": config.get("description") or "",
            "url": datasette.urls.path(f"-/dashboards/{quote(slug)}"),
        }
        for slug, config in (datasette.plugin_config("datasette-dashboards") or {}).items()
        if charts_installed
    ]
    return {
        "study_queries": queries,
        "study_dashboards": dashboards,
        "study_runs_url": datasette.urls.table(DATABASE, "inference_runs"),
        "study_attempts_url": datasette.urls.table(DATABASE, "attempts"),
        "study_database_url": datasette.urls.database(DATABASE),
        "study_copy": await _copy_state(datasette),
    }


async def _copy_state(datasette: Datasette) -> dict[str, Any] | None:
    """Where a copy of the log comes from and how old it is (`analytics.export`); None for the log itself."""
    try:
        result = await datasette.execute(
            DATABASE, "select source, refreshed_at, refresh_seconds, since from copy_state limit 1", log_sql_errors=False
        )
    except Exception:  # noqa: BLE001 - not a copy: no such table
        return None
    if not result.rows:
        return {"first": True}
    row = dict(result.rows[0])
    try:
        made = datetime.fromisoformat(str(row["refreshed_at"]).replace("Z", "+00:00"))
        row["age"] = _age((datetime.now(UTC) - made).total_seconds())
    except ValueError:
        row["age"] = None
    refresh = row.get("refresh_seconds")
    row["refresh"] = f"{refresh:g}" if isinstance(refresh, (int, float)) else None
    return row


def _age(seconds: float) -> str:
    """"12 s", "4 min", "3 h", "2 days": how long ago, for people."""
    seconds = max(0.0, seconds)
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size * (2 if unit == "days" else 1):
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


async def _linked_rows(datasette: Datasette, sql: str, query: str, param: str, column: str) -> list[dict[str, Any]]:
    """The rows of `sql`, each with the URL of canned query `query` for its `column` value: the
    lists of studies and sessions on the pages of those queries when none is chosen."""
    try:
        result = await datasette.execute(DATABASE, sql, log_sql_errors=False)
    except Exception:  # noqa: BLE001 - a log without the table yet: nothing to list
        return []
    url = datasette.urls.query(DATABASE, query)
    return [dict(row) | {"url": url + "?" + urlencode({param: row[column]})} for row in result.rows]


def _since_error(request: Any) -> str | None:
    """What is wrong with the page's `since`, if anything (the SQL function matches no row then)."""
    from . import since_utc

    if request is None or not request.args.get("since"):
        return None
    try:
        since_utc(request.args.get("since"))
    except ValueError as exc:
        return str(exc)
    return None


@hookimpl
def extra_template_vars(template: str, view_name: str, request: Any, datasette: Datasette) -> Any:
    if not _ours(datasette):
        return None

    async def extra() -> dict[str, Any]:
        found: dict[str, Any] = {"study_since_error": _since_error(request)}
        if view_name == "index":
            found |= await _start_page_vars(datasette, request)
        if template == f"query-{DATABASE}-study_answers.html":
            found["study_list"] = await _linked_rows(datasette, STUDIES_SQL, "study_answers", "study", "study")
        if template == f"query-{DATABASE}-conversation.html":
            found["conversation_list"] = await _linked_rows(datasette, SESSIONS_SQL, "conversation", "session", "session_id")
        return found

    return extra()
