"""Datasette's time windows (`since`, and the model filter every windowed query takes) and the
dashboard: its page, its charts rendered server-side from local scripts, and every chart's query."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from analytics.datasette import INVALID_SINCE, load_metadata, since_utc
from datasette_fixtures import DAY1, DAY2, get_json
from datasette_fixtures import ads, anyio_backend, ds, log_path  # noqa: F401  (the fixtures)

pytestmark = pytest.mark.anyio

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
