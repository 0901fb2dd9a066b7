"""What the numbers of the comparison mean, as SQL both databases run, and their percentiles.

* an error is a row with an `error` or a status of 400 or more (a stream that broke after
  its 200 counts as an error);
* latency and TTFT percentiles are over successful calls that an upstream answered for that
  request: errors are left out (a 429 in 5 ms is no latency of the model), and so are cache
  hits and de-duplicated followers (`cache` 'hit' or 'dedup'), which measure the cache;
* `cost_usd` is what was spent; a cache hit or dedup row holds what the call would have
  cost, so those rows go to `saved_cost_usd` instead. `priced_calls` counts the rows with a
  known price (`cost_usd` is NULL for a model without one), so a cost can be read as
  "over N of M calls".

Counts, sums, error and cache shares are SQL aggregates, so only one row per group leaves
the database. Percentiles interpolate linearly between ranks: `quantiles` here takes them
in pandas for SQLite, which has no percentile function, and PostgreSQL's `percentile_cont`
does the same in the database (`analytics.databases`).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

FAILED = "(r.error IS NOT NULL OR coalesce(r.status_code, 0) >= 400)"
SAVED = "r.cache IN ('hit', 'dedup')"
#: The rows whose timings describe a model: successful, and answered upstream for this request.
ANSWERED = f"(r.error IS NULL AND coalesce(r.status_code, 0) < 400 AND NOT coalesce({SAVED}, false))"

#: The comparison's counts and sums, for one group of rows.
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

#: What `summary` adds to the aggregates: the span of the log and how much of each kind.
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

#: The comparison's columns after its group keys, in the order the report prints them.
COMPARISON_COLUMNS = [
    "calls", "errors", "error_rate", *PERCENTILE_COLUMNS, "prompt_tokens", "completion_tokens", "total_tokens",
    "cost_usd", "priced_calls", "saved_cost_usd", "cache_hits", "dedup", "cache_share",
]


def with_rates(frame: pd.DataFrame) -> pd.DataFrame:
    """error_rate and cache_share from the counts (0 calls: NaN, not a division error)."""
    calls = frame["calls"].where(frame["calls"] > 0)
    frame["error_rate"] = frame["errors"] / calls
    frame["cache_share"] = (frame["cache_hits"] + frame["dedup"]) / calls
    return frame


def quantiles(timings: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
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

