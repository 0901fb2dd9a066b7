"""The one timestamp format of the log."""

import time

_second: tuple[int, str] = (0, "")


def utc_now() -> str:
    """UTC ISO-8601 with milliseconds and a `Z`, so text order is time order.

    The formatted second is reused until the clock moves on: strftime on every call
    was a visible share of each request's own CPU time.
    """
    global _second
    now = time.time()
    whole = int(now)
    if whole != _second[0]:
        _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{_second[1]}.{int((now - whole) * 1000):03d}Z"
