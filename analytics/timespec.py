"""Times and durations as people type them ("24h", "7d", an ISO date), without pandas.

The report command parses its arguments with these before it loads the study layer.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

#: "24h", a timedelta, a datetime or an ISO string.
Since = str | timedelta | datetime


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: str | timedelta) -> timedelta:
    """`"30s"`, `"15m"` / `"15min"`, `"1h"`, `"7d"`, `"2w"` (or a timedelta) → a positive timedelta."""
    if isinstance(value, timedelta):
        duration = value
    else:
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(f"not a duration: {value!r} (examples: 30m, 24h, 7d)")
        duration = timedelta(seconds=float(match[1]) * _UNIT_SECONDS[match[2].lower()])
    if duration <= timedelta(0):
        raise ValueError(f"a duration must be positive: {value!r}")
    return duration


def parse_time(value: Since, now: datetime | None = None) -> datetime:
    """A moment in UTC from "24h" (that long before `now`), a timedelta, a datetime or an ISO string."""
    if isinstance(value, str) and _DURATION.match(value) or isinstance(value, timedelta):
        return (now or datetime.now(timezone.utc)) - parse_duration(value)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"not a time: {value!r} (examples: 24h, 7d, 2026-11-24, 2026-11-24T08:00Z)") from None
    if value.tzinfo is None:  # the log is in UTC, so a naive time is read as UTC too
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def log_time(moment: datetime) -> str:
    """A moment written as `created_at` is (`2026-11-24T14:22:47.243Z`), so text order is time order."""
    utc = moment.astimezone(timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


