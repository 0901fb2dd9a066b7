"""The targets table: each goal of the bench (bench/README.md) against what the run measured, PASS or FAIL."""

from __future__ import annotations

import math
from typing import Any

import scenario_responses
from report_format import check, f, n


def targets_table(r: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """The table's markdown lines, and its rows (what, goal, measured, ok) for whoever wants them."""
    rows: list[dict[str, Any]] = []

    def add(what: str, goal: str, measured: str, ok: bool | None) -> None:
        rows.append({"what": what, "goal": goal, "measured": measured, "ok": ok})

    a = r.get("a", {}).get("targets", {}).get("ours", {})
    if "added_p50_ms" in a:
        add("a. added latency p50", "≤ 1 ms", f(a["added_p50_ms"], 3) + " ms", a["added_p50_ms"] <= 1)
        add("a. added latency p99", "≤ 5 ms", f(a["added_p99_ms"], 3) + " ms", a["added_p99_ms"] <= 5)
    cells = r.get("b", {}).get("cells", [])
    c32 = next((c for c in cells if c["latency_ms"] == 0 and c["conns"] == 32), None)
    if c32 and "ours" in c32["targets"]:
        o = c32["targets"]["ours"]
        add("b. req/s, 32 connections, 0 ms upstream", "≥ 4,000", n(o["rps"]), o["rps"] >= 4000)
        add("b. p99, 32 connections, 0 ms upstream", "≤ 25 ms", f(o["p99_ms"]) + " ms", o["p99_ms"] <= 25)
    ratios = [c for c in cells if "ours_over_litellm" in c]
    if ratios:
        worst = min(ratios, key=lambda c: c["ours_over_litellm"])
        below = [f"{c['latency_ms']} ms c={c['conns']}" for c in ratios if c["ours_over_litellm"] < 25]
        add("b. ours ÷ LiteLLM req/s, every row", "≥ 25×",
            f"lowest {f(worst['ours_over_litellm'], 1)}× ({worst['latency_ms']} ms, c={worst['conns']})"
            + (f"; below 25×: {', '.join(below)}" if below else ""), not below)
        reachable = [c for c in ratios if c.get("direct_over_litellm", math.inf) >= 25]
        if len(reachable) < len(ratios):
            low = [f"{c['latency_ms']} ms c={c['conns']}" for c in reachable if c["ours_over_litellm"] < 25]
            add("b. … in the rows where 25× is possible at all (direct ÷ LiteLLM ≥ 25×)", "≥ 25×",
                f"{len(reachable)} rows" + (f"; below 25×: {', '.join(low)}" if low else ", all at or above"),
                not low if reachable else None)
    ours_cells = [c for c in cells if "ours" in c["targets"]]
    if ours_cells:
        errors = sum(c["targets"]["ours"]["errors"] for c in ours_cells)
        add("b. errors through ours, all rows", "0", n(errors), errors == 0)
    c = r.get("c", {}).get("targets", {}).get("ours", {})
    if "added_ttft_p50_ms" in c:
        add("c. time to first token added (p50)", "≤ 1 ms", f(c["added_ttft_p50_ms"], 3) + " ms", c["added_ttft_p50_ms"] <= 1)
    d = r.get("d", {})
    if "alone" in d and d["alone"]["runs"]:
        add("d. recorder rows/s into SQLite", "≥ 20,000", n(d["alone"]["rows_per_s"]), d["alone"]["rows_per_s"] >= 20000)
    if "datasette" in d and d["datasette"]["runs"]:
        add("d. … with Datasette reading the file", "≥ 20,000", n(d["datasette"]["rows_per_s"]), d["datasette"]["rows_per_s"] >= 20000)
    e = r.get("e")
    if e and "growth_percent" in e:  # ours ran in e (the references' growth is in the e section, not a target)
        g = e["growth_percent"]
        add(f"e. RSS growth {e['mark_requests']:,} → {e['requests']:,} requests", "< 10 %", f(g, 1) + " %", g < 10 if not math.isnan(g) else None)
    for what, goal, value, unit, ok in scenario_responses.target_rows(r.get("f", {})):
        add(what, goal, f(value, 3 if unit else 2) + (f" {unit}" if unit else ""), ok)
    lost = 0
    seen = False
    for key in ("a", "c", "e"):
        acc = (r.get(key) or {}).get("ours_rows")
        if acc:
            seen = True
            lost += acc["rows_lost"]
    for cell in cells:
        if cell.get("ours_rows"):
            seen = True
            lost += cell["ours_rows"]["rows_lost"]
    if "d" in r:
        for mode in ("alone", "datasette"):
            if mode in d:
                seen = True
                lost += d[mode]["lost"]
    for acc in scenario_responses.accounts(r.get("f", {})):
        seen = True
        lost += acc["rows_lost"]
    if seen:
        add("rows lost (rows in the log vs answers received), all scenarios", "0", n(lost), lost == 0)
    lines = ["| target | goal | measured | |", "|---|---|---|---|"]
    lines += [f"| {x['what']} | {x['goal']} | {x['measured']} | {check(x['ok'])} |" for x in rows]
    return lines, rows
