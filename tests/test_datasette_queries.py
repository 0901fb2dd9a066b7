"""Datasette's canned queries over the log: what each answers (percentiles, medians, errors,
costs, cache savings, studies side by side, search, sessions) and that every one answers."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from analytics.datasette import DATABASE_NAME, create_datasette, load_metadata
from datasette_fixtures import CANNED, DAY1, DAY2, LATENCIES, WINDOWED, get_json, run_row, write_log
from datasette_fixtures import ads, anyio_backend, ds, log_path  # noqa: F401  (the fixtures)

pytestmark = pytest.mark.anyio


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
    latencies = LATENCIES[("openai", "gpt-4o-mini")]
    path = await asyncio.to_thread(
        write_log, tmp_path / "even.db", [run_row(i + 1, "openai", "gpt-4o-mini", v) for i, v in enumerate(latencies)]
    )
    ds = create_datasette(path)
    rows = await get_json(ds, "/log/calls_by_model.json?_shape=array")
    assert rows[0]["p50_latency_ms"] == 250.0
    ds.get_database(DATABASE_NAME).close()


async def test_cut_answers_are_the_ones_that_did_not_end_by_themselves(tmp_path: Path) -> None:
    metadata = [None, '{"finish_reason": "length"}', '{"experiment": "e1"}', '{"finish_reason": ["stop", "length"]}',
                '{"response_id": "resp_1", "status": "incomplete", "incomplete_reason": "max_output_tokens"}',
                '{"response_id": "resp_2"}', '{"finish_reason": "content_filter"}']
    runs = [run_row(i + 1, "openai", "gpt-4o-mini", 10.0, metadata=m, response=f"answer {i + 1}")
            for i, m in enumerate(metadata)]
    ds = create_datasette(await asyncio.to_thread(write_log, tmp_path / "cut.db", runs))
    rows = await get_json(ds, "/log/cut_answers.json?_shape=array")
    assert [(r["id"], r["why"], r["response"]) for r in rows] == [
        (7, "content_filter", "answer 7"), (5, "max_output_tokens", "answer 5"),
        (4, '["stop","length"]', "answer 4"), (2, "length", "answer 2")]  # newest first
    assert await get_json(ds, "/log/cut_answers.json?_shape=array&model=mock/echo") == []
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
