"""How one value reads in the results tables: numbers, PASS/FAIL, and the line that accounts for our log.

Shared by the tables (report_markdown.py, report_goals.py) and scenario f's section
(scenario_responses.py, which receives them as arguments).
"""

from __future__ import annotations

import math
from typing import Any


def f(value: Any, digits: int = 2, unit: str = "") -> str:
    """A number with `digits` decimals (none from 1,000 on, with thousands separators); – when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    if isinstance(value, (int, float)) and abs(value) >= 1000:
        return f"{value:,.0f}{unit}"
    return f"{value:.{digits}f}{unit}"


def n(value: Any) -> str:
    """A count with thousands separators; – when missing."""
    return "–" if value is None else f"{value:,}" if isinstance(value, int) else f(value, 0)


def check(ok: bool | None) -> str:
    """A target's verdict; – when the run did not measure it."""
    return "–" if ok is None else ("PASS" if ok else "**FAIL**")


def rows_line(acc: dict[str, Any] | None) -> str:
    """Our log counted against the answers the clients received (servers.OurProxy.stop_and_count)."""
    if not acc:
        return ""
    text = (f"Our log: {acc['rows']:,} rows for {acc['completed_by_clients']:,} answers received and "
            f"{acc['upstream_calls']:,} upstream calls ({acc['attempt_rows']:,} attempt rows): **rows lost {acc['rows_lost']}**")
    if acc.get("rows_extra"):
        text += f", {acc['rows_extra']} more rows than answers (requests abandoned by the load generator)"
    cached = {k: v for k, v in acc.get("by_cache", {}).items() if k != "None"}
    if cached:
        text += f"; rows answered from the cache or merged with an identical request: {cached}"
    other = {k: v for k, v in acc["by_status"].items() if k != "200"}
    if other:
        text += f"; rows other than 200: {other}"
    if acc.get("crashed"):
        text += f"; **the proxy crashed: {acc['crashed']}**"
    if acc.get("spool_left"):
        text += "; **rows were left in the spool file**"
    return text + "."
