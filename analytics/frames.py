"""The log's columns as pandas dtypes, the same whatever the database and however many rows.

SQL hands back times as text, counts that may be NULL as floats or objects, and JSON as
text; an empty result carries no dtypes at all. `typed` gives each known column its dtype,
so a notebook can count on `created_at` being UTC datetimes and `calls` an integer.
"""

from __future__ import annotations

from typing import Any

import orjson
import pandas as pd

from proxy.store.schema import inference_runs

from .measures import PERCENTILE_COLUMNS

#: What `load_runs` returns unless asked: every column but the raw bodies and headers, which
#: are large and rarely analysed (ask for them with `columns=`).
ALL_COLUMNS = tuple(inference_runs.c.keys())
DEFAULT_COLUMNS = tuple(c for c in ALL_COLUMNS if c not in ("request_json", "response_json", "request_headers"))

_INT = {"id", "calls", "errors", "priced_calls", "cache_hits", "dedup", "providers", "models", "sessions", "users", "streams"}
_NULLABLE_INT = {"status_code", "prompt_tokens", "completion_tokens", "total_tokens", "attempts"}
_FLOAT = {"latency_ms", "ttft_ms", "cost_usd", "saved_cost_usd", *PERCENTILE_COLUMNS}
_TIME = {"created_at", "first_call", "last_call"}
_CATEGORY = {"endpoint", "provider", "model", "upstream_model", "cache"}


def typed(frame: pd.DataFrame, categories: bool = False) -> pd.DataFrame:
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


def json_cell(text: Any, empty: Any) -> Any:
    """A JSON column's value parsed; `empty` for NULL (which pandas may have made NaN)."""
    return orjson.loads(text) if isinstance(text, str) and text else empty

