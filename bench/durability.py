"""What each `[log] durability` costs, and what a kill -9 loses: side by side, in one run.

    python bench/durability.py                # about 4 minutes
    python bench/durability.py --quick        # about 1.5 minutes
    python bench/durability.py --skip-kill    # the cost only (or --skip-cost: the kill -9 runs only)

Cost: one proxy per mode (`none`, `process`, `power`), each on a fresh SQLite file, all three
started at once and pinned to core 0 (the fake upstream, wrk and this script on core 1), the
0 ms fake upstream behind the `openai` provider, full logging. Each of --rounds rounds runs
wrk -t1 -c32 for --duration seconds against each mode, in an order that rotates from round to
round (req/s, p50, p99), each run once no proxy uses CPU any more; a mode's req/s is divided
by `none`'s per round, and the table shows the medians of those ratios and of the figures.
Then --calls sequential calls go to each mode on a keep-alive connection each, one call to
each mode in turn (the order rotating), so that the machine's drift from one second to the
next weighs on all modes alike; "added p50" is a mode's p50 minus `none`'s. Paced: the same
rounds with each connection waiting --pace-ms on average before each call (wrk's `delay()`,
drawn from an exponential distribution, as independent clients' gaps are), so that the 32
connections offer about half of what one core serves: p99 without the queue of a saturated
server, where every call waits behind the 31 others.

Then the same `process` and `none` proxies are loaded at the same time, both on core 0, each
by its own wrk -c32 (--rounds runs of --duration seconds): the kernel gives each half of the
core, so the ratio of their req/s is the ratio of their CPU cost per call, and whatever else
the machine is doing weighs on both alike. On a shared 2-core machine, where throughput drifts
by a quarter from one minute to the next, this ratio is steadier than the rounds above.
(`power` is not paired: its answers wait for the disk, not for the core.)

Kill -9: for each mode, a fresh proxy under wrk -c32 (bench/wrk/ids.lua prints the request id
of every answer received whole) gets SIGKILL after --kill-after seconds; it is started again
on the same database, which replays the journal; answered, logged and lost are counted. Then
the same with the SQLite file locked by another connection (BEGIN EXCLUSIVE) from before the
load until after the kill.

Results: printed, and written to --out (default bench/results/quick/durability.json).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import clients  # noqa: E402
from measure import WRK_POST, med, pct, rotate, wrk, wrk_together  # noqa: E402
from procs import (  # noqa: E402
    LOAD_CPU, PROXY_CPU, PY, ROOT, Process, clean_env, free_port, http_get, log, machine_info, pinned, script_scratch, settle, wait_http,
)
from servers import Upstream  # noqa: E402
from targets import RUN_ID, Target  # noqa: E402

MODES = ("none", "process", "power")
WRK_IDS = BENCH / "wrk" / "ids.lua"


class ModeProxy:
    """`python -m proxy serve` with STUDY_DURABILITY=mode, pinned to core 0."""

    def __init__(self, upstream: Upstream, tmp: Path, mode: str, label: str, db: Path | None = None,
                 tree: Path = ROOT, upstream_path: str = "/t-dur/v1") -> None:
        """`tree`: the checkout whose proxy runs; `upstream_path`: the fake upstream's options (see fake_upstream.py)."""
        self.mode, self.label = mode, label
        self.db = db or tmp / f"dur-{label}.db"
        self.port = free_port()
        cmd = [PY, "-m", "proxy", "serve", "--host", "127.0.0.1", "--port", str(self.port), "--db", str(self.db),
               "--no-ui", "--log-level", "warning"]
        env = clean_env(OPENAI_API_KEY="sk-bench-upstream", OPENAI_BASE_URL=f"{upstream.base}{upstream_path}",
                        PYTHONPATH=str(tree), STUDY_DURABILITY=mode)
        self.proc = Process(f"proxy ({label})", [*pinned(PROXY_CPU), *cmd], tmp / f"proxy-{label}.log", env=env, cwd=tmp)
        self.startup_s = wait_http(self.port, "/healthz", self.proc, timeout=120)
        self.target = Target(mode, self.port, {"lat0": "/v1"}, {"lat0": "openai/bench-model"})

    def health(self) -> dict[str, Any]:
        return json.loads(http_get(self.port, "/healthz")[1])

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.popen.wait(30)
        self.proc.stop()  # closes its log file; it is dead already


def logged_ids(db: Path) -> set[str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return {row[0] for row in conn.execute("SELECT request_id FROM inference_runs")}
    finally:
        conn.close()


def sequential(conn: clients.Conn, target: Target, calls: int) -> list[float]:
    conn.open()
    conn.call(target.request("lat0"))  # a fresh connection, warmed by one untimed call
    return [conn.call(request)[1] / 1e6 for request in target.requests("lat0", calls)]


def cost(upstream: Upstream, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    log(f"cost: {len(MODES)} proxies; {args.rounds} rounds of wrk -c32 {args.duration:g}s per mode, "
        f"then {args.calls} sequential calls to each, one mode after the other")
    proxies = {mode: ModeProxy(upstream, tmp, mode, f"cost-{mode}") for mode in MODES}
    pids = [p.proc.pid for p in proxies.values()]
    conns = {mode: clients.Conn("127.0.0.1", p.port) for mode, p in proxies.items()}
    for mode, proxy in proxies.items():  # warm-up
        wrk(proxy.target.url("lat0"), proxy.target.body("lat0"), 32, 1)
        sequential(conns[mode], proxy.target, 50)
    rounds = wrk_rounds(proxies, pids, args)
    log(f"paced: {args.rounds} rounds of wrk -c32, each connection waiting {args.pace_ms} ms on average before each call")
    paced = wrk_rounds(proxies, pids, args, delay_ms=args.pace_ms)
    settle(pids)
    for mode, proxy in proxies.items():
        conns[mode].open()
        conns[mode].call(proxy.target.request("lat0"))  # fresh connections, warmed by one untimed call
    calls: dict[str, list[float]] = {mode: [] for mode in MODES}
    for i in range(args.calls):  # one call to each mode in turn: the drift of the machine cancels out
        for mode in rotate(list(MODES), i):
            calls[mode].append(conns[mode].call(proxies[mode].target.request("lat0"))[1] / 1e6)
    out: dict[str, Any] = {"rounds": args.rounds, "duration_s": args.duration, "calls": args.calls, "modes": {}}
    for mode in MODES:
        rs = rounds[mode]
        out["modes"][mode] = {
            "rps": med([x["rps"] for x in rs]), "p50_ms": med([x["p50_ms"] for x in rs]),
            "p99_ms": med([x["p99_ms"] for x in rs]), "errors": sum(x["errors"] for x in rs),
            "rps_over_none": med([x["rps"] / n["rps"] for x, n in zip(rs, rounds["none"])]),
            "c1_p50_ms": pct(calls[mode], 50), "c1_p99_ms": pct(calls[mode], 99),
            "c1_p50_added_ms": pct(calls[mode], 50) - pct(calls["none"], 50),
            "runs": rs,
            "paced": {"delay_ms": args.pace_ms, "rps": med([x["rps"] for x in paced[mode]]),
                      "p50_ms": med([x["p50_ms"] for x in paced[mode]]), "p99_ms": med([x["p99_ms"] for x in paced[mode]]),
                      "errors": sum(x["errors"] for x in paced[mode]), "runs": paced[mode]},
        }
    for conn in conns.values():
        conn.close()
    out["paired"] = paired(proxies["none"], proxies["process"], pids, args)
    for mode, proxy in proxies.items():
        stats = proxy.health().get("log", {})
        proxy.proc.stop()
        out["modes"][mode]["rows"] = len(logged_ids(proxy.db))
        out["modes"][mode]["lost"] = stats.get("lost")
    return out


def wrk_rounds(proxies: dict[str, ModeProxy], pids: list[int], args: argparse.Namespace,
               delay_ms: int | None = None) -> dict[str, list[dict[str, float]]]:
    """--rounds rounds of wrk -c32 against each mode, the order rotating; paced with `delay_ms`."""
    rounds: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    for r in range(args.rounds):
        for mode in rotate(list(MODES), r):
            target = proxies[mode].target
            settle(pids)
            run = wrk(target.url("lat0"), target.body("lat0"), 32, args.duration, delay_ms=delay_ms)
            rounds[mode].append({"rps": run["rps"], "p50_ms": run["p50_ms"], "p99_ms": run["p99_ms"], "errors": run["errors"]})
        log("  round %d: %s" % (r + 1, ", ".join(
            f"{m} {rounds[m][-1]['rps']:,.0f} req/s p99 {rounds[m][-1]['p99_ms']:.2f} ms" for m in MODES)))
    return rounds


def paired(none: ModeProxy, process: ModeProxy, pids: list[int], args: argparse.Namespace) -> dict[str, Any]:
    """`none` and `process` under load at once, sharing core 0: the ratio of their req/s."""
    log(f"paired: none and process loaded together on core 0, {args.rounds} runs of {args.duration:g}s")
    runs = []
    for _ in range(args.rounds):
        settle(pids)
        found = wrk_together({p.mode: (p.target.url("lat0"), p.target.body("lat0")) for p in (none, process)}, 32, args.duration)
        runs.append({"none_rps": found["none"]["rps"], "process_rps": found["process"]["rps"],
                     "ratio": found["process"]["rps"] / found["none"]["rps"]})
        log(f"  none {runs[-1]['none_rps']:,.0f} req/s, process {runs[-1]['process_rps']:,.0f} req/s: "
            f"{runs[-1]['ratio']:.3f}")
    return {"process_over_none": med([r["ratio"] for r in runs]), "runs": runs}


def kill_once(upstream: Upstream, tmp: Path, mode: str, locked: bool, after: float) -> dict[str, Any]:
    label = f"kill-{mode}-{'locked' if locked else 'free'}"
    proxy = ModeProxy(upstream, tmp, mode, label)
    locker = None
    if locked:
        locker = sqlite3.connect(proxy.db, isolation_level=None, timeout=5)
        locker.execute("BEGIN EXCLUSIVE")
    target = proxy.target
    env = dict(os.environ, BENCH_BODY=target.body("lat0").decode(), BENCH_RUN_ID=f"{RUN_ID}-{label}",
               BENCH_POST_LUA=str(WRK_POST))
    cmd = [*pinned(LOAD_CPU), "wrk", "-t1", "-c32", f"-d{int(after) + 2}s", "--timeout", "5s", "-s", str(WRK_IDS),
           target.url("lat0")]
    ids_path = tmp / f"{label}.ids"  # a file, not a pipe: a full pipe would stop wrk mid-load
    with open(ids_path, "w") as out:
        load = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        time.sleep(after)
        before_kill = proxy.health().get("log", {})
        proxy.kill()
        load.wait(60)
    output = ids_path.read_text()
    if locker is not None:
        locker.execute("ROLLBACK")
        locker.close()
    answered = {line[3:].strip() for line in output.splitlines() if line.startswith("ID ")}
    again = ModeProxy(upstream, tmp, mode, label + "-restart", db=proxy.db)
    restart_s = again.startup_s
    again.proc.stop()
    logged = answered & logged_ids(proxy.db)
    result = {"mode": mode, "locked": locked, "answered": len(answered), "logged": len(logged),
              "lost": len(answered) - len(logged), "pending_at_kill": before_kill.get("pending"),
              "restart_s": round(restart_s, 2)}
    log(f"  kill -9 {mode:7} database {'locked' if locked else 'free  '}: answered {result['answered']:,}, "
        f"logged {result['logged']:,}, lost {result['lost']:,} (restart with replay {restart_s:.1f}s)")
    return result


def report(results: dict[str, Any]) -> str:
    lines = [f"load average at start {results['loadavg_start']}, at end {results['loadavg_end']}"]
    if "cost" in results:
        c = results["cost"]
        lines += [
            "", f"cost (req/s: {c['rounds']} interleaved rounds of wrk -c32 {c['duration_s']:g}s, medians of the values and "
            f"of the ratios per round; c=1: {c['calls']} calls per mode, interleaved call by call, p50 of each)", "",
            "| durability | req/s c=32 | ÷ none | p50 c=32 ms | p99 c=32 ms | p50 c=1 ms | added p50 c=1 ms | errors | rows |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for mode, v in c["modes"].items():
            lines.append(f"| {mode} | {v['rps']:,.0f} | {v['rps_over_none']:.3f} | {v['p50_ms']:.2f} | {v['p99_ms']:.2f} | "
                         f"{v['c1_p50_ms']:.3f} | {v['c1_p50_added_ms']:+.3f} | {v['errors']} | {v['rows']:,} |")
        delay = next(iter(c["modes"].values()))["paced"]["delay_ms"]
        lines += ["", f"paced (wrk -c32, each connection waiting {delay} ms on average, drawn at random, before each call: "
                  "below saturation; medians)", "",
                  "| durability | req/s | p50 ms | p99 ms | errors |", "|---|---|---|---|---|"]
        for mode, v in c["modes"].items():
            pv = v["paced"]
            lines.append(f"| {mode} | {pv['rps']:,.0f} | {pv['p50_ms']:.2f} | {pv['p99_ms']:.2f} | {pv['errors']} |")
        pair = c["paired"]
        each = ", ".join(f"{r['ratio']:.3f}" for r in pair["runs"])
        lines += ["", f"paired (none and process loaded at once on core 0, {len(pair['runs'])} runs): "
                  f"process ÷ none {pair['process_over_none']:.3f} (runs: {each})"]
    if "kill" in results:
        lines += ["", "kill -9 mid-load (wrk -c32), restart on the same database", "",
                  "| durability | database | answered | logged | lost |", "|---|---|---|---|---|"]
        for k in results["kill"]:
            lines.append(f"| {k['mode']} | {'locked' if k['locked'] else 'free'} | {k['answered']:,} | {k['logged']:,} | {k['lost']:,} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds and blocks")
    p.add_argument("--rounds", type=int, help="interleaved wrk rounds, and paired runs (default 9, quick 3)")
    p.add_argument("--duration", type=float, default=2.0, help="seconds per wrk run (default 2)")
    p.add_argument("--calls", type=int, help="sequential calls per mode, interleaved call by call (default 3000, quick 1000)")
    p.add_argument("--pace-ms", type=int, default=16,
                   help="the paced rounds: each connection's mean wait before each call, ms (default 16)")
    p.add_argument("--kill-after", type=float, default=2.0, help="seconds of load before the SIGKILL")
    p.add_argument("--skip-cost", action="store_true")
    p.add_argument("--skip-kill", action="store_true")
    p.add_argument("--out", type=Path, default=BENCH / "results" / "quick" / "durability.json")
    args = p.parse_args(argv)
    args.rounds = args.rounds or (3 if args.quick else 9)
    args.calls = args.calls or (1000 if args.quick else 3000)
    tmp = script_scratch("durability")
    results: dict[str, Any] = {"machine": machine_info(), "loadavg_start": [round(x, 2) for x in os.getloadavg()],
                               "command": " ".join(["python bench/durability.py", *(argv if argv is not None else sys.argv[1:])])}
    started = time.monotonic()
    try:
        upstream = Upstream(tmp)
        if not args.skip_cost:
            results["cost"] = cost(upstream, tmp, args)
        if not args.skip_kill:
            log(f"kill -9 after {args.kill_after:g}s of load, each mode, database free then locked")
            results["kill"] = [kill_once(upstream, tmp, mode, locked, args.kill_after) for locked in (False, True) for mode in MODES]
    finally:
        Process.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    results["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    results["seconds"] = round(time.monotonic() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(report(results))
    print(f"\n{args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
