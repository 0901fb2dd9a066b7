"""The proxy's throughput with its log on PostgreSQL against SQLite, side by side.

    .venv/bin/python bench/store_throughput.py [--rounds 3] [--duration 5] [--postgres-url URL]

One `python -m proxy serve` at a time on core 0, logging every call in full, either to a
fresh SQLite file or to a fresh PostgreSQL database (created on the server of
`--postgres-url`, dropped at the end); wrk (`-t1 -c32`, bench/wrk/post.lua: every body
unique) and the fake upstream (0 ms) on core 1. The targets alternate for `--rounds` rounds;
each round waits until the proxy's log has every row, and the table shows the medians.
Results are printed and written to bench/results/store_throughput.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure import wrk  # noqa: E402
from procs import (  # noqa: E402
    PINNING, PROXY_CPU, PY, ROOT, Process, clean_env, free_port, http_get, pinned, script_scratch, wait_http,
)
from servers import Upstream  # noqa: E402

CONNECTIONS = 32
BODY = json.dumps({"model": "openai/bench-model", "max_tokens": 16,
                   "messages": [{"role": "user", "content": "Hello, this is benchmark request #N#. Please answer briefly."}]})


async def _admin(url: str, statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def measure(name: str, database: list[str], upstream: Upstream, tmp: Path, duration: float) -> dict[str, float]:
    port = free_port()
    env = clean_env(OPENAI_API_KEY="sk-bench-upstream", OPENAI_BASE_URL=f"{upstream.base}/t-store/v1", PYTHONPATH=str(ROOT))
    cmd = [PY, "-m", "proxy", "serve", "--host", "127.0.0.1", "--port", str(port), *database, "--no-ui", "--log-level", "warning"]
    proc = Process(name, [*pinned(PROXY_CPU), *cmd], tmp / f"{name}.log", env=env, cwd=tmp)
    try:
        wait_http(port, "/healthz", proc, timeout=60)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        wrk(url, BODY.encode(), CONNECTIONS, 1)  # warm-up
        run = wrk(url, BODY.encode(), CONNECTIONS, duration)
        started = time.monotonic()
        while time.monotonic() - started < 60:  # every row written before the next round
            log = json.loads(http_get(port, "/healthz")[1])["log"]
            if log["pending"] == 0:
                break
            time.sleep(0.2)
        run["drain_s"] = round(time.monotonic() - started, 2)
        return run
    finally:
        proc.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--postgres-url", default=os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "store_throughput.json"))
    args = parser.parse_args(argv)
    tmp = script_scratch("store")
    name = f"bench_store_{uuid.uuid4().hex[:8]}"
    base, _, _ = args.postgres_url.rpartition("/")
    asyncio.run(_admin(args.postgres_url, f"CREATE DATABASE {name}"))
    upstream = Upstream(tmp)
    runs: dict[str, list[dict[str, float]]] = {"sqlite": [], "postgres": []}
    try:
        for r in range(args.rounds):
            for target in (("sqlite", "postgres") if r % 2 == 0 else ("postgres", "sqlite")):
                database = ["--db", str(tmp / f"log-{r}.db")] if target == "sqlite" else ["--database-url", f"{base}/{name}"]
                runs[target].append(measure(target, database, upstream, tmp, args.duration))
                last = runs[target][-1]
                print(f"round {r + 1}: {target}: {last['rps']:,.0f} req/s, p50 {last['p50_ms']:.2f} ms, "
                      f"p99 {last['p99_ms']:.2f} ms, log drained {last['drain_s']} s later", flush=True)
        results = {
            "command": "python bench/store_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "connections": CONNECTIONS, "rounds": args.rounds, "duration_s": args.duration,
            "pinning": "proxy on core 0, wrk and the fake upstream on core 1" if PINNING else "none",
            "load_average": os.getloadavg(),
            **{target: {key: round(statistics.median(run[key] for run in values), 2) for key in ("rps", "p50_ms", "p99_ms", "drain_s")}
               for target, values in runs.items()},
        }
        print(json.dumps(results, indent=2))
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
        return 0
    finally:
        Process.stop_all()
        asyncio.run(_admin(args.postgres_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        for path in sorted(tmp.glob("*")):
            path.unlink(missing_ok=True)
        tmp.rmdir()


if __name__ == "__main__":
    sys.exit(main())
