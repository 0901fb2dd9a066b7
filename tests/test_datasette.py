"""Datasette over the log: metadata, facets, sort, canned queries, the /ui mount, and read-only-ness."""

from __future__ import annotations

import asyncio
import html
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

from analytics.datasette import (
    DATABASE_NAME,
    ReadOnlyError,
    create_datasette,
    load_metadata,
)
from proxy.store import Store
from proxy.store.schema import attempts as attempts_table
from proxy.store.schema import inference_runs as runs_table

pytestmark = pytest.mark.anyio

# Latencies per (provider, model): the medians are 250 (even count) and 20 (odd count).
LATENCIES = {("openai", "gpt-4o-mini"): [400.0, 100.0, 300.0, 200.0], ("mock", "mock/echo"): [30.0, 10.0, 20.0]}


def _run(n: int, provider: str | None, model: str, latency: float | None, **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {c.name: None for c in runs_table.columns if c.name != "id"}  # one batch, one shape
    row |= {
        "request_id": f"req-{n:04d}",
        "created_at": f"2026-11-02T10:00:{n:02d}.000Z",
        "endpoint": "/v1/chat/completions",
        "provider": provider,
        "model": model,
        "upstream_model": model.split("/")[-1],
        "prompt": f"user: question number {n} about the weather",
        "response": f"answer number {n}",
        "request_json": '{"model": "%s", "messages": []}' % model,
        "response_json": "{}",
        "status_code": 200,
        "stream": 0,
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "latency_ms": latency,
        "attempts": 1,
        "cache": "miss",
        "cost_usd": 0.0001,
        "tags": '["pilot"]',
        "client": "default",
        "request_headers": '{"authorization": "[redacted]"}',
    }
    row.update(extra)
    return row


def _rows() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    runs, n = [], 0
    for (provider, model), latencies in LATENCIES.items():
        for latency in latencies:
            n += 1
            runs.append(_run(n, provider, model, latency, session_id="sess-1" if provider == "mock" else None))
    n += 1
    runs.append(
        _run(
            n, "azure", "azure/gpt-4o", 5000.0, status_code=502, error="upstream 502 Bad Gateway",
            response=None, total_tokens=None, prompt_tokens=None, completion_tokens=None,
            cost_usd=None, attempts=3, cache=None,
        )
    )
    n += 1
    runs.append(
        _run(
            n, "openai", "gpt-4o-mini", 50.0, stream=1, ttft_ms=12.0, session_id="sess-1",
            prompt="user: tell me about zeppelins", response="Zeppelins are rigid airships.",
        )
    )
    n += 1
    runs.append(  # bad input: no provider, nothing sent upstream, no latency recorded
        _run(
            n, None, "nope/x", None, status_code=400, error="unknown provider 'nope'", response=None,
            total_tokens=None, prompt_tokens=None, completion_tokens=None, cost_usd=None, attempts=0, cache=None,
        )
    )
    attempts = [
        {"request_id": r["request_id"], "attempt": 1, "provider": r["provider"], "url_path": "/chat/completions",
         "status_code": r["status_code"], "latency_ms": r["latency_ms"], "started_at": r["created_at"]}
        for r in runs
        if r["attempts"]
    ]
    return runs, attempts


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    """A migrated log with a few realistic rows, written the way the proxy writes them."""
    path = tmp_path / "x.db"

    async def build() -> None:
        store = Store(str(path))
        await store.migrate()
        await store.write(*_rows())
        await store.dispose()

    asyncio.run(build())
    return path


@pytest.fixture
async def ds(log_path: Path) -> AsyncIterator[Any]:
    ds = create_datasette(log_path)
    await ds.invoke_startup()
    yield ds
    ds.get_database(DATABASE_NAME).close()


async def get_json(ds: Any, path: str) -> Any:
    response = await ds.client.get(path)
    assert response.status_code == 200, (path, response.text[:500])
    return response.json()


def count_rows(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("select count(*) from inference_runs").fetchone()[0]


async def test_index_and_database_pages(ds: Any) -> None:
    index = await ds.client.get("/")
    assert index.status_code == 200
    assert "Study Query LLM" in index.text
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
    for column in ("provider", "model", "status_code", "cache", "endpoint"):
        assert column in facets, column
    providers = {r["value"]: r["count"] for r in facets["provider"]["results"]}
    assert providers == {"openai": 5, "mock": 3, "azure": 1}
    attempts = await get_json(ds, "/log/attempts.json?_shape=objects")
    assert {"provider", "status_code"} <= set(attempts["facet_results"])


async def test_table_search_box_uses_fts(ds: Any) -> None:
    data = await get_json(ds, "/log/inference_runs.json?_search=zeppelins&_shape=array")
    assert [row["request_id"] for row in data] == ["req-0009"]
    page = await ds.client.get("/log/inference_runs")
    assert 'name="_search"' in page.text


async def test_units_render_latency(ds: Any) -> None:
    data = await get_json(ds, "/log/inference_runs.json")
    assert data["units"] == {"latency_ms": "ms", "ttft_ms": "ms"}
    page = await ds.client.get("/log/inference_runs?_sort=latency_ms")
    assert "5.0&nbsp;s" in page.text and "50.0&nbsp;ms" in page.text  # 5000 ms shown by pint as 5 s
    # and a filter may be given in any time unit
    data = await get_json(ds, "/log/inference_runs.json?latency_ms__gt=1s&_shape=array")
    assert [row["provider"] for row in data] == ["azure"]


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


async def test_canned_query_latest_errors(ds: Any) -> None:
    rows = await get_json(ds, "/log/latest_errors.json?_shape=array")
    assert [(r["provider"], r["status_code"]) for r in rows] == [(None, 400), ("azure", 502)]


async def test_canned_query_calls_by_model_p50(ds: Any) -> None:
    rows = await get_json(ds, "/log/calls_by_model.json?_shape=array")
    by_model = {(r["provider"], r["model"]): r for r in rows}
    openai = by_model[("openai", "gpt-4o-mini")]
    assert openai["calls"] == 5
    assert openai["p50_latency_ms"] == 200.0  # 50, 100, 200, 300, 400
    assert openai["p95_latency_ms"] == 400.0
    assert openai["mean_latency_ms"] == 210.0
    assert openai["errors"] == 0 and openai["total_tokens"] == 75
    mock = by_model[("mock", "mock/echo")]
    assert (mock["calls"], mock["p50_latency_ms"], mock["mean_latency_ms"]) == (3, 20.0, 20.0)
    azure = by_model[("azure", "azure/gpt-4o")]
    assert (azure["errors"], azure["p50_latency_ms"], azure["total_tokens"]) == (1, 5000.0, None)
    nope = by_model[(None, "nope/x")]
    assert (nope["calls"], nope["errors"], nope["p50_latency_ms"], nope["mean_latency_ms"]) == (1, 1, None, None)
    assert rows[0]["model"] == "gpt-4o-mini"  # most calls first


async def test_median_of_an_even_count(tmp_path: Path) -> None:
    """The 4 openai latencies alone: the median is the mean of the two middle ones."""
    path = tmp_path / "even.db"

    async def build() -> None:
        store = Store(str(path))
        await store.migrate()
        await store.write(
            [_run(i + 1, "openai", "gpt-4o-mini", v) for i, v in enumerate(LATENCIES[("openai", "gpt-4o-mini")])], []
        )
        await store.dispose()

    await asyncio.to_thread(asyncio.run, build())
    ds = create_datasette(path)
    rows = await get_json(ds, "/log/calls_by_model.json?_shape=array")
    assert rows[0]["p50_latency_ms"] == 250.0
    ds.get_database(DATABASE_NAME).close()


async def test_canned_query_search(ds: Any) -> None:
    rows = await get_json(ds, "/log/search.json?q=zeppelins&_shape=array")
    assert [r["id"] for r in rows] == [9]
    assert "**zeppelins**" in rows[0]["prompt_snippet"]
    assert "**Zeppelins**" in rows[0]["response_snippet"]
    assert len(await get_json(ds, "/log/search.json?q=weather&_shape=array")) == 9
    # punctuation a user might type is no FTS syntax error; an empty form shows no rows
    assert await get_json(ds, "/log/search.json?q=what's+%22up&_shape=array") == []
    assert await get_json(ds, "/log/search.json?q=&_shape=array") == []
    page = await ds.client.get("/log/search")
    assert page.status_code == 200


async def test_canned_query_session(ds: Any) -> None:
    rows = await get_json(ds, "/log/session.json?session=sess-1&_shape=array")
    assert [r["id"] for r in rows] == [5, 6, 7, 9]  # in time order
    assert await get_json(ds, "/log/session.json?session=nope&_shape=array") == []


async def test_canned_query_slowest_calls(ds: Any) -> None:
    rows = await get_json(ds, "/log/slowest_calls.json?_shape=array")
    latencies = [r["latency_ms"] for r in rows]
    assert latencies[:3] == [5000.0, 400.0, 300.0] and latencies == sorted(latencies, reverse=True)


async def test_every_canned_query_answers(ds: Any) -> None:
    queries = load_metadata()["databases"][DATABASE_NAME]["queries"]
    assert set(queries) == {"latest_errors", "calls_by_model", "search", "session", "slowest_calls"}
    for name, query in queries.items():
        assert not query.get("write")
        assert (await ds.client.get(f"/log/{name}")).status_code == 200, name
        await get_json(ds, f"/log/{name}.json?q=weather&session=sess-1")


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
    in sort, facet, export and show-SQL links (/ui/ui/log/...)."""
    ds = create_datasette(log_path, base_url="/ui/")
    await ds.invoke_startup()
    app = Starlette(routes=[Mount("/ui", app=ds.app())])
    pages = [
        "/ui/", "/ui/log", "/ui/log/inference_runs?_facet=user&_search=weather", "/ui/log/inference_runs/1",
        "/ui/log/attempts", "/ui/log/search?q=zeppelins", "/ui/log?sql=select+1",
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
        await store.write([_run(30, "mock", "mock/echo", 1.0)], [])
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
