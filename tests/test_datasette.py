"""Datasette over the log: the index, table pages (sort, facets, search, units, costs), column
and table descriptions, cell rendering, the start page, the /ui mount, later rows, and read-only-ness."""

from __future__ import annotations

import asyncio
import html
import json
import re
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from analytics.datasette import DATABASE_NAME, ReadOnlyError, create_datasette, load_metadata
from datasette_fixtures import CANNED, get_json, run_row
from datasette_fixtures import anyio_backend, ds, log_path  # noqa: F401  (the fixtures)
from proxy.store import Store
from proxy.store.schema import attempts as attempts_table
from proxy.store.schema import inference_runs as runs_table

pytestmark = pytest.mark.anyio


def count_rows(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("select count(*) from inference_runs").fetchone()[0]


async def test_index_and_database_pages(ds: Any, capsys: pytest.CaptureFixture[str]) -> None:
    index = await ds.client.get("/")
    assert index.status_code == 200
    assert "Study Query LLM" in index.text
    assert "ERROR" not in capsys.readouterr().err  # the log is no copy: its absent copy_state is no error
    databases = await get_json(ds, "/-/databases.json")
    assert [d["name"] for d in databases] == [DATABASE_NAME]
    db = await get_json(ds, f"/{DATABASE_NAME}.json")
    visible = {t["name"] for t in db["tables"] if not t["hidden"]}
    assert visible == {"inference_runs", "attempts"}


async def test_table_page_sort_and_facets(ds: Any) -> None:
    page = await ds.client.get("/log/inference_runs")
    assert page.status_code == 200
    assert "Newest first" in page.text  # the table description
    data = await get_json(ds, "/log/inference_runs.json?_shape=objects")
    created = [row["created_at"] for row in data["rows"]]
    assert created == sorted(created, reverse=True) and len(created) == 10
    assert data["human_description_en"] == "sorted by created_at descending"
    facets = data["facet_results"]
    for column in ("provider", "model", "status_code", "cache", "endpoint", "tags", "session_id"):
        assert column in facets, column
    providers = {r["value"]: r["count"] for r in facets["provider"]["results"]}
    assert providers == {"openai": 5, "mock": 3, "azure": 1}
    assert {r["value"]: r["count"] for r in facets["tags"]["results"]} == {"pilot": 10}
    assert {r["value"]: r["count"] for r in facets["session_id"]["results"]} == {"sess-1": 4}
    attempts = await get_json(ds, "/log/attempts.json?_shape=objects")
    assert {"provider", "status_code"} <= set(attempts["facet_results"])


async def test_table_search_box_uses_fts(ds: Any) -> None:
    data = await get_json(ds, "/log/inference_runs.json?_search=zeppelins&_shape=array")
    assert [row["request_id"] for row in data] == ["req-0009"]
    page = await ds.client.get("/log/inference_runs")
    assert 'name="_search"' in page.text


async def test_units_render_latency(ds: Any) -> None:
    data = await get_json(ds, "/log/inference_runs.json")
    assert data["units"] == {"latency_ms": "ms", "ttft_ms": "ms", "cost_usd": "USD"}
    page = await ds.client.get("/log/inference_runs?_sort=latency_ms")
    assert "5.0&nbsp;s" in page.text and "50.0&nbsp;ms" in page.text  # 5000 ms shown by pint as 5 s
    # and a filter may be given in any time unit
    data = await get_json(ds, "/log/inference_runs.json?latency_ms__gt=1s&_shape=array")
    assert [row["provider"] for row in data] == ["azure"]


async def test_cost_is_shown_in_dollars_and_filters_in_usd(ds: Any) -> None:
    page = await ds.client.get("/log/inference_runs")
    assert '<span title="0.0001 USD">$0.000100</span>' in page.text
    assert "µUSD" not in page.text  # pint's own rendering of 0.0001 USD
    data = await get_json(ds, "/log/inference_runs.json?cost_usd__gt=0.00005&_shape=array")
    assert len(data) == 8  # every row but the two without a price
    data = await get_json(ds, "/log/inference_runs.json?cost_usd__gt=1+USD&_shape=array")
    assert data == []


async def test_every_column_has_a_description() -> None:
    tables = load_metadata()["databases"][DATABASE_NAME]["tables"]
    for table in (runs_table, attempts_table):
        described = set(tables[table.name]["columns"])
        assert described == {c.name for c in table.columns}, table.name
        assert all(isinstance(v, str) and v.strip() for v in tables[table.name]["columns"].values())


async def test_every_table_has_a_description(ds: Any, log_path: Path) -> None:
    tables = load_metadata()["databases"][DATABASE_NAME]["tables"]
    db = await get_json(ds, "/log.json")
    for table in db["tables"]:
        if table["name"].startswith("inference_runs_fts_"):
            continue  # FTS5 shadow tables, hidden by Datasette
        assert tables.get(table["name"], {}).get("description"), table["name"]
    page = await ds.client.get("/log/inference_runs")
    assert "X-Study-Request-Id" in page.text  # column descriptions are rendered


async def test_cells_render_json_tags_sessions_and_links(ds: Any) -> None:
    table = (await ds.client.get("/log/inference_runs")).text
    # JSON columns: compact in the table, pretty and whole on the row's page
    assert '<code class="json"' in table and "{&#34;model&#34;: &#34;gpt-4o-mini&#34;, &#34;messages&#34;: []}" in table
    row = (await ds.client.get("/log/inference_runs/1")).text
    assert '<pre class="json"' in row and "{\n  &#34;model&#34;: &#34;gpt-4o-mini&#34;,\n  &#34;messages&#34;: []\n}" in row
    assert '<table class="row-fields">' in row and 'title="The request body as JSON' in row
    assert 'href="/ui/log/attempts?request_id=req-0001"' in row
    # tags link to the calls carrying them; sessions to the session's calls
    assert '<a href="/ui/log/inference_runs?tags__arraycontains=pilot">pilot</a>' in table
    assert 'href="/ui/log/session?session=sess-1"' in table
    assert (await ds.client.get("/log/inference_runs?tags__arraycontains=pilot")).status_code == 200
    # a JSON column's long value is cut in the table view, never on the row's page
    big = json.dumps({"messages": [{"role": "user", "content": "x" * 2000}]})
    response = await ds.client.get("/log.json", params={"sql": "select :v as request_json", "v": big})
    assert response.status_code == 200
    page = (await ds.client.get("/log", params={"sql": "select :v as request_json", "v": big})).text
    cell = re.findall(r'<code class="json"[^>]*>(.*?)</code>', page, re.S)
    assert len(cell) == 1 and len(html.unescape(cell[0])) == 301 and cell[0].endswith("\u2026")


@pytest.mark.parametrize("base_url", ["/", "/ui/"])
async def test_start_page_links_dashboards_queries_and_tables(log_path: Path, base_url: str) -> None:
    """`study-query-llm ui` serves Datasette at /, the proxy under /ui/: the same links either way."""
    ds = create_datasette(log_path, base_url=base_url)
    await ds.invoke_startup()
    page = (await ds.client.get("/")).text
    assert f'href="{base_url}-/dashboards/overview"' in page
    assert f'href="{base_url}-/dashboards/overview?since=24h"' in page
    for name in CANNED:
        assert f'href="{base_url}log/{name}"' in page, name
    for table in ("log/inference_runs", "log/attempts", "log"):
        assert f'href="{base_url}{table}"' in page, table
    links = re.findall(r'href="(/[^"]*)"', page)
    assert all(link.startswith(base_url) for link in links), links
    for link in links:
        # ds.client adds the base_url itself
        response = await ds.client.get("/" + html.unescape(link).removeprefix(base_url))
        assert response.status_code == 200, link
    ds.get_database(DATABASE_NAME).close()

async def test_mounted_under_ui_in_starlette(log_path: Path) -> None:
    """The proxy's way: Mount("/ui", ds.app()) with invoke_startup in the lifespan."""
    ds = create_datasette(log_path, base_url="/ui/")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await ds.invoke_startup()
        yield

    app = Starlette(routes=[Mount("/ui", app=ds.app())], lifespan=lifespan)
    async with lifespan(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://proxy") as client:
            index = await client.get("/ui/")
            assert index.status_code == 200 and "Study Query LLM" in index.text
            assert 'href="/ui/log"' in index.text  # links carry the base URL
            table = await client.get("/ui/log/inference_runs")
            assert table.status_code == 200
            data = (await client.get("/ui/log/inference_runs.json?_shape=array")).json()
            assert len(data) == 10
    ds.get_database(DATABASE_NAME).close()


async def test_links_under_ui_are_prefixed_once_and_answer(log_path: Path) -> None:
    """Mounted, Datasette sees the full /ui/... path; without our prefix stripping 0.65 doubles it
    in sort, facet, export and show-SQL links (/ui/ui/log/...), and its array facet (tags) drops it."""
    ds = create_datasette(log_path, base_url="/ui/")
    await ds.invoke_startup()
    app = Starlette(routes=[Mount("/ui", app=ds.app())])
    pages = [
        "/ui/", "/ui/log", "/ui/log/inference_runs?_facet=user&_search=weather", "/ui/log/inference_runs/1",
        "/ui/log/attempts", "/ui/log/attempts/1", "/ui/log/search?q=zeppelins", "/ui/log?sql=select+1",
        "/ui/-/dashboards", "/ui/-/dashboards/overview?since=7d&model=gpt-4o-mini",
        "/ui/-/dashboards/overview/cost-per-day", "/ui/log/studies", "/ui/log/study_answers",
        "/ui/log/latency_percentiles?since=24h", "/ui/log/session?session=sess-1",
    ]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://proxy") as client:
        links: set[str] = set()
        for page in pages:
            response = await client.get(page)
            assert response.status_code == 200, page
            for link in re.findall(r'(?:href|src|action)="([^"#]*)"', response.text):
                link = html.unescape(link).removeprefix("http://proxy")
                if link.startswith("/"):
                    links.add(link)
        assert links and all(link.startswith("/ui/") and not link.startswith("/ui/ui/") for link in links), links
        for link in sorted(links):
            assert (await client.get(link)).status_code == 200, link
    ds.get_database(DATABASE_NAME).close()


async def test_sees_rows_the_proxy_writes_later(ds: Any, log_path: Path) -> None:
    assert len(await get_json(ds, "/log/inference_runs.json?_shape=array")) == 10

    async def write_more() -> None:
        store = Store(str(log_path))
        await store.write([run_row(30, "mock", "mock/echo", 1.0)], [])
        await store.dispose()

    await asyncio.to_thread(asyncio.run, write_more())
    assert len(await get_json(ds, "/log/inference_runs.json?_shape=array")) == 11


async def test_writes_are_refused(ds: Any, log_path: Path) -> None:
    before = count_rows(log_path)
    insert = "insert into inference_runs (request_id, created_at, endpoint) values ('x', 'y', 'z')"
    # arbitrary SQL must be a SELECT
    response = await ds.client.get("/log.json", params={"sql": insert})
    assert response.status_code == 400
    # a WITH prefix passes Datasette's SELECT check; the read-only connection still refuses it
    response = await ds.client.get("/log.json", params={"sql": "with x as (select 1) delete from inference_runs"})
    assert response.status_code == 400 and "readonly" in response.json()["error"]
    response = await ds.client.post("/log", data={"sql": insert})
    assert response.status_code >= 400
    # below the HTTP layer: no write connection, and the read connection is mode=ro + query_only
    db = ds.get_database(DATABASE_NAME)
    with pytest.raises(ReadOnlyError):
        await db.execute_write(insert)
    with pytest.raises(sqlite3.OperationalError):
        await db.execute(insert)
    # even a writable canned query slipped into the metadata cannot write
    ds._metadata_local["databases"][DATABASE_NAME]["queries"]["evil"] = {
        "sql": "delete from inference_runs", "write": True,
    }
    response = await ds.client.post("/log/evil", json={}, headers={"accept": "application/json"})
    assert response.json()["ok"] is False and "read-only" in response.json()["message"]
    assert count_rows(log_path) == before


def test_writable_canned_query_in_metadata_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import analytics.datasette as module

    evil = tmp_path / "metadata.yml"
    evil.write_text("databases:\n  log:\n    queries:\n      wipe:\n        sql: delete from inference_runs\n        write: true\n")
    monkeypatch.setattr(module, "METADATA_PATH", evil)
    with pytest.raises(ValueError, match="wipe"):
        module.create_datasette(tmp_path / "x.db")


def test_serve_ui_needs_an_existing_sqlite_log(tmp_path: Path) -> None:
    from analytics.datasette import serve_ui

    with pytest.raises(FileNotFoundError):
        serve_ui(tmp_path / "missing.db")
    with pytest.raises(FileNotFoundError):
        serve_ui(f"sqlite:///{tmp_path / 'missing.db'}")
    with pytest.raises(ValueError, match="SQLite"):
        serve_ui("postgresql://user@localhost/log")
