"""Turn bench/run.py's results into results.json, results.md, bench.png (and bench/README.md).

    python bench/report.py [bench/results/results.json]   # redo the table and plot from saved results
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import scenario_responses  # noqa: E402

README = BENCH / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
NAMES = ("direct", "ours", "litellm")
LABEL = {"direct": "direct", "ours": "ours", "litellm": "LiteLLM"}


def f(value: Any, digits: int = 2, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    if isinstance(value, (int, float)) and abs(value) >= 1000:
        return f"{value:,.0f}{unit}"
    return f"{value:.{digits}f}{unit}"


def n(value: Any) -> str:
    return "–" if value is None else f"{value:,}" if isinstance(value, int) else f(value, 0)


def check(ok: bool | None) -> str:
    return "–" if ok is None else ("PASS" if ok else "**FAIL**")


def targets_table(r: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
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
    if e:
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


def markdown(r: dict[str, Any]) -> str:
    m = r.get("machine", {})
    plan = r.get("plan", {})
    lite = r.get("litellm", {})
    out: list[str] = []
    w = out.append
    w(f"Run {r.get('started', '?')} in {r.get('seconds', 0):.0f} s; "
      f"command: `python bench/run.py{' --quick' if plan.get('quick') else ''}`"
      + ("" if plan.get("full") else f" (partial: scenarios {','.join(plan.get('only', []))}, targets {','.join(plan.get('targets', []))})") + ".")
    w("")
    w(f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('memory', '?')} RAM, Linux {m.get('kernel', '?')}, "
      f"Python {m.get('python', '?')}, {m.get('wrk', 'wrk ?')}; load average at start {', '.join(f'{x:.2f}' for x in m.get('loadavg_at_start', []))}"
      + (f", at the end {', '.join(f'{x:.2f}' for x in m['loadavg_at_end'])}" if m.get("loadavg_at_end") else "")
      + (f"; CPU steal over the run {m['steal_percent']} %" if m.get("steal_percent") is not None else "") + ". "
      f"Pinning: {m.get('pinning', '?')}. Proxy code: {m.get('commit', '?')}.")
    w("")
    if "skipped" in lite:
        w(f"**LiteLLM was skipped:** {lite['skipped']}")
    elif lite:
        w(f"LiteLLM {lite['version']}: `{lite['command']}`, environment {lite['environment']}; {lite['config']}; "
          f"no database, cache or callbacks, its default settings otherwise (one worker, uvicorn). "
          f"Up in {lite['startup_s']} s; idle CPU while the others ran: {lite['idle_cpu_percent']} %.")
    w("")
    w("Ours: `python -m proxy serve --no-ui --log-level warning --db <fresh SQLite file> --config <providers>`, full logging, "
      "one process, a fresh database per scenario (per cell in b).")
    w("")
    for letter, trace in r.get("failed", {}).items():
        w(f"**Scenario {letter} failed:** `{trace.strip().splitlines()[-1]}` (traceback in results.json).")
        acc = r.get("failed_ours", {}).get(letter)
        if acc:
            w("")
            w(rows_line(acc))
        w("")
    w("### Targets")
    w("")
    lines, _ = targets_table(r)
    out += lines
    w("")

    cap = r.get("upstream_capacity")
    if cap:
        w("### The tools")
        w("")
        w(f"Fake upstream alone (wrk -t1 -c32 on core 0, upstream on core 1, 0 ms): **{n(cap['rps'])} req/s**, "
          f"p50 {f(cap['p50_ms'], 3)} ms, p99 {f(cap['p99_ms'], 3)} ms, errors {cap['errors']}. "
          "Neither the upstream nor wrk is the bottleneck: both run an order of magnitude above the proxies.")
        w("")

    a = r.get("a")
    if a:
        t = a["targets"]
        names = [x for x in NAMES if x in t]
        w(f"### a. Sequential non-streaming calls ({a['rounds']} rounds × {a['block']} requests per target, interleaved; median of round values)")
        w("")
        head = "| | " + " | ".join(LABEL[x] for x in names)
        extra = [x for x in names if x != "direct" and "added_p50_ms" in t[x]]
        head += "".join(f" | {LABEL[x]} − direct" for x in extra) + " |"
        w(head)
        w("|---" * (1 + len(names) + len(extra)) + "|")
        for key, label in (("p50", "p50 latency, ms"), ("p99", "p99 latency, ms")):
            row = f"| {label} | " + " | ".join(f(t[x][f"{key}_ms"], 3) for x in names)
            row += "".join(f" | **{f(t[x][f'added_{key}_ms'], 3)}**" for x in extra) + " |"
            w(row)
        w("| req/s (one connection) | " + " | ".join(n(t[x]["rps"]) for x in names) + " |" * (len(extra) + 1))
        w("| non-200 answers | " + " | ".join(n(t[x]["non_200"]) for x in names) + " |" * (len(extra) + 1))
        w("")
        w(rows_line(a.get("ours_rows")))
        w("")

    b = r.get("b")
    if b:
        w(f"### b. Concurrency sweep, non-streaming ({b['reps']} rounds × ≥ {b['duration_s']:g} s per target and cell, interleaved; medians)")
        w("")
        cells = b["cells"]
        names = [x for x in NAMES if any(x in c["targets"] for c in cells)]
        w("| upstream | conns | " + " | ".join(f"{LABEL[x]} req/s" for x in names)
          + " | ours/direct | ours÷LiteLLM | ceiling: direct÷LiteLLM | p50 ms " + "/".join(LABEL[x] for x in names)
          + " | p99 ms " + "/".join(LABEL[x] for x in names) + " | errors " + "/".join(LABEL[x] for x in names) + " | rows lost |")
        w("|---" * (2 + len(names) + 7) + "|")
        for c in cells:
            tg = c["targets"]
            row = f"| {c['latency_ms']} ms | {c['conns']} | " + " | ".join(n(tg[x]["rps"]) if x in tg else "–" for x in names)
            row += f" | {f(c.get('ours_over_direct'))} | **{f(c.get('ours_over_litellm'), 1)}{'×' if 'ours_over_litellm' in c else ''}**"
            row += f" | {f(c.get('direct_over_litellm'), 1)}{'×' if 'direct_over_litellm' in c else ''}"
            row += " | " + " / ".join(f(tg[x]["p50_ms"], 2) if x in tg else "–" for x in names)
            row += " | " + " / ".join(f(tg[x]["p99_ms"], 2) if x in tg else "–" for x in names)
            row += " | " + " / ".join(n(tg[x]["errors"]) if x in tg else "–" for x in names)
            acc = c.get("ours_rows")
            row += f" | {acc['rows_lost'] if acc else '–'} |"
            w(row)
        w("")
        w("Each wrk run lasts at least the duration above and long enough for about five rounds of every connection at the "
          "target's last measured rate (up to 15 s: LiteLLM at 128 and 256 connections), and starts only once no proxy is still "
          "busy with an earlier run (LiteLLM works through the requests wrk abandoned at the end of a run). "
          "ours/direct, ours÷LiteLLM and direct÷LiteLLM are the medians of the per-round ratios; direct÷LiteLLM is the "
          "most any proxy could reach against LiteLLM in that row (with a 50 ms upstream and few connections, the upstream "
          "sets the pace, so no proxy can be 25× LiteLLM there).  Rows lost: answers the load generator "
          "received without a row in the log, plus upstream calls without an `attempts` row (must be 0). Requests still in "
          "flight when wrk stops are logged too (as client disconnects), so the log may hold up to `conns` rows more per run.")
        issues = [(c, c["ours_rows"]) for c in cells if c.get("ours_rows") and (c["ours_rows"]["crashed"] or c["ours_rows"]["spool_left"]
                                                                                or any(k != "200" and not k.startswith("499") for k in c["ours_rows"]["by_status"]))]
        if issues:
            w("")
            w("Rows in our log that were not plain 200s, per cell:")
            for c, acc in issues:
                w(f"- {c['latency_ms']} ms, c={c['conns']}: {acc['by_status']}" + (f"; crashed: {acc['crashed']}" if acc["crashed"] else ""))
        w("")

    c = r.get("c")
    if c:
        t = c["targets"]
        names = [x for x in NAMES if x in t]
        extra = [x for x in names if x != "direct" and "added_ttft_p50_ms" in t[x]]
        w(f"### c. Streaming, {c['chunks']} chunks {c['gap_ms']} ms apart ({c['rounds']} rounds × {c['block']} streams per target, interleaved; medians)")
        w("")
        w("| | " + " | ".join(LABEL[x] for x in names) + "".join(f" | {LABEL[x]} − direct" for x in extra) + " |")
        w("|---" * (1 + len(names) + len(extra)) + "|")
        for key, label in (("ttft_p50", "time to first token p50, ms"), ("ttft_p99", "time to first token p99, ms"),
                           ("gap_p50", "gap between chunks p50, ms"), ("gap_p99", "gap between chunks p99, ms")):
            row = f"| {label} | " + " | ".join(f(t[x][f"{key}_ms"], 3) for x in names)
            row += "".join(f" | **{f(t[x][f'added_{key}_ms'], 3)}**" for x in extra) + " |"
            w(row)
        w("| whole stream p50, ms | " + " | ".join(f(t[x]["total_p50_ms"], 1) for x in names) + " |" * (len(extra) + 1))
        w("| content chunks received (median) | " + " | ".join(n(t[x]["content_chunks_median"]) for x in names) + " |" * (len(extra) + 1))
        w("| incomplete or failed streams | " + " | ".join(n(t[x]["incomplete_streams"]) for x in names) + " |" * (len(extra) + 1))
        w("")
        w(rows_line(c.get("ours_rows")))
        w("")

    d = r.get("d")
    if d:
        w(f"### d. Recorder alone ({d['rows']:,} rows per run, {d['reps']} rounds, alternating; medians)")
        w("")
        w("| | rows/s | rows lost |")
        w("|---|---|---|")
        if d.get("alone", {}).get("runs"):
            w(f"| recorder alone (core 0) | **{n(d['alone']['rows_per_s'])}** | {d['alone']['lost']} |")
        if d.get("datasette", {}).get("runs"):
            w(f"| while Datasette reads the same file (core 1) | **{n(d['datasette']['rows_per_s'])}** | {d['datasette']['lost']} |")
        if "with_reader_over_alone" in d:
            w("")
            w(f"With a reader the recorder keeps {f(d['with_reader_over_alone'] * 100, 0)} % of its rate. The reader was the real "
              f"Datasette (`study-query-llm ui` on the file) under wrk -c2 cycling count(*), a faceted table page, a GROUP BY "
              f"query and the newest rows: {n(d['reader_rps'])} req/s served, p50 {f(d['reader_p50_ms'])} ms, {d['reader_errors']} errors."
              + (" Faster with a reader: its snapshots hold back the WAL checkpoints that the writer otherwise runs "
                 "as it commits (see bench/README.md)." if d["with_reader_over_alone"] > 1.05 else ""))
        w("")

    e = r.get("e")
    if e:
        w(f"### e. Memory: RSS of our proxy over {e['requests']:,} requests (32 connections, 0 ms upstream)")
        w("")
        w("| requests | " + " | ".join(f"{s['requests']:,}" for s in e["samples"][:: max(1, len(e['samples']) // 10)]) + " |")
        w("|---" * (1 + len(e["samples"][:: max(1, len(e['samples']) // 10)])) + "|")
        w("| RSS, MiB | " + " | ".join(f(s["rss_kib"] / 1024 if s["rss_kib"] else None, 1) for s in e["samples"][:: max(1, len(e['samples']) // 10)]) + " |")
        w("")
        w(f"RSS {f(e['rss_mark_kib'] / 1024 if e['rss_mark_kib'] else None, 1)} MiB at {e['mark_requests']:,} requests, "
          f"{f(e['rss_end_kib'] / 1024 if e['rss_end_kib'] else None, 1)} MiB at {e['requests']:,}: **{f(e['growth_percent'], 1)} %**; "
          f"{n(e['rps'])} req/s over the run, {e['errors']} errors.")
        w("")
        w(rows_line(e.get("ours_rows")))
        w("")
    if r.get("f"):
        out += scenario_responses.markdown(r["f"], f, rows_line)
    w("![req/s, latency and memory](bench.png)")
    return "\n".join(out) + "\n"


def rows_line(acc: dict[str, Any] | None) -> str:
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


def plot(r: dict[str, Any], path: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return f"no plot: {exc} (pip install -r bench/requirements.txt)"
    colors = {"direct": "#888888", "ours": "#1f77b4", "litellm": "#d62728", "translated": "#9ecae1"}
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    cells = r.get("b", {}).get("cells", [])
    for ax, latency in ((axes[0][0], 0), (axes[0][1], 50)):
        sel = [c for c in cells if c["latency_ms"] == latency]
        if not sel:
            ax.set_visible(False)
            continue
        for name in NAMES:
            pts = [(c["conns"], c["targets"][name]["rps"]) for c in sel if name in c["targets"]]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=colors[name], label=LABEL[name])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks([c["conns"] for c in sel], [str(c["conns"]) for c in sel])
        ax.set_xlabel("connections")
        ax.set_ylabel("requests / s (median)")
        ax.set_title(f"b. throughput, upstream answers after {latency} ms")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    ax = axes[1][0]
    groups = []
    a = r.get("a", {}).get("targets", {})
    c = r.get("c", {}).get("targets", {})
    if a:
        groups += [("a. p50", {k: v["p50_ms"] for k, v in a.items()}), ("a. p99", {k: v["p99_ms"] for k, v in a.items()})]
    if c:
        groups += [("c. TTFT p50", {k: v["ttft_p50_ms"] for k, v in c.items()}),
                   ("c. chunk gap p99", {k: v["gap_p99_ms"] for k, v in c.items()})]
    fs = r.get("f", {}).get("sequential", {}).get("targets", {})
    ft = r.get("f", {}).get("streaming", {}).get("targets", {})
    if fs:
        groups.append(("f. p50", {k: v["p50_ms"] for k, v in fs.items()}))
    if ft:
        groups.append(("f. TTFT p50", {k: v["ttft_p50_ms"] for k, v in ft.items()}))
    if groups:
        series = [x for x in (*NAMES, "translated") if any(x in vals for _, vals in groups)]
        width = 0.8 / len(series)
        for i, name in enumerate(series):
            xs = [g for g, (_, vals) in enumerate(groups) if name in vals]
            ys = [groups[g][1][name] for g in xs]
            bars = ax.bar([x + (i - (len(series) - 1) / 2) * width for x in xs], ys, width, color=colors[name],
                          label=scenario_responses.LABEL[name] if name == "translated" else LABEL[name])
            ax.bar_label(bars, [f"{y:.2f}" for y in ys], fontsize=7)
        ax.set_xticks(range(len(groups)), [g[0].replace(" ", "\n", 1) for g in groups], fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("ms (median of rounds)")
        ax.set_title("a. sequential latency, c. streaming (50 chunks, 2 ms apart), f. Responses API", fontsize=10)
        ax.legend()
        ax.grid(True, axis="y", which="both", alpha=0.3)
    else:
        ax.set_visible(False)
    ax = axes[1][1]
    e = r.get("e")
    if e:
        s = [x for x in e["samples"] if x["rss_kib"]]
        ax.plot([x["requests"] for x in s], [x["rss_kib"] / 1024 for x in s], "o-", color=colors["ours"], label="ours")
        ax.set_ylim(bottom=0)
        ax.set_xlabel("requests")
        ax.set_ylabel("RSS, MiB")
        ax.set_title(f"e. memory of our proxy ({f(e['growth_percent'], 1)} % from {e['mark_requests']:,} to {e['requests']:,})")
        ax.grid(True, alpha=0.3)
    else:
        ax.set_visible(False)
    m = r.get("machine", {})
    fig.suptitle(f"Study Query LLM bench, {r.get('started', '')} — {m.get('cores', '?')} cores, {m.get('cpu', '')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def write(results: dict[str, Any], out: Path, update_readme: bool = False) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    text = markdown(results)
    (out / "results.md").write_text("# Benchmark results\n\n" + text)
    problem = plot(results, out / "bench.png")
    print()
    print(text)
    if problem:
        print(problem)
    print(f"results: {out / 'results.md'}, {out / 'results.json'}, {out / 'bench.png'}")
    if update_readme and README.exists():
        readme = README.read_text()
        if START in readme and END in readme:
            head, rest = readme.split(START, 1)
            _, tail = rest.split(END, 1)
            body = text.replace("](bench.png)", "](results/bench.png)")
            README.write_text(f"{head}{START}\n{body}{END}{tail}")
            print(f"updated {README}")


if __name__ == "__main__":
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else BENCH / "results" / "results.json"
    write(json.loads(source.read_text()), source.parent, update_readme=False)
