"""Scenario f: `POST /v1/responses` through our proxy, natively and translated to chat/completions.

Three parts, each with a fresh proxy (and log), each measured in interleaved rounds of the
same four legs: `direct` (the fake upstream's `/v1/responses`), `ours` (our proxy's
`/v1/responses`), `chat` (the same proxy's `/v1/chat/completions`, so that what is the
Responses path's own shows apart from what every call costs) and `translated` (our proxy's
`/v1/responses` to a provider declared `responses = false`: the call goes upstream as
chat/completions and its answer comes back as a response object).

1. sequential non-streaming calls: latency p50 and p99, added to direct;
2. streams of `STREAM_CHUNKS` tokens `STREAM_GAP_MS` apart: time to the first token event
   (`response.output_text.delta`, or chat's first content chunk), gaps, whole stream;
3. wrk at 32 connections, 0 ms upstream: req/s, p99 and our proxy's CPU time per answer.

The translated legs need the translation code (`servers.TRANSLATION`); without it they are
left out and the results say so. The fake upstream counts what it served per endpoint, so
the results show that translated calls did reach it as chat/completions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from measure import STREAM_KEYS, Measured, sequential, streaming, wrk_rounds
from procs import log
from servers import TRANSLATION, OurProxy
from targets import CHAT, RESPONSES, STREAM_CHUNKS, STREAM_GAP_MS, Leg, direct_target

if TYPE_CHECKING:
    from run import Bench

SKIPPED = "translation path skipped: not in this tree"
CONNS = 32
LABEL = {"direct": "direct", "chat": "ours, chat", "ours": "ours", "translated": "ours, translated"}
#: Per-round differences between legs (leg, base, heading), beside each leg's difference to direct.
DIFFERENCES = (("ours", "chat", "Responses − chat"), ("translated", "ours", "translated − native"))
#: The targets: added p50 and added time to first token (ms), Responses ÷ chat req/s.
ADDED_P50_LIMIT, ADDED_TTFT_LIMIT, RPS_RATIO_LIMIT = 0.3, 0.5, 0.85


def run(bench: Bench) -> None:
    """Measure the three parts and put them in `bench.results["f"]`."""
    plan = bench.plan
    if not bench.want("ours"):
        log("scenario f: skipped (it measures our proxy: --targets must include ours)")
        return
    log(f"scenario f: the Responses API, {'with' if TRANSLATION else 'without'} the translation path")
    if not TRANSLATION:
        log(f"  {SKIPPED}")
    out: dict[str, Any] = {"translation": "measured" if TRANSLATION else SKIPPED}

    ours = _start(bench, "f-sequential")
    m = sequential(_legs(bench, ours, "lat0", "chatonly"), plan.seq_rounds, plan.seq_block, bench.settle)
    m.add_added("direct", ("p50", "p99"))
    _differences(m, ("p50", "p99"))
    out["sequential"] = {"rounds": plan.seq_rounds, "block": plan.seq_block, "targets": m.targets,
                         "ours_rows": bench.finish_ours(ours, m.completed_ours)}
    for name, v in m.targets.items():
        added = f", added p50 {v['added_p50_ms']:.3f} / p99 {v['added_p99_ms']:.3f} ms" if "added_p50_ms" in v else ""
        added += "".join(f", {h} p50 {v[f'minus_{b}_p50_ms']:.3f} ms" for n, b, h in DIFFERENCES if n == name and f"minus_{b}_p50_ms" in v)
        log(f"  {LABEL[name]:17} p50 {v['p50_ms']:.3f} ms, p99 {v['p99_ms']:.3f} ms{added}")

    ours = _start(bench, "f-streaming")
    m = streaming(_legs(bench, ours, "stream", "chatonly-stream"), plan.stream_rounds, plan.stream_block,
                  bench.settle, STREAM_CHUNKS)
    m.add_added("direct", STREAM_KEYS)
    _differences(m, STREAM_KEYS)
    out["streaming"] = {"chunks": STREAM_CHUNKS, "gap_ms": STREAM_GAP_MS, "rounds": plan.stream_rounds,
                        "block": plan.stream_block, "targets": m.targets,
                        "ours_rows": bench.finish_ours(ours, m.completed_ours)}
    for name, v in m.targets.items():
        added = f", added TTFT {v['added_ttft_p50_ms']:.3f} ms" if "added_ttft_p50_ms" in v else ""
        added += "".join(f", {h} {v[f'minus_{b}_ttft_p50_ms']:.3f} ms" for n, b, h in DIFFERENCES
                         if n == name and f"minus_{b}_ttft_p50_ms" in v)
        log(f"  {LABEL[name]:17} TTFT p50 {v['ttft_p50_ms']:.3f} ms, whole stream p50 {v['total_p50_ms']:.1f} ms{added}")

    ours = _start(bench, "f-throughput")
    m = wrk_rounds(_legs(bench, ours, "lat0", "chatonly"), CONNS, plan.reps, plan.warmup, bench.settle, lambda leg: plan.duration,
                   pid_of=lambda leg: ours.pid if leg.on_ours else None)
    through = {"conns": CONNS, "reps": plan.reps, "duration_s": plan.duration, "targets": m.targets}
    for name in ("ours", "translated"):
        if name in m.rounds:
            through[f"{name}_over_chat"] = m.ratio(name, "chat")
            through[f"{name}_cpu_over_chat"] = m.ratio(name, "chat", "cpu_us_per_request")
    through["ours_rows"] = bench.finish_ours(ours, m.completed_ours)
    out["throughput"] = through
    for name, v in m.targets.items():
        cpu = f", {v['cpu_us_per_request']:.0f} µs CPU per request" if "cpu_us_per_request" in v else ""
        ratio = (f", ÷ chat {through[name + '_over_chat']:.2f} (CPU {through[name + '_cpu_over_chat']:.2f})"
                 if name + "_over_chat" in through else "")
        log(f"  {LABEL[name]:17} {v['rps']:,.0f} req/s, p99 {v['p99_ms']:.2f} ms, errors {v['errors']}{cpu}{ratio}")
    bench.results["f"] = out


def _start(bench: Bench, label: str) -> OurProxy:
    ours = bench.start_ours(label)
    assert ours is not None  # run() returned early without ours
    return ours


def _legs(bench: Bench, ours: OurProxy, native: str, translated: str) -> list[Leg]:
    """The four legs, at upstream kind `native` (the chat-only provider's kind for `translated`)."""
    found = [Leg("direct", direct_target(bench.upstream.port), native, RESPONSES)] if bench.want("direct") else []
    found += [Leg("chat", ours.target, native, CHAT), Leg("ours", ours.target, native, RESPONSES)]
    if TRANSLATION:
        found.append(Leg("translated", ours.target, translated, RESPONSES))
    return found


def _differences(m: Measured, keys: tuple[str, ...]) -> None:
    """`minus_<base>_<key>_ms` on the legs of DIFFERENCES: Responses − chat, translated − native."""
    for name, base, _ in DIFFERENCES:
        if name in m.rounds and base in m.rounds:
            for key in keys:
                m.targets[name][f"minus_{base}_{key}_ms"] = m.added(name, base, key)


# -- the report --------------------------------------------------------------------------------


def target_rows(f: dict[str, Any]) -> list[tuple[str, str, float | None, str, bool | None]]:
    """(what, goal, value, unit, ok) for the Targets table."""
    rows: list[tuple[str, str, float | None, str, bool | None]] = []
    seq = f.get("sequential", {}).get("targets", {}).get("ours", {})
    if "added_p50_ms" in seq:
        rows.append(("f. Responses, added latency p50", f"≤ {ADDED_P50_LIMIT} ms", seq["added_p50_ms"], "ms",
                     seq["added_p50_ms"] <= ADDED_P50_LIMIT))
    stream = f.get("streaming", {}).get("targets", {}).get("ours", {})
    if "added_ttft_p50_ms" in stream:
        rows.append(("f. Responses stream, time to first event added (p50)", f"≤ {ADDED_TTFT_LIMIT} ms",
                     stream["added_ttft_p50_ms"], "ms", stream["added_ttft_p50_ms"] <= ADDED_TTFT_LIMIT))
    ratio = f.get("throughput", {}).get("ours_over_chat")
    if ratio is not None:
        rows.append(("f. Responses ÷ chat/completions req/s, 32 connections", f"≥ {RPS_RATIO_LIMIT}", ratio, "",
                     ratio >= RPS_RATIO_LIMIT))
    return rows


def accounts(f: dict[str, Any]) -> list[dict[str, Any]]:
    """The row accounts of the parts that ran."""
    return [part["ours_rows"] for part in (f.get(k) for k in ("sequential", "streaming", "throughput"))
            if part and part.get("ours_rows")]


def markdown(f: dict[str, Any], fmt: Any, rows_line: Any) -> list[str]:
    """The scenario's section of results.md; `fmt` and `rows_line` are report_format.py's formatters."""
    out = ["### f. The Responses API (`POST /v1/responses`) through our proxy", ""]
    legs = ("direct: the fake upstream's `/v1/responses`; ours: our proxy's `/v1/responses`; ours, chat: the same "
            "proxy's `/v1/chat/completions`, the same upstream answering chat; ")
    legs += ("ours, translated: our proxy's `/v1/responses` to a provider declared `responses = false` (the fake "
             "upstream answering chat/completions)." if f["translation"] == "measured" else f"**{f['translation']}.**")
    out += [legs, ""]
    seq = f.get("sequential")
    if seq:
        out += _table(
            f"Sequential non-streaming calls ({seq['rounds']} rounds × {seq['block']} requests per leg, interleaved; medians)",
            seq["targets"], (("p50", "latency p50, ms"), ("p99", "latency p99, ms")),
            (("req/s (one connection)", lambda v: fmt(v["rps"], 0)), ("non-200 answers", lambda v: str(v["non_200"]))), fmt,
        )
        out += ["", _account(seq.get("ours_rows"), rows_line), ""]
    st = f.get("streaming")
    if st:
        out += _table(
            f"Streams of {st['chunks']} tokens {st['gap_ms']} ms apart ({st['rounds']} rounds × {st['block']} "
            "streams per leg, interleaved; medians; first token: the first `response.output_text.delta`, "
            "or chat's first content chunk)",
            st["targets"], (("ttft_p50", "time to first token p50, ms"), ("ttft_p99", "time to first token p99, ms"),
                            ("gap_p50", "gap between tokens p50, ms"), ("gap_p99", "gap between tokens p99, ms"),
                            ("total_p50", "whole stream p50, ms")),
            (("incomplete or failed streams", lambda v: str(v["incomplete_streams"])),), fmt,
        )
        out += ["", _account(st.get("ours_rows"), rows_line), ""]
    th = f.get("throughput")
    if th:
        out += [f"Throughput, wrk -c{th['conns']}, 0 ms upstream ({th['reps']} rounds × {th['duration_s']:g} s per leg, "
                "interleaved; medians; ÷ chat is the median of the per-round ratios; CPU is our proxy process's "
                "user + system time per answer, its log written)", "",
                "| | req/s | p50 ms | p99 ms | errors | proxy CPU µs / request | req/s ÷ chat | CPU ÷ chat |",
                "|---|---|---|---|---|---|---|---|"]
        for name, v in th["targets"].items():
            ratios = [th.get(f"{name}_over_chat"), th.get(f"{name}_cpu_over_chat")]
            out.append(f"| {LABEL[name]} | {fmt(v['rps'], 0)} | {fmt(v['p50_ms'])} | {fmt(v['p99_ms'])} | {v['errors']} | "
                       f"{fmt(v.get('cpu_us_per_request'), 0)} | "
                       + " | ".join(f"**{fmt(x)}**" if x is not None else "" for x in ratios) + " |")
        out += ["", _account(th.get("ours_rows"), rows_line), ""]
    return out


def _account(acc: dict[str, Any] | None, rows_line: Any) -> str:
    """report_format.py's rows line, and which upstream endpoints our proxy's calls reached."""
    if not acc:
        return ""
    calls = ", ".join(f"{endpoint} {n:,}" for endpoint, n in sorted(acc.get("upstream_by_endpoint", {}).items()))
    return rows_line(acc) + (f" Upstream calls by endpoint: {calls}." if calls else "")


def _table(title: str, targets: dict[str, Any], keys: tuple[tuple[str, str], ...],
           plain: tuple[tuple[str, Any], ...], fmt: Any) -> list[str]:
    """Legs side by side, then each leg − direct, then the DIFFERENCES (ours − chat, translated − ours).

    `keys` are timed values (with their differences); `plain` rows are counts, one cell per leg.
    """
    names = list(targets)
    columns = [(n, "added", f"{LABEL[n]} − direct") for n in names if any(k.startswith("added_") for k in targets[n])]
    columns += [(n, f"minus_{b}", heading) for n, b, heading in DIFFERENCES
                if any(k.startswith(f"minus_{b}_") for k in targets.get(n, {}))]
    lines = [title, "", "| | " + " | ".join(LABEL[n] for n in names) + "".join(f" | {c[2]}" for c in columns) + " |",
             "|---" * (1 + len(names) + len(columns)) + "|"]
    for key, label in keys:
        row = f"| {label} | " + " | ".join(fmt(targets[n][f"{key}_ms"], 3) for n in names)
        lines.append(row + "".join(f" | **{fmt(targets[n].get(f'{prefix}_{key}_ms'), 3)}**" for n, prefix, _ in columns) + " |")
    for label, cell in plain:
        lines.append(f"| {label} | " + " | ".join(cell(targets[n]) for n in names) + " |" * (len(columns) + 1))
    return lines
