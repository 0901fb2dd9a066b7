"""`serve --workers 1` against `--workers 2`, at 32 and 256 connections, on the same run.

    .venv/bin/python bench/workers.py [--rounds 3] [--duration 5]

Each leg starts a fresh `python -m proxy serve --workers N` logging every call in full to a
fresh SQLite file; wrk (`-t1`, bench/wrk/post.lua: every body unique, so nothing is merged
or cached) and the fake upstream (0 ms) are pinned to core 1, the proxy is not pinned: its
workers may use both cores, the one worker too. The legs alternate for `--rounds` rounds. A
leg ends with SIGTERM (every worker drains), then its rows are counted against wrk's
answers: `rows_lost` must be 0. Each worker's CPU time says how the kernel spread the
connections, and their sum per answer what a call cost the proxy. The table shows medians; results go to bench/results/workers.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure import wrk  # noqa: E402
from procs import PINNING, PY, ROOT, Process, clean_env, cpu_seconds, free_port, script_scratch, wait_http  # noqa: E402
from servers import Upstream  # noqa: E402

BODY = json.dumps({"model": "openai/bench-model", "max_tokens": 16,
                   "messages": [{"role": "user", "content": "Hello, this is benchmark request #N#. Please answer briefly."}]})
WORKERS = (1, 2)
CONNECTIONS = (32, 256)


def children(pid: int) -> list[int]:
    """The worker processes of a `serve --workers N` parent (Linux)."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def measure(workers: int, conns: int, upstream: Upstream, tmp: Path, duration: float) -> dict[str, Any]:
    """One leg: start, warm up, measure, SIGTERM, count the rows."""
    port, db = free_port(), tmp / f"log-{workers}w-{conns}c-{len(list(tmp.glob('log-*.db')))}.db"
    env = clean_env(OPENAI_API_KEY="sk-bench-upstream", OPENAI_BASE_URL=f"{upstream.base}/t-workers/v1", PYTHONPATH=str(ROOT))
    cmd = [PY, "-m", "proxy", "serve", "--host", "127.0.0.1", "--port", str(port), "--db", str(db),
           "--no-ui", "--log-level", "warning", "--workers", str(workers)]
    proc = Process(f"{workers} workers", cmd, tmp / f"proxy-{workers}w-{conns}c.log", env=env, cwd=tmp)
    try:
        wait_http(port, "/healthz", proc, timeout=60)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        warm = wrk(url, BODY.encode(), conns, 1)
        pids = children(proc.pid) if workers > 1 else [proc.pid]
        before = [cpu_seconds(pid) for pid in pids]
        run = wrk(url, BODY.encode(), conns, duration)
        cpu = [cpu_seconds(pid) - b for pid, b in zip(pids, before)]
    finally:
        code = proc.stop()
    rows = sqlite3.connect(db).execute("SELECT count(*) FROM inference_runs").fetchone()[0]
    answered = warm["requests"] + run["requests"]
    return run | {
        "answered": answered, "rows": rows, "rows_lost": max(0, answered - rows), "exit_code": code,
        "cpu_s_per_worker": [round(c, 2) for c in cpu],
        "cpu_us_per_request": round(sum(cpu) / max(1, run["requests"]) * 1e6),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "workers.json"))
    args = parser.parse_args(argv)
    tmp = script_scratch("workers")
    legs = [(w, c) for c in CONNECTIONS for w in WORKERS]
    runs: dict[str, list[dict[str, Any]]] = {f"{w}w-{c}c": [] for w, c in legs}
    upstream = Upstream(tmp)
    try:
        for r in range(args.rounds):
            for workers, conns in (legs if r % 2 == 0 else legs[::-1]):
                run = measure(workers, conns, upstream, tmp, args.duration)
                runs[f"{workers}w-{conns}c"].append(run)
                print(f"round {r + 1}: {workers} worker(s), {conns} connections: {run['rps']:,.0f} req/s, "
                      f"p50 {run['p50_ms']:.1f} ms, p99 {run['p99_ms']:.1f} ms, errors {run['errors']}, "
                      f"rows lost {run['rows_lost']}, CPU s per worker {run['cpu_s_per_worker']} "
                      f"({run['cpu_us_per_request']} µs a request)", flush=True)
        results = {
            "command": "python bench/workers.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "rounds": args.rounds, "duration_s": args.duration, "cpus": os.cpu_count(),
            "pinning": "wrk and the fake upstream on core 1; the proxy unpinned" if PINNING else "none",
            "load_average": os.getloadavg(),
            "legs": {name: {
                **{key: round(statistics.median(run[key] for run in values), 2)
                   for key in ("rps", "p50_ms", "p99_ms", "cpu_us_per_request")},
                "errors": sum(run["errors"] for run in values),
                "rows_lost": sum(run["rows_lost"] for run in values),
                "cpu_s_per_worker": [run["cpu_s_per_worker"] for run in values],
            } for name, values in runs.items()},
        }
        print(json.dumps(results, indent=2))
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
        return 0
    finally:
        Process.stop_all()
        for path in sorted(tmp.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink(missing_ok=True)
        tmp.rmdir()


if __name__ == "__main__":
    sys.exit(main())
