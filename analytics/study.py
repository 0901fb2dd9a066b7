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
so only one row per group leaves the database. SQLite has no percentile function: its
percentiles come from reading just the group keys and the two timings of the successful
calls and letting pandas take the quantiles (1.6 s on a million rows, where window functions
ranking the same rows in SQL took 4 s); PostgreSQL computes them itself (`percentile_cont`).
Percentiles interpolate linearly between ranks, on both, as pandas and numpy do by default.

Definitions the numbers follow:

* an error is a row with an `error` or a status of 400 or more (a stream that broke after
  its 200 counts as an error);
* latency and TTFT percentiles are over successful calls that an upstream answered for that
  request: errors are left out (a 429 in 5 ms is no latency of the model), and so are cache
  hits and de-duplicated followers (`cache` 'hit' or 'dedup'), which measure the cache;
* `cost_usd` is what was spent; a cache hit or dedup row holds what the call would have
  cost, so those rows go to `saved_cost_usd` instead. `priced_calls` counts the rows with a
  known price (`cost_usd` is NULL for a model without one), so a cost can be read as
  "over N of M calls";
* with `by="tag"` a row counts once per tag it carries (so groups may add up to more than
  the log), and untagged rows form the group with tag NULL.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import os
import re
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, TypedDict, Unpack
from urllib.parse import quote

import orjson
import pandas as pd

from proxy.store.engine import async_database_url, display_url, sqlite_path
from proxy.store.schema import inference_runs

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


class LogError(Exception):
    """The log cannot be read: no such file, not a log, or the database does not answer."""


# --------------------------------------------------------------------------------------
# SQL shared by both databases
# --------------------------------------------------------------------------------------

FAILED = "(r.error IS NOT NULL OR coalesce(r.status_code, 0) >= 400)"
SAVED = "r.cache IN ('hit', 'dedup')"
#: The rows whose timings describe a model: successful, and answered upstream for this request.
ANSWERED = f"(r.error IS NULL AND coalesce(r.status_code, 0) < 400 AND NOT coalesce({SAVED}, false))"

AGGREGATES = f"""count(*) AS calls,
    coalesce(sum(CASE WHEN {FAILED} THEN 1 ELSE 0 END), 0) AS errors,
    sum(r.prompt_tokens) AS prompt_tokens,
    sum(r.completion_tokens) AS completion_tokens,
    sum(r.total_tokens) AS total_tokens,
    sum(CASE WHEN {SAVED} THEN NULL ELSE r.cost_usd END) AS cost_usd,
    count(r.cost_usd) AS priced_calls,
    sum(CASE WHEN {SAVED} THEN r.cost_usd END) AS saved_cost_usd,
    coalesce(sum(CASE WHEN r.cache = 'hit' THEN 1 ELSE 0 END), 0) AS cache_hits,
    coalesce(sum(CASE WHEN r.cache = 'dedup' THEN 1 ELSE 0 END), 0) AS dedup"""

SUMMARY_EXTRAS = """min(r.created_at) AS first_call,
    max(r.created_at) AS last_call,
    count(DISTINCT r.provider) AS providers,
    count(DISTINCT r.model) AS models,
    count(DISTINCT r.session_id) AS sessions,
    count(DISTINCT r."user") AS users,
    coalesce(sum(r.stream), 0) AS streams"""

#: (timing column, percentiles) reported for it.
PERCENTILES: tuple[tuple[str, tuple[int, ...]], ...] = (("latency_ms", (50, 95, 99)), ("ttft_ms", (50, 95)))
PERCENTILE_COLUMNS = [f"p{p}_{column}" for column, ps in PERCENTILES for p in ps]

COMPARISON_COLUMNS = [
    "calls", "errors", "error_rate", *PERCENTILE_COLUMNS, "prompt_tokens", "completion_tokens", "total_tokens",
    "cost_usd", "priced_calls", "saved_cost_usd", "cache_hits", "dedup", "cache_share",
]

#: What `load_runs` returns unless asked: every column but the raw bodies and headers, which
#: are large and rarely analysed (ask for them with `columns=`).
ALL_COLUMNS = tuple(inference_runs.c.keys())
DEFAULT_COLUMNS = tuple(c for c in ALL_COLUMNS if c not in ("request_json", "response_json", "request_headers"))

_INT = {"id", "calls", "errors", "priced_calls", "cache_hits", "dedup", "providers", "models", "sessions", "users", "streams"}
_NULLABLE_INT = {"status_code", "prompt_tokens", "completion_tokens", "total_tokens", "attempts"}
_FLOAT = {"latency_ms", "ttft_ms", "cost_usd", "saved_cost_usd", *PERCENTILE_COLUMNS}
_TIME = {"created_at", "first_call", "last_call"}
_CATEGORY = {"endpoint", "provider", "model", "upstream_model", "cache"}


def _typed(frame: pd.DataFrame, categories: bool = False) -> pd.DataFrame:
    """Give the log's columns their dtypes: UTC datetimes, nullable integers where SQL may say
    NULL, floats, booleans, and (for `load_runs`) categories for the few-valued text columns."""
    for column in frame.columns:
        if column in _TIME:
            frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
        elif column in _INT:
            frame[column] = frame[column].fillna(0).astype("int64")
        elif column in _NULLABLE_INT:
            frame[column] = frame[column].astype("Int64")
        elif column in _FLOAT:
            frame[column] = frame[column].astype("float64")
        elif column == "stream":
            frame[column] = frame[column].fillna(0).astype(bool)
        elif column == "bucket":
            frame[column] = pd.to_datetime(frame[column], unit="s", utc=True)
        elif categories and column in _CATEGORY:
            frame[column] = frame[column].astype("category")
    return frame


def _with_rates(frame: pd.DataFrame) -> pd.DataFrame:
    """error_rate and cache_share from the counts (0 calls: NaN, not a division error)."""
    calls = frame["calls"].where(frame["calls"] > 0)
    frame["error_rate"] = frame["errors"] / calls
    frame["cache_share"] = (frame["cache_hits"] + frame["dedup"]) / calls
    return frame


def _quantiles(timings: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """The `PERCENTILE_COLUMNS` of the timing columns of `timings`, per group of `keys` (NULL
    keys are a group too); with no keys, one row over everything."""
    if timings.empty:
        return pd.DataFrame(columns=[*keys, *PERCENTILE_COLUMNS])
    values = timings[[column for column, _ in PERCENTILES]].astype("float64")
    qs = sorted({p / 100 for _, ps in PERCENTILES for p in ps})
    if keys:
        table = values.groupby([timings[k] for k in keys], dropna=False).quantile(qs).unstack(level=-1)
    else:
        table = values.quantile(qs).unstack().to_frame().T
    table.columns = [f"p{round(q * 100)}_{column}" for column, q in table.columns]
    table = table[PERCENTILE_COLUMNS]
    return table.reset_index() if keys else table.reset_index(drop=True)


# --------------------------------------------------------------------------------------
# The two databases
# --------------------------------------------------------------------------------------


class _SQLiteLog:
    """A SQLite log, opened read-only (a mistyped path must not create an empty database,
    and an analysis must never take the proxy's write lock)."""

    dialect = "sqlite"
    tag_rows = "json_each(r.tags) AS t"  # a row's tags as rows with a `value` column
    lateral = ""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise LogError(f"no log at {path}")
        uri = f"file:{quote(str(path.resolve()))}?mode=ro"
        self.connection = sqlite3.connect(uri, uri=True, timeout=5, isolation_level=None)

    def frame(self, sql: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        cursor = self.connection.execute(sql, dict(params or {}))
        try:
            columns = [d[0] for d in cursor.description]
            return pd.DataFrame.from_records(cursor.fetchall(), columns=columns)
        finally:
            cursor.close()

    def epoch(self) -> str:
        return "CAST(strftime('%s', r.created_at) AS INTEGER)"

    def percentiles(self, keys: Sequence[tuple[str, str]], source: str, where: str, params: Mapping[str, Any]) -> pd.DataFrame:
        """Only the keys and timings of the successful calls leave SQLite; pandas ranks them."""
        selected = ", ".join([*(f"{expr} AS {name}" for name, expr in keys), "r.latency_ms", "r.ttft_ms"])
        timings = self.frame(f"SELECT {selected} FROM {source} WHERE {where} AND {ANSWERED}", params)
        return _quantiles(timings, [name for name, _ in keys])

    def search(self, text: str, raw: bool, where: str, params: dict[str, Any], limit: int) -> pd.DataFrame:
        """FTS5 over prompt and response, best matches first (bm25), with marked snippets."""
        params = {**params, "query": text if raw else _fts_literal(text), "limit": limit}
        return self.frame(
            f"""SELECT r.id, r.created_at, r.provider, r.model, r.status_code, r.latency_ms,
                   snippet(inference_runs_fts, 0, '[', ']', '…', 12) AS prompt_snippet,
                   snippet(inference_runs_fts, 1, '[', ']', '…', 12) AS response_snippet,
                   r.prompt, r.response
                FROM inference_runs_fts JOIN inference_runs r ON r.id = inference_runs_fts.rowid
                WHERE inference_runs_fts MATCH :query AND {where}
                ORDER BY rank LIMIT :limit""",
            params,
        )

    def close(self) -> None:
        self.connection.close()


class _PostgresLog:
    """A PostgreSQL log, read through the proxy's own driver (asyncpg).

    asyncpg is async-only: each query runs `asyncio.run` on a worker thread, which works
    the same from a script and from a notebook (whose event loop is already running), and
    needs no second PostgreSQL driver. One connection per query, none kept open.
    """

    dialect = "postgresql"
    tag_rows = "json_array_elements_text(CAST(r.tags AS json)) AS t(value)"
    lateral = "LATERAL "

    def __init__(self, url: str) -> None:
        self.url = async_database_url(url)

    def frame(self, sql: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        with ThreadPoolExecutor(max_workers=1) as worker:
            return worker.submit(asyncio.run, self._frame(sql, dict(params or {}))).result()

    async def _frame(self, sql: str, params: dict[str, Any]) -> pd.DataFrame:
        from sqlalchemy import text
        from sqlalchemy.ext.asyncio import create_async_engine
        from sqlalchemy.pool import NullPool

        engine = create_async_engine(self.url, poolclass=NullPool, hide_parameters=True, connect_args={"timeout": 10})
        try:
            async with engine.connect() as conn:
                result = await conn.execute(text(sql), params)
                return pd.DataFrame.from_records(result.fetchall(), columns=list(result.keys()))
        finally:
            await engine.dispose()

    def epoch(self) -> str:
        return "CAST(extract(epoch FROM CAST(r.created_at AS timestamptz)) AS bigint)"

    def percentiles(self, keys: Sequence[tuple[str, str]], source: str, where: str, params: Mapping[str, Any]) -> pd.DataFrame:
        """`percentile_cont` (linear interpolation, NULLs ignored) in the database."""
        columns = [
            f"percentile_cont({p / 100}) WITHIN GROUP (ORDER BY r.{column}) AS p{p}_{column}"
            for column, ps in PERCENTILES
            for p in ps
        ]
        selected = ", ".join([*(f"{expr} AS {name}" for name, expr in keys), *columns])
        return self.frame(f"SELECT {selected} FROM {source} WHERE {where} AND {ANSWERED}{_group_by(keys)}", params)

    def search(self, text: str, raw: bool, where: str, params: dict[str, Any], limit: int) -> pd.DataFrame:
        """No index on PostgreSQL: text search over the rows at query time, ranked by ts_rank."""
        document = "to_tsvector('simple', coalesce(r.prompt, '') || ' ' || coalesce(r.response, ''))"
        query = "websearch_to_tsquery" if raw else "plainto_tsquery"
        mark = "'StartSel=[, StopSel=], MaxWords=24, MinWords=8'"
        return self.frame(
            f"""SELECT r.id, r.created_at, r.provider, r.model, r.status_code, r.latency_ms,
                   ts_headline('simple', coalesce(r.prompt, ''), q, {mark}) AS prompt_snippet,
                   ts_headline('simple', coalesce(r.response, ''), q, {mark}) AS response_snippet,
                   r.prompt, r.response
                FROM inference_runs r CROSS JOIN {query}('simple', :query) AS q
                WHERE {document} @@ q AND {where}
                ORDER BY ts_rank({document}, q) DESC, r.id LIMIT :limit""",
            {**params, "query": text, "limit": limit},
        )

    def close(self) -> None:
        pass


def _fts_literal(text: str) -> str:
    """Each word as an FTS5 string, so punctuation ("gpt-4o", "C++") is searched, not parsed."""
    return " ".join('"' + word.replace('"', '""') + '"' for word in text.split())


def _group_by(keys: Sequence[tuple[str, str]]) -> str:
    return f" GROUP BY {', '.join(str(i + 1) for i in range(len(keys)))}" if keys else ""


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
# The API
# --------------------------------------------------------------------------------------

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
        self._log: _SQLiteLog | _PostgresLog = _SQLiteLog(path) if path is not None else _PostgresLog(self.url)
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
        frame = _typed(self._log.frame(f"{sql} ORDER BY id", params), categories=True)
        if "tags" in frame:
            frame["tags"] = [_json(t, []) for t in frame["tags"].tolist()]
        if "metadata" in frame:
            frame["metadata"] = [_json(m, {}) for m in frame["metadata"].tolist()]
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
        return _typed(self._log.search(text, raw, where, params, int(limit)))

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
        return _side_by_side(_study_items(rows), prompt, repeats)

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
        totals = self._log.frame(f"SELECT {selected} FROM {source} WHERE {where}{_group_by(keys)}", params)
        timings = self._log.percentiles(keys, source, where, params)
        names = [name for name, _ in keys]
        if names:
            for frame in (totals, timings):  # one dtype per key on both sides, whatever each side inferred
                frame[names] = frame[names].astype(object)
            frame = totals.merge(timings, on=names, how="left")
        else:
            frame = pd.concat([totals, timings.reindex(range(len(totals)))], axis=1)
        frame = _with_rates(_typed(frame))
        frame[PERCENTILE_COLUMNS] = frame[PERCENTILE_COLUMNS].round(3)  # the log's own precision: no interpolation noise
        extras = [c for c in frame.columns if c not in names and c not in COMPARISON_COLUMNS]
        return frame[[*names, *COMPARISON_COLUMNS, *extras]]


def _quote(column: str) -> str:
    return f'"{column}"'


def _json(text: Any, empty: Any) -> Any:
    """A JSON column's value parsed; `empty` for NULL (which pandas may have made NaN)."""
    return orjson.loads(text) if isinstance(text, str) and text else empty


def _study_items(rows: pd.DataFrame) -> pd.DataFrame:
    """A study's rows with `item`, `repeat` (from `metadata`) and the key of the prompt they answer."""
    metadata = [_json(m, {}) for m in rows["metadata"].tolist()]
    item = [m.get("item") if isinstance(m.get("item"), int) else None for m in metadata]
    rows = rows.assign(
        item=pd.array(item, dtype="Int64"),
        repeat=[m.get("repeat") if isinstance(m.get("repeat"), int) else 0 for m in metadata],
        key=[f"item {i}" if i is not None else f"prompt {p}" for i, p in zip(item, rows["prompt"], strict=True)],
        latency_ms=rows["latency_ms"].astype("float64"),
    )
    return rows.sort_values(["item", "repeat", "id"], na_position="last", ignore_index=True)


def _side_by_side(rows: pd.DataFrame, prompt: int | str | None, repeats: str) -> pd.DataFrame:
    """The wide frame of `compare_answers` from the study's rows."""
    if isinstance(prompt, int):
        rows = rows[(rows["item"] == prompt).fillna(False)]
    elif isinstance(prompt, str):
        rows = rows[rows["prompt"].fillna("").str.contains(prompt, case=False, regex=False)]
    if rows.empty:
        return pd.DataFrame(columns=["item", "prompt"])
    if repeats == "first":
        picked = rows.drop_duplicates(["key", "model"])[["key", "model", "response", "latency_ms"]]
    elif repeats == "all":
        picked = rows.groupby(["key", "model"], sort=False).agg(
            response=("response", lambda answers: "\n\n---\n\n".join(a for a in answers if a is not None)),
            latency_ms=("latency_ms", "median"),
        ).reset_index()
    else:
        raise ValueError(f"repeats must be 'first' or 'all', not {repeats!r}")
    keys = rows["key"].unique()
    models = rows.sort_values("id")["model"].unique()
    answers = picked.pivot(index="key", columns="model", values="response").reindex(index=keys, columns=models)
    latency = picked.pivot(index="key", columns="model", values="latency_ms").reindex(index=keys, columns=models)
    latency.columns = [f"{model} latency_ms" for model in models]
    first = rows.drop_duplicates("key").set_index("key")[["item", "prompt"]].reindex(keys)
    wide = pd.concat([first, answers, latency], axis=1).reset_index(drop=True)
    wide.columns.name = None
    return wide


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
