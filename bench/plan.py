"""The command line of bench/run.py turned into a `Plan`: which scenarios and targets, how big, where to.

A run with every default is a full run: only that one writes to bench/results and into
bench/README.md, so iterating with --quick or a subset never overwrites the reference numbers.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from targets import TARGET_NAMES

BENCH = Path(__file__).resolve().parent
SCENARIOS = "abcdef"


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


def parse_args(argv: list[str] | None = None, description: str = "") -> Plan:
    """The options of bench/run.py (`description` heads its --help) and the sizes they imply."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short runs (1 repetition, 2 s per wrk run, fewer requests)")
    p.add_argument("--only", default=",".join(SCENARIOS), help="scenarios to run, e.g. a,b (default: all)")
    p.add_argument("--targets", default=",".join(TARGET_NAMES), help=f"subset of {','.join(TARGET_NAMES)}")
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
        p.error(f"--targets takes {', '.join(TARGET_NAMES)}, not {a.targets!r}")
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
