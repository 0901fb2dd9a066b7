"""The log as pandas DataFrames: for notebooks, the `report` command and the study runner.

    from analytics.study import Study
    log = Study("study_query_llm.db")            # or "sqlite:///…", "postgresql://…"
    log.provider_comparison(since="24h")         # per provider and model: calls, errors, p50/p95/p99, tokens, cost
    log.time_series("1h", by="model")            # the same numbers per hour
    log.search("capital of peru")                # full-text search over prompts and answers
    log.compare_answers("capitals")              # one row per prompt of a study, one column per model
    log.load_runs(since="7d", tags="pilot")      # the rows themselves, typed

Every function also exists at module level with the database first
(`provider_comparison("study_query_llm.db", by="tag")`), for one-off calls.

Filters, the same keywords everywhere (`Filters`): `since` / `until` ("24h", "7d", "30m", a
datetime or an ISO-8601 string; naive times are UTC, like the log), `provider`, `model`
(a name or a list), `tags` (a tag or a list: rows carrying all of them) and `study` (rows
tagged with the study's name).

Why it is fast on a million rows: counts, sums, error and cache shares are SQL aggregates,
so only one row per group leaves the database, and percentiles are taken the cheapest way
each database allows (`analytics.databases`). What each number means is in
`analytics.measures`; in short, errors are rows with an `error` or a status of 400 or more,
percentiles are over successful calls that an upstream answered (no cache hits or
de-duplicated followers), and `cost_usd` is what was spent (`saved_cost_usd` what the cache
saved). With `by="tag"` a row counts once per tag it carries (so groups may add up to more
than the log), and untagged rows form the group with tag NULL.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import re
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, Literal, TypedDict, Unpack

import pandas as pd

from proxy.store.engine import async_database_url, display_url, sqlite_path

from .answers import side_by_side
from .databases import LogError, PostgresLog, SQLiteLog, group_by
from .frames import ALL_COLUMNS, DEFAULT_COLUMNS, json_cell, typed
from .measures import AGGREGATES, COMPARISON_COLUMNS, PERCENTILE_COLUMNS, SUMMARY_EXTRAS, with_rates
from .timespec import Since, log_time, parse_duration, parse_time

By = Literal["provider_model", "provider", "model", "tag"]


class Filters(TypedDict, total=False):
    """The row filters every function takes as keywords."""

    since: Since
    until: Since
    provider: str | Sequence[str]
    model: str | Sequence[str]
    tags: str | Sequence[str]
    study: str


#: `by=` → the group columns: (name in the result, SQL expression).
GROUPS: dict[str, list[tuple[str, str]]] = {
    "provider_model": [("provider", "r.provider"), ("model", "r.model")],
    "provider": [("provider", "r.provider")],
    "model": [("model", "r.model")],
    "tag": [("tag", "t.value")],
}


class Study:
    """One log (a SQLite file, `sqlite:///…` or `postgresql://…`) and the questions asked of it.

    Opening checks that the log is there and readable (`LogError` otherwise), so a typo fails
    at once rather than at the first query. Use it as a context manager or call `close()`.
    """

    def __init__(self, db: str | os.PathLike[str]) -> None:
        self.url = str(db)
        path = sqlite_path(self.url)
        self.display = str(path) if path is not None else display_url(self.url)
        if path is None and async_database_url(self.url).startswith("sqlite"):
            raise LogError("an in-memory SQLite database holds no log: give a file")
        self._log: SQLiteLog | PostgresLog = SQLiteLog(path) if path is not None else PostgresLog(self.url)
        try:
            self._log.frame("SELECT r.id FROM inference_runs r LIMIT 1")
        except Exception as exc:  # sqlite3, asyncpg and SQLAlchemy each have their own errors
            self._log.close()
            raise LogError(f"cannot read the log {self.display}: {exc}") from exc

    def __repr__(self) -> str:
        return f"Study({self.display!r})"

    def __enter__(self) -> Study:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._log.close()

    @property
    def dialect(self) -> str:
        return self._log.dialect

    def load_runs(self, *, limit: int | None = None, columns: Sequence[str] = DEFAULT_COLUMNS,
                  **filters: Unpack[Filters]) -> pd.DataFrame:
        """The rows themselves, in time order, typed: `created_at` as UTC datetimes, counts as
        nullable integers, `stream` as bool, provider/model/endpoint/cache as categories, `tags`
        as lists and `metadata` as dicts (empty when NULL). `limit` keeps the most recent rows.
        The raw JSON bodies and headers are left out unless named in `columns`."""
        unknown = set(columns) - set(ALL_COLUMNS)
        if unknown:
            raise ValueError(f"not columns of inference_runs: {sorted(unknown)}")
        columns = ["id", *(c for c in columns if c != "id")]  # the order of the rows, and their key
        where, params = self._where(**filters)
        sql = f"SELECT {', '.join(f'r.{_quote(c)}' for c in columns)} FROM inference_runs r WHERE {where}"
        if limit is not None:
            sql = f"SELECT * FROM ({sql} ORDER BY r.id DESC LIMIT :limit) AS newest"
            params["limit"] = int(limit)
        frame = typed(self._log.frame(f"{sql} ORDER BY id", params), categories=True)
        if "tags" in frame:
            frame["tags"] = [json_cell(t, []) for t in frame["tags"].tolist()]
        if "metadata" in frame:
            frame["metadata"] = [json_cell(m, {}) for m in frame["metadata"].tolist()]
        return frame

    def provider_comparison(self, by: By = "provider_model", **filters: Unpack[Filters]) -> pd.DataFrame:
        """One row per provider and model (or per provider, model or tag), busiest first:
        calls, errors, error_rate, p50/p95/p99 latency, p50/p95 TTFT, tokens, cost_usd and
        priced_calls, saved_cost_usd, cache_hits, dedup and cache_share (see the module's notes)."""
        if by not in GROUPS:
            raise ValueError(f"by must be one of {', '.join(GROUPS)}, not {by!r}")
        frame = self._grouped(GROUPS[by], filters)
        names = [name for name, _ in GROUPS[by]]
        return frame.sort_values(["calls", *names], ascending=[False, *[True] * len(names)], na_position="last",
                                 ignore_index=True)

    def time_series(self, freq: str | timedelta = "1h", by: By | None = "provider", **filters: Unpack[Filters]) -> pd.DataFrame:
        """The comparison's numbers per time bucket (and per group of `by`; None for the whole
        log), in time order: a tidy frame with a `bucket` column of UTC datetimes. Buckets have
        a fixed width ("15m", "1h", "1d", …) counted from the Unix epoch, so days start at
        midnight UTC; buckets without calls are absent. For a chart:
        `ts.pivot(index="bucket", columns="provider", values="calls")`."""
        step = int(parse_duration(freq).total_seconds())
        if step < 1:
            raise ValueError(f"a bucket must be at least one second wide, not {freq!r}")
        if by is not None and by not in GROUPS:
            raise ValueError(f"by must be one of {', '.join(GROUPS)} or None, not {by!r}")
        keys = [("bucket", f"({self._log.epoch()} / {step}) * {step}"), *(GROUPS[by] if by else [])]
        frame = self._grouped(keys, filters)
        return frame.sort_values([name for name, _ in keys], na_position="last", ignore_index=True)

    def summary(self, **filters: Unpack[Filters]) -> pd.Series:
        """The whole log (or the filtered rows) in one Series: the comparison's numbers plus the
        first and last call, how many providers, models, sessions and users, and streams."""
        frame = self._grouped([], filters, extra=SUMMARY_EXTRAS)
        return frame.iloc[0].rename("summary")

    def search(self, text: str, limit: int = 50, raw: bool = False, **filters: Unpack[Filters]) -> pd.DataFrame:
        """Rows whose prompt or answer match `text`, best first, with `[marked]` snippets.

        By default the words are matched literally (all of them, in any order, as in the
        Datasette UI); `raw=True` passes FTS5 syntax through on SQLite (`"count to" OR french`,
        `prompt: paris`, `capit*`) and web-search syntax on PostgreSQL."""
        if not text.strip():
            raise ValueError("search for what? the text is empty")
        where, params = self._where(**filters)
        return typed(self._log.search(text, raw, where, params, int(limit)))

    def compare_answers(self, study: str, prompt: int | str | None = None,
                        repeats: Literal["first", "all"] = "first") -> pd.DataFrame:
        """One row per prompt of a study, one column per model with its answer, then one
        `"<model> latency_ms"` column per model: the answers side by side.

        The study's rows are those tagged with its name; their `metadata.item` (set by the
        study runner) says which prompt they answer; rows tagged by hand, without an item,
        are grouped by their prompt text. Only successful calls count. `repeats="first"` shows
        the lowest repeat that succeeded and its latency; `"all"` joins every successful
        repeat's answer (`---` between them) and gives their median latency. `prompt` keeps
        one item (its index) or the prompts containing a text (case-insensitive)."""
        where, params = self._where(study=study)
        rows = self._log.frame(
            f"SELECT r.id, r.model, r.prompt, r.response, r.latency_ms, r.metadata FROM inference_runs r "
            f"WHERE {where} AND r.error IS NULL AND coalesce(r.status_code, 0) < 400 ORDER BY r.id",
            params,
        )
        return side_by_side(rows, prompt, repeats)

    # -- internals -------------------------------------------------------------------------

    def _where(self, since: Since | None = None, until: Since | None = None, provider: str | Sequence[str] | None = None,
               model: str | Sequence[str] | None = None, tags: str | Sequence[str] | None = None,
               study: str | None = None) -> tuple[str, dict[str, Any]]:
        """The filters as one SQL condition on `r` and its parameters."""
        clauses, params = ["1 = 1"], {}
        for name, moment, operator in (("since", since, ">="), ("until", until, "<")):
            if moment is not None:
                clauses.append(f"r.created_at {operator} :{name}")
                params[name] = log_time(parse_time(moment))
        for column, values in (("provider", provider), ("model", model)):
            if values is not None:
                names = _names(values)
                clauses.append(f"r.{column} IN ({', '.join(f':{column}{i}' for i in range(len(names)))})")
                params |= {f"{column}{i}": name for i, name in enumerate(names)}
        wanted = [*(_names(tags) if tags is not None else []), *([study] if study is not None else [])]
        for i, tag in enumerate(wanted):
            clauses.append(
                f"(r.tags LIKE :tag{i}_like ESCAPE '!' AND EXISTS (SELECT 1 FROM {self._log.tag_rows} WHERE t.value = :tag{i}))"
            )
            params |= {f"tag{i}": tag, f"tag{i}_like": _like(tag)}
        return " AND ".join(clauses), params

    def _grouped(self, keys: Sequence[tuple[str, str]], filters: Filters, extra: str = "") -> pd.DataFrame:
        """The aggregates (SQL) joined to the percentiles (per database) for one grouping."""
        where, params = self._where(**filters)
        source = "inference_runs r"
        if any(expr.startswith("t.") for _, expr in keys):  # grouped by tag: one row per (row, tag)
            source += f" LEFT JOIN {self._log.lateral}{self._log.tag_rows} ON true"
        selected = ", ".join([*(f"{expr} AS {name}" for name, expr in keys), AGGREGATES, *([extra] if extra else [])])
        totals = self._log.frame(f"SELECT {selected} FROM {source} WHERE {where}{group_by(keys)}", params)
        timings = self._log.percentiles(keys, source, where, params)
        names = [name for name, _ in keys]
        if names:
            for frame in (totals, timings):  # one dtype per key on both sides, whatever each side inferred
                frame[names] = frame[names].astype(object)
            frame = totals.merge(timings, on=names, how="left")
        else:
            frame = pd.concat([totals, timings.reindex(range(len(totals)))], axis=1)
        frame = with_rates(typed(frame))
        frame[PERCENTILE_COLUMNS] = frame[PERCENTILE_COLUMNS].round(3)  # the log's own precision: no interpolation noise
        extras = [c for c in frame.columns if c not in names and c not in COMPARISON_COLUMNS]
        return frame[[*names, *COMPARISON_COLUMNS, *extras]]


def _quote(column: str) -> str:
    return f'"{column}"'


def _like(tag: str) -> str:
    """A LIKE pattern for a tag as it appears in the JSON array text: a cheap pre-filter
    before the exact test with the JSON functions (`!` escapes LIKE's wildcards)."""
    quoted = json.dumps(tag, ensure_ascii=False)
    return "%" + re.sub(r"([!%_])", r"!\1", quoted) + "%"


def _names(value: str | Sequence[str]) -> list[str]:
    names = [value] if isinstance(value, str) else list(value)
    if not names:
        raise ValueError("an empty list filters out every row: give at least one name")
    return names


# --------------------------------------------------------------------------------------
# The same functions with the database first, for one-off calls from a notebook
# --------------------------------------------------------------------------------------


def _module_function(method: Callable[..., Any]) -> Callable[..., Any]:
    """`method` of `Study` as a function whose first argument is the database (a path, a URL,
    or an open `Study`, which is then reused and left open)."""

    @functools.wraps(method)
    def function(db: str | os.PathLike[str] | Study, /, *args: Any, **kwargs: Any) -> Any:
        if isinstance(db, Study):
            return method(db, *args, **kwargs)
        with Study(db) as study:
            return method(study, *args, **kwargs)

    signature = inspect.signature(method)
    first = inspect.Parameter("db", inspect.Parameter.POSITIONAL_ONLY, annotation="str | os.PathLike[str] | Study")
    function.__signature__ = signature.replace(parameters=[first, *list(signature.parameters.values())[1:]])  # type: ignore[attr-defined]
    return function


load_runs = _module_function(Study.load_runs)
provider_comparison = _module_function(Study.provider_comparison)
time_series = _module_function(Study.time_series)
summary = _module_function(Study.summary)
search = _module_function(Study.search)
compare_answers = _module_function(Study.compare_answers)

__all__ = [
    "Study", "Filters", "LogError", "load_runs", "provider_comparison", "time_series", "summary", "search",
    "compare_answers", "parse_duration", "parse_time", "log_time",
]
