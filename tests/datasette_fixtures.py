"""The logs the Datasette tests browse, written the proxy's way (`Store.write`), and Datasette
over them: `ds` over a small log of ten calls, `ads` over one made for time windows, costs,
cache savings and studies."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from analytics.datasette import DATABASE_NAME, create_datasette
from proxy.store import Store
from proxy.store.schema import inference_runs as runs_table

# Latencies per (provider, model): the medians are 250 (even count) and 20 (odd count).
LATENCIES = {("openai", "gpt-4o-mini"): [400.0, 100.0, 300.0, 200.0], ("mock", "mock/echo"): [30.0, 10.0, 20.0]}


def run_row(n: int, provider: str | None, model: str, latency: float | None, **extra: Any) -> dict[str, Any]:
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


def log_rows() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    runs, n = [], 0
    for (provider, model), latencies in LATENCIES.items():
        for latency in latencies:
            n += 1
            runs.append(run_row(n, provider, model, latency, session_id="sess-1" if provider == "mock" else None))
    n += 1
    runs.append(
        run_row(
            n, "azure", "azure/gpt-4o", 5000.0, status_code=502, error="upstream 502 Bad Gateway",
            response=None, total_tokens=None, prompt_tokens=None, completion_tokens=None,
            cost_usd=None, attempts=3, cache=None,
        )
    )
    n += 1
    runs.append(
        run_row(
            n, "openai", "gpt-4o-mini", 50.0, stream=1, ttft_ms=12.0, session_id="sess-1",
            prompt="user: tell me about zeppelins", response="Zeppelins are rigid airships.",
        )
    )
    n += 1
    runs.append(  # bad input: no provider, nothing sent upstream, no latency recorded
        run_row(
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


def write_log(path: Path, runs: list[dict[str, Any]], attempts: list[dict[str, Any]] | None = None) -> Path:
    """A migrated log at `path` holding these rows (from a test's event loop: in a thread)."""

    async def build() -> None:
        store = Store(str(path))
        await store.migrate()
        await store.write(runs, attempts or [])
        await store.dispose()

    asyncio.run(build())
    return path


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    """A migrated log with a few realistic rows, written the way the proxy writes them."""
    return write_log(tmp_path / "x.db", *log_rows())


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


CANNED = {
    "latency_percentiles", "error_breakdown", "cost_per_day", "cache_savings", "slowest_calls",
    "latest_errors", "calls_by_model", "studies", "study_answers", "search", "session", "conversation",
    "cut_answers",
}
#: The queries that take the time window and the model filter.
WINDOWED = {
    "latency_percentiles", "error_breakdown", "cost_per_day", "cache_savings", "slowest_calls",
    "latest_errors", "calls_by_model", "cut_answers",
}

DAY1, DAY2 = "2026-11-01", "2026-11-02"


def analysis_rows() -> list[dict[str, Any]]:
    """Day 1: openai gpt-4o-mini, 2 misses, a hit and a dedup at $0.001 each (the last two saved).
    Day 2: azure, a miss at $0.002 and a 502; mock without a price. Study "s1": 2 items x 2 models."""
    rows = [
        run_row(1, "openai", "openai/gpt-4o-mini", 100.0, created_at=f"{DAY1}T08:00:00.000Z", cost_usd=0.001),
        run_row(2, "openai", "openai/gpt-4o-mini", 300.0, created_at=f"{DAY1}T09:00:00.000Z", cost_usd=0.001),
        run_row(3, "openai", "openai/gpt-4o-mini", 1.0, created_at=f"{DAY1}T10:00:00.000Z", cost_usd=0.001, cache="hit"),
        run_row(4, "openai", "openai/gpt-4o-mini", 200.0, created_at=f"{DAY1}T10:00:00.100Z", cost_usd=0.001, cache="dedup"),
        run_row(5, "azure", "azure/gpt-4o-mini", 800.0, created_at=f"{DAY2}T08:00:00.000Z", cost_usd=0.002),
        run_row(
            6, "azure", "azure/gpt-4o-mini", 4000.0, created_at=f"{DAY2}T09:00:00.000Z", cost_usd=None,
            status_code=502, error="upstream 502 Bad Gateway", response=None, cache=None, attempts=3,
        ),
        run_row(7, "mock", "mock/echo", 2.0, created_at=f"{DAY2}T10:00:00.000Z", cost_usd=None, cache=None),
    ]
    n = 7
    for item, country in enumerate(["France", "Peru"]):
        for model, answer in (("mock/echo", f"echo {country}"), ("openai/gpt-4o-mini", f"Capital of {country}!")):
            n += 1
            rows.append(run_row(
                n, model.split("/")[0], model, 50.0 + n, created_at=f"{DAY2}T11:00:{n:02d}.000Z",
                prompt=f"user: capital of {country}?", response=answer, session_id="s1", tags='["s1"]',
                metadata=json.dumps({"study": "s1", "run": "r1", "item": item, "repeat": 0}), cost_usd=None,
            ))
    return rows


@pytest.fixture
async def ads(tmp_path: Path) -> AsyncIterator[Any]:
    path = await asyncio.to_thread(write_log, tmp_path / "analysis.db", analysis_rows())
    ds = create_datasette(path)
    await ds.invoke_startup()
    yield ds
    ds.get_database(DATABASE_NAME).close()
