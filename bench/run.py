"""Run the benchmark: direct to a fake upstream, through our proxy, through LiteLLM, side by side.

    python bench/run.py                      # everything (about 15 minutes on 2 cores)
    python bench/run.py --quick              # short runs, for iterating (about 5 minutes)
    python bench/run.py --only b --targets direct,ours -c 32 --latencies 0 --quick   # one cell, seconds

Scenarios (see bench/README.md): a sequential latency, b concurrency sweep, c streaming,
d recorder alone (± a Datasette reader), e memory over 100,000 requests, f the Responses
API (bench/scenario_responses.py).

Processes and cores: the proxy under test (ours or LiteLLM, one at a time under load) is
pinned to core 0; the fake upstream, wrk, the Python clients and this script to core 1.
Pairs are interleaved (the order of targets rotates every round) and medians of rounds
are reported, with ratios taken per round and then the median (bench/measure.py).

Results: RESULTS_DIR/results.md, results.json and bench.png (RESULTS_DIR is bench/results
for a full run, bench/results/quick for --quick or a partial run, or --out). A full run
also puts the table into bench/README.md between the `results:start/end` markers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

import scenario_responses  # noqa: E402
from measure import WrkBackground, med, rotate, sequential, streaming, wrk, wrk_rounds  # noqa: E402
from procs import (  # noqa: E402
    LOAD_CPU, PINNING, PROXY_CPU, PY, Process, clean_env, cpu_counters, free_port, log, machine_info, pinned, rss_kib,
    settle, wait_http,
)
from servers import LiteLLM, OurProxy, Upstream  # noqa: E402
from targets import STREAM_CHUNKS, STREAM_GAP_MS, Leg, Target, direct_target, legs  # noqa: E402

WRK_DATASETTE = BENCH / "wrk" / "datasette.lua"
SCENARIOS = "abcdef"
TARGET_NAMES = ("direct", "ours", "litellm")
LABEL = {"direct": "direct", "ours": "ours", "litellm": "LiteLLM"}


# -- settings --------------------------------------------------------------------------------


@dataclass
class Plan:
    quick: bool
    only: set[str]
    targets: list[str]
    concurrency: list[int]
    latencies: list[int]
    reps: int
    duration: float
    warmup: float
    seq_rounds: int
    seq_block: int
    stream_rounds: int
    stream_block: int
    recorder_rows: int
    recorder_reps: int
    memory_requests: int
    memory_every: int
    out: Path
    full: bool
    keep_tmp: bool


def parse_args(argv: list[str] | None = None) -> Plan:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short runs (1 repetition, 2 s per wrk run, fewer requests)")
    p.add_argument("--only", default=",".join(SCENARIOS), help="scenarios to run, e.g. a,b (default: all)")
    p.add_argument("--targets", default="direct,ours,litellm", help="subset of direct,ours,litellm")
    p.add_argument("-c", "--concurrency", default="1,8,32,128,256", help="scenario b connection counts")
    p.add_argument("--latencies", default="0,50", help="scenario b upstream latencies in ms")
    p.add_argument("--reps", type=int, help="rounds per scenario b cell and in f's throughput part (default 3, quick 1)")
    p.add_argument("--duration", type=float, help="seconds per wrk run in scenarios b (at least) and f (default 3, quick 2)")
    p.add_argument("--recorder-rows", type=int, help="rows per scenario d run (default 100000, quick 20000)")
    p.add_argument("--memory-requests", type=int, help="requests in scenario e (default 100000, quick 20000)")
    p.add_argument("--out", type=Path, help="results directory (default bench/results, or bench/results/quick)")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temporary databases and logs")
    a = p.parse_args(argv)
    only = {s.strip() for s in a.only.split(",") if s.strip()}
    if not only <= set(SCENARIOS):
        p.error(f"--only takes letters among {','.join(SCENARIOS)}, not {a.only!r}")
    targets = [t.strip() for t in a.targets.split(",") if t.strip()]
    if not set(targets) <= set(TARGET_NAMES):
        p.error(f"--targets takes direct, ours, litellm, not {a.targets!r}")
    targets = [t for t in TARGET_NAMES if t in targets]
    concurrency = [int(x) for x in a.concurrency.split(",")]
    latencies = [int(x) for x in a.latencies.split(",")]
    q = a.quick
    full = (
        not q and only == set(SCENARIOS) and targets == list(TARGET_NAMES)
        and concurrency == [1, 8, 32, 128, 256] and latencies == [0, 50]
        and a.reps is None and a.duration is None and a.recorder_rows is None and a.memory_requests is None
    )
    memory_requests = a.memory_requests or (20_000 if q else 100_000)
    return Plan(
        quick=q,
        only=only,
        targets=targets,
        concurrency=concurrency,
        latencies=latencies,
        reps=a.reps or (1 if q else 3),
        duration=a.duration or (2.0 if q else 3.0),
        warmup=0.5 if q else 1.0,
        seq_rounds=3 if q else 10,
        seq_block=100 if q else 300,
        stream_rounds=2 if q else 6,
        stream_block=10 if q else 20,
        recorder_rows=a.recorder_rows or (20_000 if q else 100_000),
        recorder_reps=1 if q else 3,
        memory_requests=memory_requests,
        memory_every=max(1, memory_requests // 20),
        out=a.out or (BENCH / "results" if full else BENCH / "results" / "quick"),
        full=full,
        keep_tmp=a.keep_tmp,
    )


# -- scenarios -------------------------------------------------------------------------------


class Bench:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.tmp = BENCH / "results" / f"tmp-{os.getpid()}"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.upstream = Upstream(self.tmp)
        self.litellm: LiteLLM | None = None
        self.litellm_skipped: str | None = None
        self.ours: OurProxy | None = None
        self.rate_seen: dict[str, float] = {}
        self.results: dict[str, Any] = {"plan": {k: (str(v) if isinstance(v, Path) else sorted(v) if isinstance(v, set) else v)
                                                 for k, v in plan.__dict__.items()}}

    # targets

    def want(self, name: str) -> bool:
        return name in self.plan.targets

    def get_litellm(self) -> LiteLLM | None:
        if not self.want("litellm") or self.litellm_skipped:
            return None
        if self.litellm is None:
            log("starting LiteLLM …")
            try:
                self.litellm = LiteLLM(self.upstream, self.tmp)
                log(f"LiteLLM {self.litellm.version} up in {self.litellm.startup_s:.1f}s (idle CPU {self.litellm.idle_cpu_percent}%)")
                self.results["litellm"] = self.litellm.describe()
            except Exception as exc:  # noqa: BLE001 - anything: report and go on without it
                self.litellm_skipped = str(exc).strip()
                log(f"LiteLLM SKIPPED: {self.litellm_skipped}")
                self.results["litellm"] = {"skipped": self.litellm_skipped}
                return None
        return self.litellm

    def start_ours(self, label: str) -> OurProxy | None:
        if not self.want("ours"):
            return None
        self.ours = OurProxy(self.upstream, self.tmp, label)
        return self.ours

    def settle(self) -> float:
        """Before a measurement: no proxy still busy with an earlier run (see `settle`)."""
        pids = [p.proc.pid for p in (self.ours, self.litellm) if p is not None and p.proc.alive()]
        return settle(pids)

    def duration_for(self, name: str, conns: int) -> float:
        """Long enough for about 5 rounds of every connection at the target's last measured
        rate (LiteLLM at 256 connections takes ~3 s per round: a 3 s run would count one round
        and miss the requests in flight at the end), but never under --duration; at most 15 s."""
        rate = self.rate_seen.get(name, {"direct": 20000.0, "ours": 2000.0, "litellm": 60.0}[name])
        cap = 8.0 if self.plan.quick else 15.0
        return max(self.plan.duration, min(cap, 5 * conns / max(rate, 1.0)))

    def targets(self, ours: OurProxy | None) -> list[Target]:
        found = []
        if self.want("direct"):
            found.append(direct_target(self.upstream.port))
        if ours is not None:
            found.append(ours.target)
        lite = self.get_litellm()
        if lite is not None:
            found.append(lite.target)
        return found

    def finish_ours(self, ours: OurProxy | None, completed: int) -> dict[str, Any] | None:
        if ours is None:
            return None
        account = ours.stop_and_count(completed, self.upstream)
        ours.cleanup(self.plan.keep_tmp)
        self.ours = None
        if account["rows_lost"] or account["crashed"] or account["spool_left"]:
            log(f"  !! our proxy: rows lost {account['rows_lost']}, crashed {account['crashed']}, spool left {account['spool_left']}")
        return account

    # 0. the tools themselves

    def capacity(self) -> None:
        """The fake upstream's and wrk's own throughput: wrk on core 0, upstream on core 1."""
        d = direct_target(self.upstream.port)
        wrk(d.url("lat0"), d.body("lat0"), 32, 1, cpu=PROXY_CPU)  # warm-up
        runs = [wrk(d.url("lat0"), d.body("lat0"), 32, 2, cpu=PROXY_CPU) for _ in range(1 if self.plan.quick else 3)]
        run = sorted(runs, key=lambda x: x["rps"])[len(runs) // 2]
        log(f"fake upstream alone, 32 connections, wrk on the other core: {run['rps']:,.0f} req/s, p99 {run['p99_ms']:.2f} ms")
        self.results["upstream_capacity"] = run | {"runs": len(runs), "note": "wrk -t1 -c32 pinned to core 0, fake upstream to core 1, 0 ms latency; median run"}

    # a. sequential

    def scenario_a(self) -> None:
        plan = self.plan
        log(f"scenario a: sequential, {plan.seq_rounds} rounds x {plan.seq_block} requests per target, interleaved")
        ours = self.start_ours("a")
        m = sequential(legs(self.targets(ours), "lat0"), plan.seq_rounds, plan.seq_block, self.settle)
        m.add_added("direct", ("p50", "p99"))
        out: dict[str, Any] = {"rounds": plan.seq_rounds, "block": plan.seq_block, "targets": m.targets}
        out["ours_rows"] = self.finish_ours(ours, m.completed_ours)
        self.results["a"] = out
        for name, v in out["targets"].items():
            added = f", added p50 {v['added_p50_ms']:.3f} / p99 {v['added_p99_ms']:.3f} ms" if "added_p50_ms" in v else ""
            log(f"  {LABEL[name]:8} p50 {v['p50_ms']:.3f} ms, p99 {v['p99_ms']:.3f} ms{added}")

    # b. concurrency sweep

    def scenario_b(self) -> None:
        plan = self.plan
        log(f"scenario b: concurrency {plan.concurrency} x upstream {plan.latencies} ms, "
            f"{plan.reps} rounds x {plan.duration:g}s per target, interleaved")
        cells = []
        for latency in plan.latencies:
            kind = "lat0" if latency == 0 else "lat50"
            if latency not in (0, 50):
                raise SystemExit("scenario b supports upstream latencies 0 and 50 ms (the proxies are configured for those)")
            for conns in plan.concurrency:
                ours = self.start_ours(f"b-{latency}ms-c{conns}")
                m = wrk_rounds(legs(self.targets(ours), kind), conns, plan.reps, plan.warmup, self.settle,
                               lambda leg, c=conns: self.duration_for(leg.name, c), self.note_rate)
                cell: dict[str, Any] = {"latency_ms": latency, "conns": conns, "targets": m.targets}
                for key, name, base in (("ours_over_litellm", "ours", "litellm"), ("direct_over_litellm", "direct", "litellm"),
                                        ("ours_over_direct", "ours", "direct")):
                    if name in m.rounds and base in m.rounds:  # direct÷LiteLLM: the best any proxy could do against LiteLLM
                        cell[key] = m.ratio(name, base)
                cell["ours_rows"] = self.finish_ours(ours, m.completed_ours)
                cells.append(cell)
                parts = [f"{LABEL[n]} {v['rps']:,.0f} req/s p99 {v['p99_ms']:.1f} ms err {v['errors']}" for n, v in cell["targets"].items()]
                ratio = f" | ours÷LiteLLM {cell['ours_over_litellm']:.1f}x" if "ours_over_litellm" in cell else ""
                lost = f" | rows lost {cell['ours_rows']['rows_lost']}" if cell.get("ours_rows") else ""
                log(f"  {latency:>2} ms c={conns:<3} " + " | ".join(parts) + ratio + lost)
        self.results["b"] = {"reps": plan.reps, "duration_s": plan.duration, "cells": cells}

    def note_rate(self, leg: Leg, run: dict[str, Any]) -> None:
        if run["rps"] > 0:
            self.rate_seen[leg.name] = run["rps"]

    # c. streaming

    def scenario_c(self) -> None:
        plan = self.plan
        log(f"scenario c: streams of {STREAM_CHUNKS} chunks {STREAM_GAP_MS} ms apart, "
            f"{plan.stream_rounds} rounds x {plan.stream_block} streams per target, interleaved")
        ours = self.start_ours("c")
        m = streaming(legs(self.targets(ours), "stream"), plan.stream_rounds, plan.stream_block, self.settle, STREAM_CHUNKS)
        m.add_added("direct", ("ttft_p50", "ttft_p99", "gap_p50", "gap_p99"))
        out: dict[str, Any] = {"chunks": STREAM_CHUNKS, "gap_ms": STREAM_GAP_MS, "rounds": plan.stream_rounds,
                               "block": plan.stream_block, "targets": m.targets}
        out["ours_rows"] = self.finish_ours(ours, m.completed_ours)
        self.results["c"] = out
        for name, v in out["targets"].items():
            added = (f", added TTFT {v['added_ttft_p50_ms']:.3f} ms, added gap {v['added_gap_p50_ms']:.3f} ms"
                     if "added_ttft_p50_ms" in v else "")
            log(f"  {LABEL[name]:8} TTFT p50 {v['ttft_p50_ms']:.3f} ms, gap p50 {v['gap_p50_ms']:.3f} / p99 {v['gap_p99_ms']:.3f} ms{added}")

    # d. recorder alone

    def scenario_d(self) -> None:
        plan = self.plan
        rows = plan.recorder_rows
        log(f"scenario d: recorder alone, {rows:,} rows per run, {plan.recorder_reps} rounds alone / with Datasette reading")
        worker = subprocess.Popen(
            [*pinned(PROXY_CPU), PY, str(BENCH / "recorder_bench.py"), "--rows", str(rows), "--serve"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(self.tmp / "recorder.log", "wb"), text=True,
            env=clean_env(PYTHONPATH=str(ROOT)), cwd=self.tmp,
        )
        assert worker.stdin and worker.stdout

        def ask(line: str) -> dict[str, Any]:
            worker.stdin.write(line + "\n")
            worker.stdin.flush()
            answer = worker.stdout.readline()
            if not answer:
                raise RuntimeError(f"recorder_bench.py died: {(self.tmp / 'recorder.log').read_text()[-2000:]}")
            return json.loads(answer)

        runs: dict[str, list[dict[str, Any]]] = {"alone": [], "datasette": []}
        try:
            for r in range(plan.recorder_reps):
                for mode in rotate(["alone", "datasette"], r):
                    db = self.tmp / f"tmp-d-{mode}-{r}.db"
                    ask(f"prepare {db}")
                    reader = ds = None
                    if mode == "datasette":
                        port = free_port()
                        ds = Process("datasette", [*pinned(LOAD_CPU), PY, "-m", "proxy", "ui", "--db", str(db), "--port", str(port)],
                                     self.tmp / "datasette.log", env=clean_env(PYTHONPATH=str(ROOT)), cwd=self.tmp)
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
        self.results["d"] = out

    # e. memory

    def scenario_e(self) -> None:
        plan = self.plan
        if not self.want("ours"):
            return
        total, every = plan.memory_requests, plan.memory_every
        log(f"scenario e: RSS of our proxy over {total:,} requests at 32 connections, sampled every {every:,}")
        ours = self.start_ours("e")
        assert ours is not None
        t = ours.target
        samples = [{"requests": 0, "rss_kib": rss_kib(ours.pid), "pending": 0}]
        done = 0
        load_seconds = 0.0
        started = time.monotonic()
        while done < total and ours.proc.alive():
            # wrk stops itself after `every` answers; the 60 s bound only matters if the proxy died or crawls
            run = wrk(t.url("lat0"), t.body("lat0"), 32, 60, stop_after=min(every, total - done))
            done += run["requests"]
            load_seconds += run["seconds"]
            pending = ours.health().get("pending") if ours.proc.alive() else None
            samples.append({"requests": done, "rss_kib": rss_kib(ours.pid), "pending": pending, "errors": run["errors"]})
        seconds = time.monotonic() - started
        account = self.finish_ours(ours, done)

        def at(n: int) -> int | None:
            best = min(samples, key=lambda s: abs(s["requests"] - n))
            return best["rss_kib"]

        first_mark = min(10_000, total // 10)
        r10, rend = at(first_mark), samples[-1]["rss_kib"]
        growth = (rend - r10) / r10 * 100 if r10 and rend else float("nan")
        self.results["e"] = {
            "requests": done, "seconds": round(seconds, 1), "rps": round(done / load_seconds, 1) if load_seconds else 0.0,
            "mark_requests": first_mark, "rss_mark_kib": r10, "rss_end_kib": rend, "growth_percent": growth,
            "errors": sum(s.get("errors", 0) for s in samples), "samples": samples, "ours_rows": account,
        }
        log(f"  RSS {r10 / 1024 if r10 else 0:.1f} MiB at {first_mark:,} → {rend / 1024 if rend else 0:.1f} MiB at {done:,} "
            f"({growth:+.1f} %), {self.results['e']['rps']:,.0f} req/s under load, rows lost {account['rows_lost'] if account else '-'}")

    # f. the Responses API

    def scenario_f(self) -> None:
        scenario_responses.run(self)

    # all

    def run(self) -> None:
        plan = self.plan
        self.results["machine"] = machine_info()
        self.results["started"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        t0, cpu0 = time.monotonic(), cpu_counters()
        if "b" in plan.only or "e" in plan.only:
            self.capacity()
        for letter in SCENARIOS:
            if letter in plan.only:
                try:
                    getattr(self, f"scenario_{letter}")()
                except KeyboardInterrupt:
                    raise
                except Exception as exc:  # noqa: BLE001 - report it, run the other scenarios
                    import traceback

                    log(f"scenario {letter} FAILED: {type(exc).__name__}: {exc}")
                    self.results.setdefault("failed", {})[letter] = traceback.format_exc()[-3000:]
                    if self.ours is not None:  # its log and rows still tell what happened
                        self.results.setdefault("failed_ours", {})[letter] = self.finish_ours(self.ours, 0)
        self.results["seconds"] = round(time.monotonic() - t0, 1)
        # how busy the machine was: the bench itself keeps about 2 runnable; steal is time the VM's host took
        self.results["machine"]["loadavg_at_end"] = os.getloadavg()
        spent = [b - a for a, b in zip(cpu0, cpu_counters())]
        self.results["machine"]["steal_percent"] = round(100 * spent[7] / max(1, sum(spent[:8])), 1) if len(spent) > 7 else None
        if self.litellm is not None:
            self.litellm.proc.stop()

    def close(self) -> None:
        Process.stop_all()
        if not self.plan.keep_tmp:
            logs = self.plan.out / "logs"
            logs.mkdir(parents=True, exist_ok=True)
            for f in self.tmp.glob("*.log"):
                shutil.copy(f, logs / f.name)
            shutil.rmtree(self.tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    plan = parse_args(argv)
    if not shutil.which("wrk"):
        print("wrk is not installed: `apt-get install -y wrk` (or run `make bench`, which installs it)", file=sys.stderr)
        return 2
    if PINNING:
        os.sched_setaffinity(0, {int(LOAD_CPU)})
    plan.out.mkdir(parents=True, exist_ok=True)
    bench = Bench(plan)
    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    try:
        bench.run()
    except KeyboardInterrupt:
        log("interrupted: writing what was measured")
    finally:
        bench.close()
    import report

    report.write(bench.results, plan.out, update_readme=plan.full)
    return 0


if __name__ == "__main__":
    sys.exit(main())
