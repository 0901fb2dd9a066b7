"""results.md: how the run was made, the targets table, then one section per scenario that ran."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import scenario_responses
from report_format import f, n, rows_line
from report_goals import targets_table
from targets import LABEL, REFERENCES, TARGET_NAMES


def markdown(r: dict[str, Any]) -> str:
    """The whole results text, from a run's results (or the results.json of one)."""
    m = r.get("machine", {})
    plan = r.get("plan", {})
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
    for ref in REFERENCES:
        desc = r.get(ref)
        if not desc:
            continue
        if "skipped" in desc:
            w(f"**{LABEL[ref]} was skipped:** {desc['skipped']}")
        else:  # results.json files from before Portkey have no "settings": LiteLLM's were these
            settings = desc.get("settings", "no database, cache or callbacks, its default settings otherwise (one worker, uvicorn)")
            w(f"{LABEL[ref]} {desc['version']}: `{desc['command']}`, environment {desc['environment']}; {desc['config']}; "
              f"{settings}. Up in {desc['startup_s']} s; idle CPU while the others ran: {desc['idle_cpu_percent']} %.")
        w("")
    w("Ours: `python -m proxy serve --no-ui --log-level warning --db <fresh SQLite file> --config <providers>`, full logging, "
      "one process, a fresh database per scenario (per cell in b). Neither LiteLLM nor Portkey keeps a log of the calls here.")
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
        w(f"### a. Sequential non-streaming calls ({a['rounds']} rounds × {a['block']} requests per target, interleaved; median of round values)")
        w("")
        out += side_by_side(
            a["targets"], "added_p50_ms",
            (("p50", "p50 latency, ms"), ("p99", "p99 latency, ms")),
            (("req/s (one connection)", lambda v: n(v["rps"])), ("non-200 answers", lambda v: n(v["non_200"]))),
        )
        w("")
        w(rows_line(a.get("ours_rows")))
        w("")

    b = r.get("b")
    if b:
        w(f"### b. Concurrency sweep, non-streaming ({b['reps']} rounds × ≥ {b['duration_s']:g} s per target and cell, interleaved; medians)")
        w("")
        cells = b["cells"]
        names = [x for x in TARGET_NAMES if any(x in c["targets"] for c in cells)]
        refs = [x for x in REFERENCES if x in names] or ["litellm"]
        w("| upstream | conns | " + " | ".join(f"{LABEL[x]} req/s" for x in names) + " | ours/direct | "
          + " | ".join(f"ours÷{LABEL[x]} | ceiling: direct÷{LABEL[x]}" for x in refs) + " | p50 ms " + "/".join(LABEL[x] for x in names)
          + " | p99 ms " + "/".join(LABEL[x] for x in names) + " | errors " + "/".join(LABEL[x] for x in names) + " | rows lost |")
        w("|---" * (2 + len(names) + 5 + 2 * len(refs)) + "|")

        def times(key: str, cell: dict[str, Any], bold: bool = False) -> str:
            mark = "**" if bold else ""
            return f"{mark}{f(cell.get(key), 1)}{'×' if key in cell else ''}{mark}"

        for c in cells:
            tg = c["targets"]
            row = f"| {c['latency_ms']} ms | {c['conns']} | " + " | ".join(n(tg[x]["rps"]) if x in tg else "–" for x in names)
            row += f" | {f(c.get('ours_over_direct'))}"
            row += "".join(f" | {times(f'ours_over_{x}', c, bold=True)} | {times(f'direct_over_{x}', c)}" for x in refs)
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
          "ours/direct, ours÷LiteLLM, direct÷LiteLLM (and the same for Portkey) are the medians of the per-round ratios; "
          "direct÷LiteLLM is the most any proxy could reach against LiteLLM in that row (with a 50 ms upstream and few connections, the upstream "
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
        w(f"### c. Streaming, {c['chunks']} chunks {c['gap_ms']} ms apart ({c['rounds']} rounds × {c['block']} streams per target, interleaved; medians)")
        w("")
        out += side_by_side(
            c["targets"], "added_ttft_p50_ms",
            (("ttft_p50", "time to first token p50, ms"), ("ttft_p99", "time to first token p99, ms"),
             ("gap_p50", "gap between chunks p50, ms"), ("gap_p99", "gap between chunks p99, ms")),
            (("whole stream p50, ms", lambda v: f(v["total_p50_ms"], 1)),
             ("content chunks received (median)", lambda v: n(v["content_chunks_median"])),
             ("incomplete or failed streams", lambda v: n(v["incomplete_streams"]))),
        )
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
        out += memory_section(e)
    if r.get("f"):
        out += scenario_responses.markdown(r["f"], f, rows_line)
    w("![req/s, latency and memory](bench.png)")
    return "\n".join(out) + "\n"


def memory_section(e: dict[str, Any]) -> list[str]:
    """Scenario e: a row of RSS per proxy measured (ours first, when it ran), then a line on each one's growth."""
    runs = ([("ours", e)] if "samples" in e else []) + list(e.get("references", {}).items())
    if not runs:
        return []
    first = runs[0][1]
    step = max(1, len(first["samples"]) // 10)
    lines = [f"### e. Memory: RSS over {first['requests']:,} requests (32 connections, 0 ms upstream)", "",
             "| requests | " + " | ".join(f"{s['requests']:,}" for s in first["samples"][::step]) + " |",
             "|---" * (1 + len(first["samples"][::step])) + "|"]
    for name, run in runs:
        lines.append(f"| RSS of {LABEL[name]}, MiB | "
                     + " | ".join(f(s["rss_kib"] / 1024 if s["rss_kib"] else None, 1) for s in run["samples"][::step]) + " |")
    lines.append("")
    for name, run in runs:
        mark, end = run["rss_mark_kib"], run["rss_end_kib"]
        lines.append(f"{LABEL[name]}: RSS {f(mark / 1024 if mark else None, 1)} MiB at {run['mark_requests']:,} requests, "
                     f"{f(end / 1024 if end else None, 1)} MiB at {run['requests']:,}: **{f(run['growth_percent'], 1)} %**; "
                     f"{n(run['rps'])} req/s over the run, {run['errors']} errors.")
        lines.append("")
    if "samples" in e:
        lines += [rows_line(e.get("ours_rows")), ""]
    return lines


def side_by_side(
    targets: dict[str, Any],
    added_key: str,
    timed: tuple[tuple[str, str], ...],
    plain: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...],
) -> list[str]:
    """A table of the targets side by side, then what each adds to direct (where `added_key` was
    measured): `timed` rows (key, label) in ms with their added values, `plain` rows (label, cell) without."""
    names = [x for x in TARGET_NAMES if x in targets]
    extra = [x for x in names if x != "direct" and added_key in targets[x]]
    lines = ["| | " + " | ".join(LABEL[x] for x in names) + "".join(f" | {LABEL[x]} − direct" for x in extra) + " |",
             "|---" * (1 + len(names) + len(extra)) + "|"]
    for key, label in timed:
        row = f"| {label} | " + " | ".join(f(targets[x][f"{key}_ms"], 3) for x in names)
        lines.append(row + "".join(f" | **{f(targets[x][f'added_{key}_ms'], 3)}**" for x in extra) + " |")
    for label, cell in plain:
        lines.append(f"| {label} | " + " | ".join(cell(targets[x]) for x in names) + " |" * (len(extra) + 1))
    return lines
