"""Datasette over the log: metadata, facets, sort, canned queries (and their time window and model
parameters), dashboards, the start page, cell rendering, the /ui mount, and read-only-ness."""

from __future__ import annotations

import asyncio
import html
import json
import re
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from analytics.datasette import (
    DATABASE_NAME,
    INVALID_SINCE,
    ReadOnlyError,
    create_datasette,
    load_metadata,
    since_utc,
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


CANNED = {
    "latency_percentiles", "error_breakdown", "cost_per_day", "cache_savings", "slowest_calls",
    "latest_errors", "calls_by_model", "studies", "study_answers", "search", "session", "conversation",
}
WINDOWED = {
    "latency_percentiles", "error_breakdown", "cost_per_day", "cache_savings", "slowest_calls",
    "latest_errors", "calls_by_model",
}


async def test_every_canned_query_answers(ds: Any) -> None:
    queries = load_metadata()["databases"][DATABASE_NAME]["queries"]
    assert set(queries) == CANNED
    for name, query in queries.items():
        assert not query.get("write")
        assert query.get("title") and query.get("description"), name
        assert (await ds.client.get(f"/log/{name}")).status_code == 200, name
        await get_json(ds, f"/log/{name}.json?q=weather&session=sess-1&study=s1")
        if name in WINDOWED:
            assert query["params"] == ["since", "model"], name
            for since in ("", "24h", "7d", "90m", "today", "2026-11-01", "2026-11-02T10:00:05Z"):
                for model in ("", "gpt-4o-mini", "mock/echo"):
                    response = await ds.client.get(f"/log/{name}", params={"since": since, "model": model})
                    assert response.status_code == 200, (name, since, model)


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


# ---------------------------------------------------------------------------------------------
# Time windows, costs, cache savings and studies: a second log made for them.

DAY1, DAY2 = "2026-11-01", "2026-11-02"


def _analysis_rows() -> list[dict[str, Any]]:
    """Day 1: openai gpt-4o-mini, 2 misses, a hit and a dedup at $0.001 each (the last two saved).
    Day 2: azure, a miss at $0.002 and a 502; mock without a price. Study "s1": 2 items x 2 models."""
    rows = [
        _run(1, "openai", "openai/gpt-4o-mini", 100.0, created_at=f"{DAY1}T08:00:00.000Z", cost_usd=0.001),
        _run(2, "openai", "openai/gpt-4o-mini", 300.0, created_at=f"{DAY1}T09:00:00.000Z", cost_usd=0.001),
        _run(3, "openai", "openai/gpt-4o-mini", 1.0, created_at=f"{DAY1}T10:00:00.000Z", cost_usd=0.001, cache="hit"),
        _run(4, "openai", "openai/gpt-4o-mini", 200.0, created_at=f"{DAY1}T10:00:00.100Z", cost_usd=0.001, cache="dedup"),
        _run(5, "azure", "azure/gpt-4o-mini", 800.0, created_at=f"{DAY2}T08:00:00.000Z", cost_usd=0.002),
        _run(
            6, "azure", "azure/gpt-4o-mini", 4000.0, created_at=f"{DAY2}T09:00:00.000Z", cost_usd=None,
            status_code=502, error="upstream 502 Bad Gateway", response=None, cache=None, attempts=3,
        ),
        _run(7, "mock", "mock/echo", 2.0, created_at=f"{DAY2}T10:00:00.000Z", cost_usd=None, cache=None),
    ]
    n = 7
    for item, country in enumerate(["France", "Peru"]):
        for model, answer in (("mock/echo", f"echo {country}"), ("openai/gpt-4o-mini", f"Capital of {country}!")):
            n += 1
            rows.append(_run(
                n, model.split("/")[0], model, 50.0 + n, created_at=f"{DAY2}T11:00:{n:02d}.000Z",
                prompt=f"user: capital of {country}?", response=answer, session_id="s1", tags='["s1"]',
                metadata=json.dumps({"study": "s1", "run": "r1", "item": item, "repeat": 0}), cost_usd=None,
            ))
    return rows


@pytest.fixture
async def ads(tmp_path: Path) -> AsyncIterator[Any]:
    path = tmp_path / "analysis.db"

    async def build() -> None:
        store = Store(str(path))
        await store.migrate()
        await store.write(_analysis_rows(), [])
        await store.dispose()

    await asyncio.to_thread(asyncio.run, build())
    ds = create_datasette(path)
    await ds.invoke_startup()
    yield ds
    ds.get_database(DATABASE_NAME).close()


NOW = datetime(2026, 11, 24, 15, 30, 0, 250000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("since", "expected"),
    [
        ("", ""), ("  ", ""), ("all", ""), (None, ""),
        ("24", "2026-11-23T15:30:00.250Z"), ("24h", "2026-11-23T15:30:00.250Z"), ("1.5 hours", "2026-11-24T14:00:00.250Z"),
        ("90m", "2026-11-24T14:00:00.250Z"), ("7d", "2026-11-17T15:30:00.250Z"), ("2w", "2026-11-10T15:30:00.250Z"),
        ("today", "2026-11-24T00:00:00.000Z"), (48, "2026-11-22T15:30:00.250Z"),
        ("2026-11-01", "2026-11-01T00:00:00.000Z"), ("2026-11-01T09:30", "2026-11-01T09:30:00.000Z"),
        ("2026-11-01T09:30:00Z", "2026-11-01T09:30:00.000Z"), ("2026-11-01T10:30+01:00", "2026-11-01T09:30:00.000Z"),
    ],
)
def test_since_utc(since: Any, expected: str) -> None:
    assert since_utc(since, now=NOW) == expected


@pytest.mark.parametrize("since", ["yesterday-ish", "7y", "2026-13-01", "-5h"])
def test_since_utc_refuses_what_it_cannot_read(since: str) -> None:
    with pytest.raises(ValueError, match="not a time window"):
        since_utc(since, now=NOW)


async def test_the_window_and_the_model_filter_every_query(ads: Any) -> None:
    async def calls(since: str, model: str = "") -> int:
        rows = await get_json(ads, f"/log/calls_by_model.json?_shape=array&since={since}&model={model}")
        return sum(r["calls"] for r in rows)

    assert await calls("") == 11
    assert await calls(DAY2) == 7
    assert await calls(f"{DAY2}T10:00") == 5
    assert await calls("24h") == 0  # the rows are older than a day
    assert await calls("", "openai/gpt-4o-mini") == 6  # as asked
    assert await calls("", "gpt-4o-mini") == 8  # or as sent upstream (openai and azure)
    assert await calls(DAY2, "echo") == 3
    # a window it cannot read matches nothing, and the page says why
    assert await calls("soon") == 0
    page = await ads.client.get("/log/calls_by_model?since=soon")
    assert page.status_code == 200 and "since: &#39;soon&#39; is not a time window" in page.text
    assert (await get_json(ads, "/log.json?sql=select+since_utc('x')+as+s&_shape=array")) == [{"s": INVALID_SINCE}]


async def test_latency_percentiles(ds: Any) -> None:
    rows = await get_json(ds, "/log/latency_percentiles.json?_shape=array")
    by_model = {(r["provider"], r["model"]): r for r in rows}
    assert set(by_model) == {("openai", "gpt-4o-mini"), ("mock", "mock/echo")}  # failed calls left out
    openai = by_model[("openai", "gpt-4o-mini")]  # 50, 100, 200, 300, 400; one stream (ttft 12)
    assert (openai["calls"], openai["p50_ms"], openai["p90_ms"], openai["p95_ms"], openai["p99_ms"]) == (
        5, 200.0, 400.0, 400.0, 400.0,
    )
    assert (openai["max_ms"], openai["mean_ms"], openai["p50_ttft_ms"]) == (400.0, 210.0, 12.0)
    mock = by_model[("mock", "mock/echo")]
    assert (mock["calls"], mock["p50_ms"], mock["p99_ms"], mock["p50_ttft_ms"]) == (3, 20.0, 30.0, None)


async def test_latency_percentiles_leave_cache_hits_out(ads: Any) -> None:
    rows = await get_json(ads, f"/log/latency_percentiles.json?_shape=array&since={DAY1}&model=openai/gpt-4o-mini")
    # 100, 300, the dedup's 200 (it waited for the upstream) and the study's 59 and 61;
    # the 1 ms cache hit is no upstream latency
    assert [(r["calls"], r["p50_ms"], r["max_ms"], r["mean_ms"]) for r in rows] == [(5, 100.0, 300.0, 144.0)]
    assert await get_json(ads, f"/log/latency_percentiles.json?_shape=array&since={DAY1}&model=nope") == []


async def test_error_breakdown(ds: Any) -> None:
    rows = await get_json(ds, "/log/error_breakdown.json?_shape=array")
    assert [(r["provider"], r["status_code"], r["error_kind"], r["errors"], r["calls"], r["pct_of_calls"]) for r in rows] == [
        ("azure", 502, "upstream 502 Bad Gateway", 1, 1, 100.0),
        (None, 400, "unknown provider 'nope'", 1, 1, 100.0),  # no provider: refused before routing
    ]
    assert rows[0]["last_request_id"] == "req-0008"
    assert await get_json(ds, "/log/error_breakdown.json?_shape=array&model=gpt-4o-mini") == []


async def test_cost_per_day_counts_cache_savings_apart(ads: Any) -> None:
    rows = await get_json(ads, "/log/cost_per_day.json?_shape=array")
    by_key = {(r["day"], r["model"]): r for r in rows}
    openai = by_key[(DAY1, "openai/gpt-4o-mini")]
    assert (openai["calls"], openai["spent_usd"], openai["saved_usd"]) == (4, 0.002, 0.002)
    azure = by_key[(DAY2, "azure/gpt-4o-mini")]
    assert (azure["calls"], azure["spent_usd"], azure["saved_usd"], azure["unpriced_calls"]) == (2, 0.002, 0.0, 0)
    assert by_key[(DAY2, "mock/echo")]["unpriced_calls"] == 3  # the failed azure call is not "unpriced"
    assert rows[0]["day"] == DAY2  # newest day first


async def test_cache_savings(ads: Any) -> None:
    rows = await get_json(ads, f"/log/cache_savings.json?_shape=array&since={DAY1}")
    openai = next(r for r in rows if r["model"] == "openai/gpt-4o-mini")
    assert (openai["calls"], openai["hits"], openai["dedups"], openai["misses"], openai["cache_off"]) == (6, 1, 1, 4, 0)
    assert (openai["saved_usd"], openai["spent_usd"], openai["saved_pct"]) == (0.002, 0.002, 50.0)
    assert openai["no_upstream_pct"] == round(100 * 2 / 6, 1)
    assert (openai["hit_latency_ms"], openai["miss_latency_ms"]) == (1.0, (100 + 300 + 59 + 61) / 4)
    assert rows[0]["model"] == "openai/gpt-4o-mini"  # most saved first


async def test_studies_and_answers_side_by_side(ads: Any) -> None:
    studies = await get_json(ads, "/log/studies.json?_shape=array")
    assert [(s["study"], s["calls"], s["models"], s["items"], s["failed"]) for s in studies] == [("s1", 4, 2, 2, 0)]
    rows = await get_json(ads, "/log/study_answers.json?study=s1&_shape=array")
    assert [(r["item"], r["repeat"], r["model"], r["response"]) for r in rows] == [
        (0, 0, "mock/echo", "echo France"), (0, 0, "openai/gpt-4o-mini", "Capital of France!"),
        (1, 0, "mock/echo", "echo Peru"), (1, 0, "openai/gpt-4o-mini", "Capital of Peru!"),
    ]
    assert await get_json(ads, "/log/study_answers.json?study=&_shape=array") == []
    assert len(await get_json(ads, "/log/study_answers.json?study=s1&model=echo&_shape=array")) == 2
    page = (await ads.client.get("/log/study_answers?study=s1")).text
    grid = page[page.index('<table class="side-by-side">') : page.index("</table>")]
    headers = re.findall(r"<th>(.*?)</th>", grid)
    assert headers == ["item", "prompt", "mock/echo", "openai/gpt-4o-mini"]
    lines = re.findall(r"<tr>(.*?)</tr>", grid, re.S)[1:]
    assert len(lines) == 2
    assert "capital of France?" in lines[0] and "echo France" in lines[0] and "Capital of France!" in lines[0]
    assert lines[0].index("echo France") < lines[0].index("Capital of France!")  # in the models' column order
    # without a study: the studies to choose from, linked
    page = (await ads.client.get("/log/study_answers")).text
    assert "Choose a study" in page and 'href="/ui/log/study_answers?study=s1"' in page
    # the studies query links each name to its answers
    page = (await ads.client.get("/log/studies")).text
    assert 'href="/ui/log/study_answers?study=s1"' in page


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


def _dashboard() -> dict[str, Any]:
    return load_metadata()["plugins"]["datasette-dashboards"]["overview"]


async def test_dashboard_page_and_charts_render_server_side(ds: Any) -> None:
    config = _dashboard()
    charts = config["charts"]
    for required in ("latency-over-time", "cost-per-day", "error-rate-by-provider"):
        assert charts[required]["library"] == "vega-lite"
    layout = {cell for line in config["layout"] for cell in line}
    assert layout == set(charts)
    listing = await ds.client.get("/-/dashboards")
    assert listing.status_code == 200 and 'href="/ui/-/dashboards/overview"' in listing.text
    page = await ds.client.get("/-/dashboards/overview?since=7d&model=")
    assert page.status_code == 200
    for slug in charts:
        assert f'id="chart-{slug}"' in page.text, slug
        assert (await ds.client.get(f"/-/dashboards/overview/{slug}")).status_code == 200, slug
    # Vega, Vega-Lite and vega-embed come from this server, not from a CDN
    scripts = re.findall(r'<script src="([^"]+)"', page.text)
    assert scripts and all(src.startswith("/ui/-/static") for src in scripts), scripts
    for name in ("vega.min.js", "vega-lite.min.js", "vega-embed.min.js", "dashboards.js"):
        src = next(s for s in scripts if s.endswith("/" + name))
        response = await ds.client.get(src.removeprefix("/ui"))
        assert response.status_code == 200 and len(response.content) > 1000, src


async def test_every_chart_query_answers_through_the_json_api(ads: Any) -> None:
    """What the dashboard's JavaScript fetches: /log.json?sql=<chart SQL>&since=…&model=…"""
    charts = _dashboard()["charts"]
    for slug, chart in charts.items():
        for since, model in (("", ""), (DAY2, ""), ("7d", "gpt-4o-mini"), ("bad", "")):
            response = await ads.client.get(
                "/log.json", params={"sql": chart["query"], "since": since, "model": model, "_shape": "objects"}
            )
            assert response.status_code == 200, (slug, since, model, response.text[:300])
    # and what they answer, over everything
    async def rows(slug: str) -> list[dict[str, Any]]:
        response = await ads.client.get("/log.json", params={"sql": charts[slug]["query"], "_shape": "array"})
        return response.json()

    assert await rows("calls") == [{"calls": 11}]
    assert await rows("spent") == [{"usd": "0.0040"}] and await rows("saved") == [{"usd": "0.0020"}]
    assert await rows("error-rate") == [{"pct": round(100 / 11, 1)}]
    errors = {r["provider"]: r for r in await rows("error-rate-by-provider")}
    assert (errors["azure"]["errors"], errors["azure"]["error_pct"], errors["openai"]["error_pct"]) == (1, 50.0, 0.0)
    cost = {(r["day"], r["model"]): r["spent_usd"] for r in await rows("cost-per-day")}
    assert cost[(DAY1, "openai/gpt-4o-mini")] == 0.002 and cost[(DAY2, "azure/gpt-4o-mini")] == 0.002
    latency = await rows("latency-over-time")
    assert {r["provider"] for r in latency} == {"openai", "azure", "mock"}  # the 502 and the hit left out
    # 1.1 days of data: hourly buckets (daily past 4 days, 10 minutes under 6 hours)
    assert {r["time"] for r in latency if r["provider"] == "openai"} == {
        f"{DAY1}T08:00:00Z", f"{DAY1}T09:00:00Z", f"{DAY1}T10:00:00Z", f"{DAY2}T11:00:00Z",
    }
    study_hour = next(r for r in latency if r["provider"] == "openai" and r["time"] == f"{DAY2}T11:00:00Z")
    assert (study_hour["calls"], study_hour["p50_ms"], study_hour["p95_ms"]) == (2, 60.0, 61.0)
    outcomes = {(r["model"], r["outcome"]): r["calls"] for r in await rows("calls-by-model")}
    assert outcomes[("openai/gpt-4o-mini", "cache hit")] == 1 and outcomes[("azure/gpt-4o-mini", "failed")] == 1
