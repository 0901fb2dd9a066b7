"""Rows of the DataFrames `analytics.study` answers, checked by key: the one row with these
key values, and its columns compared with NaN/NA as None and floats to a micro-unit."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import pytest


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
