"""`analytics.study`: exact numbers on a small hand-made log, and every function timed on a
generated log of 100,000 rows.

The small log (`loggen.small_rows`, 20 rows) is written the proxy's way, `Store.write`, into
SQLite, and into PostgreSQL too where one listens (`STUDY_TEST_POSTGRES_URL`, a database of
its own created and dropped here), so both backends must give the same answers. The large
log is generated per session by `loggen.write_log`; its results are checked against pandas
computations over `load_runs` (an independent path) and its timings printed at the end
(`pytest -s`, or `-rA`).
"""

from __future__ import annotations

import asyncio
import inspect
import math
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
import pytest
from loggen import STUDY_MODELS, STUDY_NAME, hour_start, small_rows, study_answer, study_item_count, write_log, write_rows

import analytics.study as study_module
from analytics.frames import ALL_COLUMNS
from analytics.measures import COMPARISON_COLUMNS
from analytics.study import LogError, Study, log_time, parse_duration, parse_time

POSTGRES_URL = os.environ.get("STUDY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
BIG_ROWS = 100_000
#: Generous: each function takes well under a second on 100,000 rows; this catches a query
#: that stops using SQL aggregates, not a slow machine.
BIG_LIMIT_S = 15.0

MINI, GPT4O, AZURE, ECHO = "openai/gpt-4o-mini", "openai/gpt-4o", "azure/gpt-4o-dep", "mock/echo"


# --------------------------------------------------------------------------------------
# The small log, on SQLite and on PostgreSQL
# --------------------------------------------------------------------------------------


def postgres_listening() -> bool:
    parts = urlsplit(POSTGRES_URL)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), timeout=0.5).close()
        return True
    except OSError:
        return False


def _admin(url: str, sql: str) -> None:
    import asyncpg

    async def go() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(go())


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
    name = f"study_test_{uuid.uuid4().hex[:10]}"
    _admin(POSTGRES_URL, f'CREATE DATABASE "{name}"')
    url = POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        write_rows(url, small_rows(base))
        with Study(url) as log:
            yield log
    finally:
        _admin(POSTGRES_URL, f'DROP DATABASE "{name}" WITH (FORCE)')


def row_of(frame: pd.DataFrame, **keys: Any) -> dict[str, Any]:
    """The one row of `frame` whose key columns equal `keys` (None matches a NULL key)."""
    mask = pd.Series(True, index=frame.index)
    for column, value in keys.items():
        mask &= frame[column].isna() if value is None else frame[column] == value
    found = frame[mask]
    assert len(found) == 1, f"{len(found)} rows for {keys}:\n{frame}"
    return found.iloc[0].to_dict()


def same(value: Any, expected: Any) -> bool:
    """Equal, with NaN/NA equal to None and floats compared to a micro-unit."""
    if expected is None:
        return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))
    if isinstance(expected, float):
        return value == pytest.approx(expected, abs=1e-6)
    return value == expected


def assert_row(row: dict[str, Any], **expected: Any) -> None:
    wrong = {k: (row[k], v) for k, v in expected.items() if not same(row[k], v)}
    assert not wrong, f"(found, expected): {wrong}"


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


# --------------------------------------------------------------------------------------
# 100,000 generated rows: every function timed
# --------------------------------------------------------------------------------------

TIMINGS: dict[str, float] = {}


def timed(label: str, call: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    result = call()
    TIMINGS[label] = elapsed = time.perf_counter() - started
    print(f"\n  {label}: {elapsed:.3f} s", end="")
    assert elapsed < BIG_LIMIT_S, f"{label} took {elapsed:.1f} s on {BIG_ROWS:,} rows"
    return result


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Study]:
    path = tmp_path_factory.mktemp("big") / "log.db"
    started = time.perf_counter()
    write_log(path, BIG_ROWS)
    TIMINGS[f"(generate {BIG_ROWS:,} rows)"] = time.perf_counter() - started
    with Study(path) as log:
        yield log


@pytest.fixture(scope="module")
def big_runs(big: Study) -> pd.DataFrame:
    return timed("load_runs()", big.load_runs)


def test_big_load_runs(big: Study, big_runs: pd.DataFrame) -> None:
    assert len(big_runs) == BIG_ROWS and big_runs["created_at"].is_monotonic_increasing
    recent = timed("load_runs(since=24h, tags=pilot)", lambda: big.load_runs(since="24h", tags="pilot"))
    cutoff = pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=24)
    assert 0 < len(recent) < BIG_ROWS // 5
    assert all("pilot" in tags for tags in recent["tags"]) and (recent["created_at"] >= cutoff - pd.Timedelta(minutes=5)).all()


def test_big_provider_comparison_agrees_with_pandas(big: Study, big_runs: pd.DataFrame) -> None:
    table = timed("provider_comparison()", big.provider_comparison)
    runs = big_runs.astype({"provider": object, "model": object})
    failed = runs["error"].notna() | (runs["status_code"].fillna(0) >= 400)
    answered = runs[~failed & ~runs["cache"].isin(["hit", "dedup"])]
    for (provider, model), group in runs.groupby(["provider", "model"]):
        row = row_of(table, provider=provider, model=model)
        timings = answered[(answered["provider"] == provider) & (answered["model"] == model)]
        assert row["calls"] == len(group)
        assert row["errors"] == failed[group.index].sum()
        assert row["p50_latency_ms"] == pytest.approx(timings["latency_ms"].quantile(0.5), abs=1e-3)
        assert row["p99_latency_ms"] == pytest.approx(timings["latency_ms"].quantile(0.99), abs=1e-3)
        assert row["p95_ttft_ms"] == pytest.approx(timings["ttft_ms"].dropna().quantile(0.95), abs=1e-3)
        assert row["total_tokens"] == group["total_tokens"].sum()
        saved = group["cache"].isin(["hit", "dedup"])
        assert row["cost_usd"] == pytest.approx(group.loc[~saved, "cost_usd"].sum(min_count=1), nan_ok=True)
        assert row["saved_cost_usd"] == pytest.approx(group.loc[saved, "cost_usd"].sum(min_count=1), nan_ok=True)
    assert table["calls"].sum() == BIG_ROWS
    assert 0.02 < table["error_rate"].max() <= 1.0 and table["priced_calls"].sum() < BIG_ROWS


def test_big_comparison_groupings(big: Study) -> None:
    by_tag = timed("provider_comparison(by=tag)", lambda: big.provider_comparison(by="tag"))
    assert {"pilot", "french", "eval", "long", "prod", STUDY_NAME} <= set(by_tag["tag"].dropna())
    assert by_tag["calls"].sum() > BIG_ROWS  # two-tag rows count twice
    recent = timed("provider_comparison(since=24h)", lambda: big.provider_comparison(since="24h"))
    assert 0 < recent["calls"].sum() < BIG_ROWS
    quiz = timed("provider_comparison(study=…)", lambda: big.provider_comparison(study=STUDY_NAME))
    assert sorted(quiz["model"]) == sorted(STUDY_MODELS) and (quiz["errors"] == 0).all()


def test_big_time_series(big: Study) -> None:
    hourly = timed("time_series(1h, by=provider)", lambda: big.time_series("1h"))
    assert hourly["calls"].sum() == BIG_ROWS and hourly["bucket"].is_monotonic_increasing
    assert 7 * 24 <= hourly["bucket"].nunique() <= 7 * 24 + 1
    daily = timed("time_series(1d, by=None)", lambda: big.time_series("1d", by=None))
    assert daily["calls"].sum() == BIG_ROWS and len(daily) in (7, 8)  # 7 days that start at midnight, or 8


def test_big_summary(big: Study, big_runs: pd.DataFrame) -> None:
    s = timed("summary()", big.summary)
    assert s["calls"] == BIG_ROWS and s["models"] == len(big_runs["model"].dropna().unique())
    assert s["p50_latency_ms"] > 0 and s["first_call"] == big_runs["created_at"].min()


def test_big_search(big: Study) -> None:
    found = timed("search('capital of peru')", lambda: big.search("capital of peru"))
    assert len(found) == 50 and (found["prompt"].fillna("") + found["response"].fillna("")).str.contains("Peru").all()


def test_big_compare_answers(big: Study) -> None:
    wide = timed("compare_answers(study)", lambda: big.compare_answers(STUDY_NAME))
    items = study_item_count(BIG_ROWS)
    assert wide["item"].tolist() == list(range(items))
    assert list(wide.columns[2 : 2 + len(STUDY_MODELS)]) == list(STUDY_MODELS)
    for model in STUDY_MODELS:
        assert wide[model].tolist() == [study_answer(model, item, 0) for item in range(items)]


def test_zz_print_timings() -> None:
    """The timings of this module's runs on the generated log, as one table (`pytest -s`/`-rA`)."""
    if not TIMINGS:
        pytest.skip("the 100,000-row tests did not run")
    width = max(map(len, TIMINGS))
    lines = [f"analytics.study on {BIG_ROWS:,} generated rows (SQLite):"]
    lines += [f"  {label:<{width}}  {seconds:7.3f} s" for label, seconds in TIMINGS.items()]
    print("\n" + "\n".join(lines))
