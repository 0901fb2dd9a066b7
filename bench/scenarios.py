"""Scenarios a–e of bench/run.py, and the tools' own capacity; each puts its part in `bench.results`.

Each function takes the harness (`run.Bench`): it starts a fresh proxy of ours per
measurement (`bench.start_ours`), measures the targets the plan names in interleaved rounds
(bench/measure.py), and counts our log against the answers (`bench.finish_ours`). Scenario f
lives in bench/scenario_responses.py.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from measure import WrkBackground, med, rotate, sequential, streaming, wrk, wrk_rounds
from procs import LOAD_CPU, PROXY_CPU, PY, Process, clean_env, free_port, log, pinned, rss_kib, wait_http
from targets import LABEL, REFERENCES, STREAM_CHUNKS, STREAM_GAP_MS, Target, direct_target, legs

if TYPE_CHECKING:
    from run import Bench

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WRK_DATASETTE = BENCH / "wrk" / "datasette.lua"


def capacity(bench: Bench) -> None:
    """The fake upstream's and wrk's own throughput: wrk on core 0, upstream on core 1."""
    d = direct_target(bench.upstream.port)
    wrk(d.url("lat0"), d.body("lat0"), 32, 1, cpu=PROXY_CPU)  # warm-up
    runs = [wrk(d.url("lat0"), d.body("lat0"), 32, 2, cpu=PROXY_CPU) for _ in range(1 if bench.plan.quick else 3)]
    run = sorted(runs, key=lambda x: x["rps"])[len(runs) // 2]
    log(f"fake upstream alone, 32 connections, wrk on the other core: {run['rps']:,.0f} req/s, p99 {run['p99_ms']:.2f} ms")
    bench.results["upstream_capacity"] = run | {"runs": len(runs), "note": "wrk -t1 -c32 pinned to core 0, fake upstream to core 1, 0 ms latency; median run"}


def sequential_calls(bench: Bench) -> None:
    """a. Sequential non-streaming calls, one connection: latency p50/p99, and what each proxy adds to direct."""
    plan = bench.plan
    log(f"scenario a: sequential, {plan.seq_rounds} rounds x {plan.seq_block} requests per target, interleaved")
    ours = bench.start_ours("a")
    m = sequential(legs(bench.targets(ours), "lat0"), plan.seq_rounds, plan.seq_block, bench.settle)
    m.add_added("direct", ("p50", "p99"))
    out: dict[str, Any] = {"rounds": plan.seq_rounds, "block": plan.seq_block, "targets": m.targets}
    out["ours_rows"] = bench.finish_ours(ours, m.completed_ours)
    bench.results["a"] = out
    for name, v in out["targets"].items():
        added = f", added p50 {v['added_p50_ms']:.3f} / p99 {v['added_p99_ms']:.3f} ms" if "added_p50_ms" in v else ""
        log(f"  {LABEL[name]:8} p50 {v['p50_ms']:.3f} ms, p99 {v['p99_ms']:.3f} ms{added}")


def concurrency_sweep(bench: Bench) -> None:
    """b. wrk at each connection count and upstream latency: req/s, latency, errors, and the ratios between targets."""
    plan = bench.plan
    log(f"scenario b: concurrency {plan.concurrency} x upstream {plan.latencies} ms, "
        f"{plan.reps} rounds x {plan.duration:g}s per target, interleaved")
    cells = []
    for latency in plan.latencies:
        kind = "lat0" if latency == 0 else "lat50"
        if latency not in (0, 50):
            raise SystemExit("scenario b supports upstream latencies 0 and 50 ms (the proxies are configured for those)")
        for conns in plan.concurrency:
            ours = bench.start_ours(f"b-{latency}ms-c{conns}")
            m = wrk_rounds(legs(bench.targets(ours), kind), conns, plan.reps, plan.warmup, bench.settle,
                           lambda leg, c=conns: bench.duration_for(leg.name, c), bench.note_rate)
            cell: dict[str, Any] = {"latency_ms": latency, "conns": conns, "targets": m.targets}
            pairs = [("ours", "direct"), *((x, ref) for ref in REFERENCES for x in ("ours", "direct"))]
            for name, base in pairs:  # direct÷LiteLLM, direct÷Portkey: the best any proxy could do against it
                if name in m.rounds and base in m.rounds:
                    cell[f"{name}_over_{base}"] = m.ratio(name, base)
            cell["ours_rows"] = bench.finish_ours(ours, m.completed_ours)
            cells.append(cell)
            parts = [f"{LABEL[n]} {v['rps']:,.0f} req/s p99 {v['p99_ms']:.1f} ms err {v['errors']}" for n, v in cell["targets"].items()]
            ratio = "".join(f" | ours÷{LABEL[ref]} {cell[f'ours_over_{ref}']:.1f}x" for ref in REFERENCES if f"ours_over_{ref}" in cell)
            lost = f" | rows lost {cell['ours_rows']['rows_lost']}" if cell.get("ours_rows") else ""
            log(f"  {latency:>2} ms c={conns:<3} " + " | ".join(parts) + ratio + lost)
    bench.results["b"] = {"reps": plan.reps, "duration_s": plan.duration, "cells": cells}


def streams(bench: Bench) -> None:
    """c. Streams: time to the first token and gaps between chunks, and what each proxy adds to direct."""
    plan = bench.plan
    log(f"scenario c: streams of {STREAM_CHUNKS} chunks {STREAM_GAP_MS} ms apart, "
        f"{plan.stream_rounds} rounds x {plan.stream_block} streams per target, interleaved")
    ours = bench.start_ours("c")
    m = streaming(legs(bench.targets(ours), "stream"), plan.stream_rounds, plan.stream_block, bench.settle, STREAM_CHUNKS)
    m.add_added("direct", ("ttft_p50", "ttft_p99", "gap_p50", "gap_p99"))
    out: dict[str, Any] = {"chunks": STREAM_CHUNKS, "gap_ms": STREAM_GAP_MS, "rounds": plan.stream_rounds,
                           "block": plan.stream_block, "targets": m.targets}
    out["ours_rows"] = bench.finish_ours(ours, m.completed_ours)
    bench.results["c"] = out
    for name, v in out["targets"].items():
        added = (f", added TTFT {v['added_ttft_p50_ms']:.3f} ms, added gap {v['added_gap_p50_ms']:.3f} ms"
                 if "added_ttft_p50_ms" in v else "")
        log(f"  {LABEL[name]:8} TTFT p50 {v['ttft_p50_ms']:.3f} ms, gap p50 {v['gap_p50_ms']:.3f} / p99 {v['gap_p99_ms']:.3f} ms{added}")


def recorder_alone(bench: Bench) -> None:
    """d. The recorder without HTTP (bench/recorder_bench.py in a child process), alone and while Datasette reads the file."""
    plan = bench.plan
    rows = plan.recorder_rows
    log(f"scenario d: recorder alone, {rows:,} rows per run, {plan.recorder_reps} rounds alone / with Datasette reading")
    worker = subprocess.Popen(
        [*pinned(PROXY_CPU), PY, str(BENCH / "recorder_bench.py"), "--rows", str(rows), "--serve"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(bench.tmp / "recorder.log", "wb"), text=True,
        env=clean_env(PYTHONPATH=str(ROOT)), cwd=bench.tmp,
    )
    assert worker.stdin and worker.stdout

    def ask(line: str) -> dict[str, Any]:
        worker.stdin.write(line + "\n")
        worker.stdin.flush()
        answer = worker.stdout.readline()
        if not answer:
            raise RuntimeError(f"recorder_bench.py died: {(bench.tmp / 'recorder.log').read_text()[-2000:]}")
        return json.loads(answer)

    runs: dict[str, list[dict[str, Any]]] = {"alone": [], "datasette": []}
    try:
        for r in range(plan.recorder_reps):
            for mode in rotate(["alone", "datasette"], r):
                db = bench.tmp / f"tmp-d-{mode}-{r}.db"
                ask(f"prepare {db}")
                reader = ds = None
                if mode == "datasette":
                    port = free_port()
                    ds = Process("datasette", [*pinned(LOAD_CPU), PY, "-m", "proxy", "ui", "--db", str(db), "--port", str(port)],
                                 bench.tmp / "datasette.log", env=clean_env(PYTHONPATH=str(ROOT)), cwd=bench.tmp)
                    wait_http(port, "/log.json?sql=select+1", ds, timeout=60)
                    reader = WrkBackground(f"http://127.0.0.1:{port}", 2, WRK_DATASETTE, LOAD_CPU)
                    time.sleep(0.3)
                result = ask("go")
                if reader is not None and ds is not None:
                    result["reader"] = reader.stop()
                    ds.stop()
                runs[mode].append(result)
                if not plan.keep_tmp:
                    for suffix in ("", "-wal", "-shm", ".spool.jsonl"):
                        Path(str(db) + suffix).unlink(missing_ok=True)
                extra = f", Datasette served {result['reader'].get('rps', 0):.0f} req/s" if "reader" in result else ""
                log(f"  {mode:9} {result['rows_per_s']:,.0f} rows/s ({result['seconds']:.2f}s, lost {result['lost']}){extra}")
    finally:
        with contextlib.suppress(Exception):
            worker.stdin.write("quit\n")
            worker.stdin.flush()
        worker.wait(timeout=30)
    out = {"rows": rows, "reps": plan.recorder_reps}
    for mode, rs in runs.items():
        out[mode] = {"rows_per_s": med([x["rows_per_s"] for x in rs]), "lost": sum(x["lost"] for x in rs), "runs": rs}
    if runs["alone"] and runs["datasette"]:
        out["with_reader_over_alone"] = med([d["rows_per_s"] / a["rows_per_s"] for a, d in zip(runs["alone"], runs["datasette"])])
        out["reader_rps"] = med([x["reader"].get("rps", 0) for x in runs["datasette"]])
        out["reader_errors"] = sum(x["reader"].get("errors", 0) for x in runs["datasette"])
        out["reader_p50_ms"] = med([x["reader"].get("p50_ms", float("nan")) for x in runs["datasette"]])
    bench.results["d"] = out


def memory(bench: Bench) -> None:
    """e. RSS sampled over many requests at 32 connections, ours and the references fast enough for it: does it grow?"""
    plan = bench.plan
    total, every = plan.memory_requests, plan.memory_every
    if bench.want("ours"):
        log(f"scenario e: RSS of our proxy over {total:,} requests at 32 connections, sampled every {every:,}")
        ours = bench.start_ours("e")
        assert ours is not None
        out = rss_over(ours.target, ours.pid, total, every, lambda: ours.health().get("pending") if ours.proc.alive() else None)
        out["ours_rows"] = account = bench.finish_ours(ours, out["requests"])
        bench.results["e"] = out
        log(f"  ours: {rss_line(out)}, rows lost {account['rows_lost'] if account else '-'}")
    for name in REFERENCES:
        ref = bench.get_reference(name) if name in MEMORY_REFERENCES else None
        if ref is None:
            continue
        log(f"scenario e: RSS of {LABEL[name]} over {total:,} requests at 32 connections, sampled every {every:,}")
        bench.settle()
        out = rss_over(ref.target, ref.proc.pid, total, every, lambda: None)
        bench.results.setdefault("e", {}).setdefault("references", {})[name] = out
        log(f"  {LABEL[name]}: {rss_line(out)}")


#: The references scenario e measures too: LiteLLM makes about 50 req/s here, so 100,000 requests would take over half an hour.
MEMORY_REFERENCES = ("portkey",)


def rss_over(t: Target, pid: int, total: int, every: int, pending: Callable[[], int | None]) -> dict[str, Any]:
    """wrk at 32 connections against a target, `total` answers in steps of `every`, the RSS of `pid` after each step."""
    samples: list[dict[str, Any]] = [{"requests": 0, "rss_kib": rss_kib(pid), "pending": 0}]
    done = 0
    load_seconds = 0.0
    started = time.monotonic()
    while done < total and rss_kib(pid) is not None:
        # wrk stops itself after `every` answers; the 60 s bound only matters if the proxy died or crawls
        run = wrk(t.url("lat0"), t.body("lat0"), 32, 60, t.auth, stop_after=min(every, total - done), headers=t.headers_for("lat0"))
        done += run["requests"]
        load_seconds += run["seconds"]
        samples.append({"requests": done, "rss_kib": rss_kib(pid), "pending": pending(), "errors": run["errors"]})
    seconds = time.monotonic() - started

    def at(n: int) -> int | None:
        best = min(samples, key=lambda s: abs(s["requests"] - n))
        return best["rss_kib"]

    first_mark = min(10_000, total // 10)
    r10, rend = at(first_mark), samples[-1]["rss_kib"]
    growth = (rend - r10) / r10 * 100 if r10 and rend else float("nan")
    return {
        "requests": done, "seconds": round(seconds, 1), "rps": round(done / load_seconds, 1) if load_seconds else 0.0,
        "mark_requests": first_mark, "rss_mark_kib": r10, "rss_end_kib": rend, "growth_percent": growth,
        "errors": sum(s.get("errors", 0) for s in samples), "samples": samples,
    }


def rss_line(e: dict[str, Any]) -> str:
    mark, end = e["rss_mark_kib"], e["rss_end_kib"]
    return (f"RSS {mark / 1024 if mark else 0:.1f} MiB at {e['mark_requests']:,} → {end / 1024 if end else 0:.1f} MiB at "
            f"{e['requests']:,} ({e['growth_percent']:+.1f} %), {e['rps']:,.0f} req/s under load")
