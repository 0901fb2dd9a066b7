"""A study's rows read back from the log, and the comparison printed at the end of a run.

The log is the source of truth for `--resume`: a call is done when the log has a row of the
study with status 200, no error, and the same (item, input_hash, model, repeat). At the end
of a run the comparison comes from `analytics.study` over the whole study in the log, or,
when that is not at hand, from the small table here (over this run's calls when the log
cannot be read).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from .plan import Key

if TYPE_CHECKING:
    from .study_run import Outcome


async def read_study_rows(database: str, name: str) -> list[dict[str, Any]]:
    """The log's rows of study `name` (tagged with it and carrying it in `metadata.study`),
    with `metadata` parsed. An absent SQLite file or a log without tables has none."""
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    from proxy.store.engine import async_database_url, sqlite_path

    path = sqlite_path(database)
    if path is not None and not path.exists():
        return []
    # A plain engine, not the proxy's: reads need no BEGIN IMMEDIATE (which takes the write lock).
    engine = create_async_engine(async_database_url(database), hide_parameters=True)
    try:
        async with engine.connect() as conn:
            if not await conn.run_sync(lambda c: sa.inspect(c).has_table("inference_runs")):
                return []
            result = await conn.execute(
                sa.text(
                    "SELECT id, request_id, created_at, model, provider, status_code, error, latency_ms, "
                    "prompt_tokens, completion_tokens, total_tokens, cost_usd, cache, tags, metadata "
                    "FROM inference_runs WHERE tags LIKE :pattern ORDER BY id"
                ),
                {"pattern": f"%{json.dumps(name)}%"},  # a pre-filter; the exact test is below
            )
            raw = [dict(row._mapping) for row in result]
    finally:
        await engine.dispose()
    rows = []
    for row in raw:
        tags, metadata = _json_or_none(row["tags"]), _json_or_none(row["metadata"])
        if isinstance(tags, list) and name in tags and isinstance(metadata, dict) and metadata.get("study") == name:
            row["metadata"] = metadata
            rows.append(row)
    return rows


def _json_or_none(text: str | None) -> Any:
    try:
        return json.loads(text) if text else None
    except json.JSONDecodeError:
        return None


def succeeded(row: dict[str, Any]) -> bool:
    """A row that counts as done: a 200 without an error (a stream that broke has one)."""
    return row.get("status_code") == 200 and not row.get("error")


def finished_keys(rows: Iterable[dict[str, Any]]) -> set[Key]:
    """(item, input_hash, model, repeat) of every successful row."""
    keys = set()
    for row in rows:
        metadata = row["metadata"]
        if succeeded(row) and isinstance(metadata.get("item"), int) and isinstance(metadata.get("repeat"), int):
            keys.add((metadata["item"], str(metadata.get("input_hash")), row["model"], metadata["repeat"]))
    return keys


def summary_table(rows: Sequence[dict[str, Any]], models: Sequence[str]) -> str:
    """Per model: calls, ok, failed, p50/p95 latency of the successful ones, tokens, cost.
    `rows` are log rows or `Result`s turned into dicts (then without tokens or cost)."""
    order = list(dict.fromkeys([*models, *(r["model"] for r in rows)]))
    header = ("model", "calls", "ok", "failed", "p50 ms", "p95 ms", "tokens", "cost $")
    lines = [header]
    for model in order:
        mine = [r for r in rows if r["model"] == model]
        if not mine:
            continue
        good = [r for r in mine if succeeded(r)]
        latencies = sorted(r["latency_ms"] for r in good if r.get("latency_ms") is not None)
        tokens = [r.get("total_tokens") for r in good if r.get("total_tokens") is not None]
        costs = [r.get("cost_usd") for r in good if r.get("cost_usd") is not None]
        lines.append((
            model,
            str(len(mine)),
            str(len(good)),
            str(len(mine) - len(good)),
            _ms(_percentile(latencies, 50)),
            _ms(_percentile(latencies, 95)),
            str(sum(tokens)) if tokens else "-",
            f"{sum(costs):.6f}" if costs else "-",
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths)))
        for line in lines
    )


def _percentile(values: Sequence[float], pct: int) -> float | None:
    """Nearest-rank percentile (the value of a real call, as the SQL recipe in docs/datasette.md does)."""
    if not values:
        return None
    rank = max(1, math.ceil(pct / 100 * len(values)))
    return values[rank - 1]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def failures(rows: Sequence[dict[str, Any]], limit: int = 5) -> list[str]:
    """The most frequent errors, as `model: HTTP 500 message (×3)`."""
    counts: dict[tuple[str, Any, str], int] = {}
    for row in rows:
        if not succeeded(row):
            key = (row["model"], row.get("status_code"), (row.get("error") or "")[:160])
            counts[key] = counts.get(key, 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:limit]
    return [f"{model}: HTTP {status} {error} (×{n})" for (model, status, error), n in ranked]


def print_comparison(name: str, database: str | None, rows: list[dict[str, Any]] | None,
                     outcome: Outcome | None, models: Sequence[str], out: TextIO) -> None:
    """`analytics.study`'s provider comparison when it is there; else the runner's own table,
    over the whole study in the log (or over this run's calls when the log cannot be read)."""
    if database is not None and rows:
        table = _study_comparison(database, name)
        if table is not None:
            print(f"Comparison for study {name!r} (from the log):", file=out)
            print(table, file=out)
            _print_errors(rows, out)
            return
    if rows is not None:
        source, data = "the log, every run of the study", rows
    else:
        source = "this run; pass --db to read the whole study from the log"
        data = [
            {"model": r.call.model, "status_code": r.status_code, "error": r.error, "latency_ms": r.latency_ms}
            for r in (outcome.results if outcome else [])
        ]
    if not data:
        print(f"Study {name!r}: no calls in the log yet.", file=out)
        return
    print(f"Study {name!r} ({source}):", file=out)
    print(summary_table(data, models), file=out)
    _print_errors(data, out)


def _print_errors(rows: list[dict[str, Any]], out: TextIO) -> None:
    errors = failures(rows)
    if errors:
        print("Errors:", file=out)
        for line in errors:
            print(f"  {line}", file=out)


def _study_comparison(database: str, name: str) -> str | None:
    """`analytics.study.Study(db).provider_comparison(study=name)` as text; None when it fails
    or finds nothing, for the runner's own table to take its place."""
    from analytics.study import Study  # pandas: imported only when a run ends

    try:
        table = Study(database).provider_comparison(study=name)
    except Exception as exc:  # its failure must not hide the run's own summary
        print(f"(analytics.study could not compare the study: {type(exc).__name__}: {exc})", file=sys.stderr)
        return None
    return None if table.empty else table.to_string(index=False)
