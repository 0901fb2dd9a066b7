"""`analytics.study` on a generated log of 100,000 rows: every function timed.

The log is generated per module by `loggen.write_log`; its results are checked against pandas
computations over `load_runs` (an independent path) and its timings printed at the end
(`pytest -s`, or `-rA`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd
import pytest
from frame_rows import row_of
from loggen import STUDY_MODELS, STUDY_NAME, study_answer, study_item_count, write_log

from analytics.study import Study

BIG_ROWS = 100_000
#: Generous: each function takes well under a second on 100,000 rows; this catches a query
#: that stops using SQL aggregates, not a slow machine.
BIG_LIMIT_S = 15.0


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
