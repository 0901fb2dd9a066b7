"""`analytics.study`: exact numbers on a small hand-made log, times and durations, and logs
that are not there.

The small log (`loggen.small_rows`, 20 rows) is written the proxy's way, `Store.write`, into
SQLite, and into PostgreSQL too where one listens (`STUDY_TEST_POSTGRES_URL`, a database of
its own created and dropped here), so both backends must give the same answers. The same
functions on a generated log of 100,000 rows, timed: test_study_big.py.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
from frame_rows import assert_row, row_of
from loggen import hour_start, small_rows, write_rows
from postgres_helpers import POSTGRES_URL, database_url, postgres_listening, scratch_database

import analytics.study as study_module
from analytics.frames import ALL_COLUMNS
from analytics.measures import COMPARISON_COLUMNS
from analytics.study import LogError, Study, log_time, parse_duration, parse_time

MINI, GPT4O, AZURE, ECHO = "openai/gpt-4o-mini", "openai/gpt-4o", "azure/gpt-4o-dep", "mock/echo"


# --------------------------------------------------------------------------------------
# The small log, on SQLite and on PostgreSQL
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base() -> datetime:
    return hour_start()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def small(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, base: datetime) -> Iterator[Study]:
    """The small log as a `Study`, once per backend."""
    if request.param == "sqlite":
        url = str(tmp_path_factory.mktemp("small") / "log.db")
        write_rows(url, small_rows(base))
        with Study(url) as log:
            yield log
        return
    if not postgres_listening():
        pytest.skip(f"no PostgreSQL at {POSTGRES_URL}")
    with scratch_database("study_test") as name:
        url = database_url(name)
        write_rows(url, small_rows(base))
        with Study(url) as log:
            yield log


def test_provider_comparison_per_provider_and_model(small: Study) -> None:
    table = small.provider_comparison()
    assert list(table.columns) == ["provider", "model", *COMPARISON_COLUMNS]
    # Busiest first; ties by name; the request refused before routing is a group of its own.
    assert list(zip(table["model"].fillna("-"), table["calls"])) == [(MINI, 6), (GPT4O, 5), (AZURE, 4), (ECHO, 4), ("-", 1)]
    # Latency over the successful upstream calls 100, 200, 300, 400 (not the 429, not the cache hit).
    assert_row(
        row_of(table, model=MINI), provider="openai", calls=6, errors=1, error_rate=1 / 6,
        p50_latency_ms=250.0, p95_latency_ms=385.0, p99_latency_ms=397.0, p50_ttft_ms=60.0, p95_ttft_ms=69.0,
        prompt_tokens=40, completion_tokens=80, total_tokens=120, cost_usd=0.010, priced_calls=5,
        saved_cost_usd=0.001, cache_hits=1, dedup=0, cache_share=1 / 6,
    )
    # The dedup follower and the disconnected stream are out of the timings: 5 and 7 ms left.
    assert_row(
        row_of(table, model=ECHO), calls=4, errors=1, error_rate=0.25, p50_latency_ms=6.0, p95_latency_ms=6.9,
        p99_latency_ms=6.98, p50_ttft_ms=None, total_tokens=6, cost_usd=None, priced_calls=0, saved_cost_usd=None,
        cache_hits=0, dedup=1, cache_share=0.25,
    )
    assert_row(row_of(table, provider=None), model=None, calls=1, errors=1, error_rate=1.0, p50_latency_ms=None,
               total_tokens=None)
    assert_row(row_of(table, model=AZURE), calls=4, errors=1, p50_latency_ms=900.0)  # 800, 900, 1000: the 500 left out
    assert table["calls"].dtype == "int64" and table["p50_latency_ms"].dtype == "float64"
    assert str(table["total_tokens"].dtype) == "Int64"


def test_comparison_windows_and_filters(small: Study, base: datetime) -> None:
    recent = small.provider_comparison(since="24h")
    assert_row(row_of(recent, model=MINI), calls=5, p50_latency_ms=200.0, p95_latency_ms=290.0, cost_usd=0.006)
    assert recent["calls"].sum() == 19  # the row of 30 hours ago is out
    assert small.provider_comparison(since=base - timedelta(hours=29))["calls"].sum() == 19
    assert small.provider_comparison(until=base - timedelta(hours=29))["calls"].sum() == 1
    by_provider = small.provider_comparison(by="provider", provider=["mock", "azure"])
    assert list(by_provider.columns[:2]) == ["provider", "calls"]
    assert dict(zip(by_provider["provider"], by_provider["calls"])) == {"azure": 4, "mock": 4}
    assert small.provider_comparison(by="model", model=MINI, tags=["pilot", "fr"])["calls"].tolist() == [1]
    assert small.provider_comparison(study="quiz")["model"].tolist() == [GPT4O, AZURE]
    with pytest.raises(ValueError, match="by must be"):
        small.provider_comparison(by="user")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        small.provider_comparison(sinse="24h")  # type: ignore[call-arg]


def test_comparison_by_tag_counts_a_row_once_per_tag(small: Study) -> None:
    table = small.provider_comparison(by="tag")
    assert dict(zip(table["tag"].fillna("(untagged)"), table["calls"])) == {"quiz": 9, "(untagged)": 8, "pilot": 3, "fr": 1}
    assert_row(row_of(table, tag="pilot"), errors=0, p50_latency_ms=150.0, cache_hits=1, saved_cost_usd=0.001, cost_usd=0.003)
    assert_row(row_of(table, tag="quiz"), errors=1, p50_latency_ms=1000.0)


def test_time_series_buckets_are_whole_hours(small: Study, base: datetime) -> None:
    series = small.time_series("1h", by=None)
    assert str(series["bucket"].dtype).startswith("datetime64") and str(series["bucket"].dt.tz) == "UTC"
    expected = {base - timedelta(hours=h): n for h, n in ((30, 1), (5, 9), (3, 2), (2, 4), (1, 4))}
    assert dict(zip(series["bucket"], series["calls"])) == expected
    assert list(series["bucket"]) == sorted(expected)
    per_provider = small.time_series("1h", by="provider", since="24h")
    two_hours_ago = per_provider[per_provider["bucket"] == base - timedelta(hours=2)]
    assert dict(zip(two_hours_ago["provider"], two_hours_ago["calls"])) == {"mock": 3, "openai": 1}
    assert_row(row_of(per_provider, bucket=base - timedelta(hours=2), provider="mock"), p50_latency_ms=6.0, dedup=1)
    daily = small.time_series("1d", by="model")
    assert daily["calls"].sum() == 20 and (daily["bucket"].dt.hour == 0).all()
    with pytest.raises(ValueError, match="duration"):
        small.time_series("hourly")


def test_summary(small: Study, base: datetime) -> None:
    s = small.summary()
    assert_row(
        s.to_dict(), calls=20, errors=4, error_rate=0.2, providers=3, models=4, sessions=2, users=2, streams=3,
        cache_hits=1, dedup=1, cache_share=0.1, cost_usd=0.010, saved_cost_usd=0.001, total_tokens=126,
    )
    assert s["first_call"] == base - timedelta(hours=30) + timedelta(minutes=10)
    assert s["last_call"] == base - timedelta(hours=1) + timedelta(minutes=10)
    assert small.summary(study="quiz")["calls"] == 9
    empty = small.summary(since=base + timedelta(days=1))
    assert empty["calls"] == 0 and empty["errors"] == 0 and math.isnan(empty["p50_latency_ms"]) and pd.isna(empty["first_call"])


def test_search(small: Study) -> None:
    found = small.search("capital FRANCE")
    assert found["id"].tolist() == [1]
    assert "[capital]" in found["response_snippet"][0] and found["model"][0] == MINI
    assert small.search("C++")["id"].tolist() == [3]  # punctuation is searched, not parsed as syntax
    assert small.search("answer", provider="azure")["model"].unique().tolist() == [AZURE]
    assert len(small.search("answer", limit=2)) == 2
    assert small.search("no such words anywhere").empty
    with pytest.raises(ValueError, match="empty"):
        small.search("  ")


def test_search_raw_fts5_syntax(small: Study) -> None:
    if small.dialect != "sqlite":
        pytest.skip("FTS5 syntax is SQLite's")
    assert small.search("capit*", raw=True)["id"].tolist() == [1]
    assert sorted(small.search("france OR bonjour", raw=True)["id"]) == [1, 2]


def test_compare_answers_side_by_side(small: Study) -> None:
    wide = small.compare_answers("quiz")
    assert list(wide.columns) == ["item", "prompt", GPT4O, AZURE, f"{GPT4O} latency_ms", f"{AZURE} latency_ms"]
    assert wide["item"].tolist()[:2] == [0, 1] and pd.isna(wide["item"][2])
    assert wide["prompt"].tolist() == ["user: Question 0?", "user: Question 1?", "user: Free question"]
    assert wide[GPT4O].tolist() == [f"{GPT4O} answer 0.0", f"{GPT4O} answer 1.0", "free answer"]
    # Azure's repeat 0 of item 1 failed: its first successful repeat is shown instead.
    assert wide[AZURE].tolist()[:2] == [f"{AZURE} answer 0.0", f"{AZURE} answer 1.1"] and pd.isna(wide[AZURE][2])
    assert wide[f"{AZURE} latency_ms"].tolist()[:2] == [800.0, 1000.0]
    every = small.compare_answers("quiz", prompt=0, repeats="all")
    assert len(every) == 1
    assert every[GPT4O][0] == f"{GPT4O} answer 0.0\n\n---\n\n{GPT4O} answer 0.1"
    assert every[f"{GPT4O} latency_ms"][0] == 1100.0  # the median of 1000 and 1200
    assert small.compare_answers("quiz", prompt="FREE")[GPT4O].tolist() == ["free answer"]
    assert small.compare_answers("no-such-study").empty


def test_load_runs_types_and_filters(small: Study, base: datetime) -> None:
    runs = small.load_runs()
    assert len(runs) == 20 and runs["id"].tolist() == list(range(1, 21))
    assert "request_json" not in runs and "response_json" not in runs
    assert str(runs["created_at"].dtype).startswith("datetime64") and str(runs["created_at"].dt.tz) == "UTC"
    assert runs["created_at"][0] == base - timedelta(hours=1) + timedelta(minutes=10)
    assert runs["stream"].dtype == bool and runs["provider"].dtype == "category"
    assert str(runs["status_code"].dtype) == "Int64" and pd.isna(runs["prompt_tokens"][4])
    assert runs["tags"][1] == ["pilot", "fr"] and runs["tags"][2] == []
    assert runs["metadata"][11] == {"study": "quiz", "run": "r1", "item": 0, "repeat": 0} and runs["metadata"][0] == {}
    assert small.load_runs(tags="pilot")["id"].tolist() == [1, 2, 6]
    assert small.load_runs(study="quiz", model=AZURE)["id"].tolist() == [14, 15, 18, 19]
    assert len(small.load_runs(since="24h")) == 19
    assert small.load_runs(limit=3)["id"].tolist() == [18, 19, 20]
    assert list(small.load_runs(columns=["model", "latency_ms"]).columns) == ["id", "model", "latency_ms"]
    assert "request_json" in small.load_runs(columns=ALL_COLUMNS)
    with pytest.raises(ValueError, match="not columns"):
        small.load_runs(columns=["model; DROP TABLE inference_runs"])
    with pytest.raises(ValueError, match="empty list"):
        small.load_runs(provider=[])


def test_module_functions_take_the_database_first(small: Study) -> None:
    url = small.url
    assert study_module.provider_comparison(url, by="provider").equals(small.provider_comparison(by="provider"))
    assert study_module.summary(small)["calls"] == 20  # an open Study is reused
    assert len(study_module.load_runs(url, tags="pilot")) == 3
    assert study_module.search(url, "capital")["id"].tolist() == [1]
    assert len(study_module.compare_answers(url, "quiz")) == 3
    assert len(study_module.time_series(url, "1d", by=None)) >= 2
    assert list(inspect.signature(study_module.load_runs).parameters)[:2] == ["db", "limit"]


def test_usable_inside_a_running_event_loop(small: Study) -> None:
    """A notebook runs its cells inside an event loop (and so does the study runner): the
    PostgreSQL reads, async underneath, must not try to start a loop of their own there."""

    async def inside() -> int:
        return int(small.summary()["calls"])

    assert asyncio.run(inside()) == 20


# --------------------------------------------------------------------------------------
# Times, and logs that are not there
# --------------------------------------------------------------------------------------


def test_times_and_durations() -> None:
    now = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)
    assert parse_time("24h", now) == datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
    assert parse_time("30m", now) == now - timedelta(minutes=30)
    assert parse_time("7d", now) == now - timedelta(days=7)
    assert parse_time(timedelta(hours=2), now) == now - timedelta(hours=2)
    assert parse_time("2026-11-24") == datetime(2026, 11, 24, tzinfo=timezone.utc)
    assert parse_time("2026-11-24T10:00+02:00") == datetime(2026, 11, 24, 8, tzinfo=timezone.utc)
    assert parse_time("2026-11-24T08:00Z") == datetime(2026, 11, 24, 8, tzinfo=timezone.utc)
    assert parse_time(datetime(2026, 11, 24, 8)) == datetime(2026, 11, 24, 8, tzinfo=timezone.utc)  # naive = UTC
    assert log_time(datetime(2026, 11, 24, 14, 22, 47, 243999, tzinfo=timezone.utc)) == "2026-11-24T14:22:47.243Z"
    assert parse_duration("15min") == parse_duration("15m") == timedelta(minutes=15)
    for bad in ("yesterday", "24", "-1h", "0h"):
        with pytest.raises(ValueError):
            parse_time(bad)


def test_a_missing_file_or_a_file_that_is_no_log(tmp_path: Path) -> None:
    with pytest.raises(LogError, match="no log at"):
        Study(tmp_path / "typo.db")
    assert not (tmp_path / "typo.db").exists()  # read-only: never creates a database
    sqlite3.connect(tmp_path / "other.db").execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(LogError, match="inference_runs"):
        Study(tmp_path / "other.db")
    (tmp_path / "text.db").write_text("not a database at all")
    with pytest.raises(LogError, match="cannot read"):
        Study(tmp_path / "text.db")
    with pytest.raises(LogError, match="in-memory"):
        Study("sqlite:///:memory:")


def test_an_empty_log(tmp_path: Path) -> None:
    write_rows(str(tmp_path / "empty.db"), [])
    with Study(f"sqlite:///{tmp_path / 'empty.db'}") as log:
        assert log.provider_comparison().empty and log.time_series().empty and log.load_runs().empty
        assert log.summary()["calls"] == 0 and log.compare_answers("x").empty and log.search("x").empty
