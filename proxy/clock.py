"""The one timestamp format of the log."""

from datetime import UTC, datetime


def utc_now() -> str:
    """UTC ISO-8601 with milliseconds and a `Z`, so text order is time order."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
