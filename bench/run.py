"""Run the benchmark: direct to a fake upstream, through our proxy, through LiteLLM and Portkey, side by side.

    python bench/run.py                      # everything (about 15 minutes on 2 cores)
    python bench/run.py --quick              # short runs, for iterating (about 5 minutes)
    python bench/run.py --only b --targets direct,ours -c 32 --latencies 0 --quick   # one cell, seconds

Scenarios (see bench/README.md): a sequential latency, b concurrency sweep, c streaming,
d recorder alone (± a Datasette reader), e memory over 100,000 requests, f the Responses
API (bench/scenario_responses.py).

Processes and cores: the proxy under test (ours, LiteLLM or Portkey, one at a time under load) is
pinned to core 0; the fake upstream, wrk, the Python clients and this script to core 1.
Pairs are interleaved (the order of targets rotates every round) and medians of rounds
are reported, with ratios taken per round and then the median (bench/measure.py).

Results: RESULTS_DIR/results.md, results.json and bench.png (RESULTS_DIR is bench/results
for a full run, bench/results/quick for --quick or a partial run, or --out). A full run
also puts the table into bench/README.md between the `results:start/end` markers.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import scenario_responses  # noqa: E402
import scenarios  # noqa: E402
from plan import SCENARIOS, Plan, parse_args  # noqa: E402
from procs import LOAD_CPU, PINNING, Process, cpu_counters, log, machine_info, settle  # noqa: E402
from references import REFERENCE_PROXIES, ReferenceProxy  # noqa: E402
from servers import OurProxy, Upstream  # noqa: E402
from targets import LABEL, REFERENCES, Leg, Target, direct_target  # noqa: E402


class Bench:
    """The processes and the results of one run; the scenarios measure through it."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.tmp = BENCH / "results" / f"tmp-{os.getpid()}"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.upstream = Upstream(self.tmp)
        self.references: dict[str, ReferenceProxy] = {}  # started when first wanted, kept for the run
        self.skipped: dict[str, str] = {}  # reference proxy -> why it could not run
        self.ours: OurProxy | None = None
        self.rate_seen: dict[str, float] = {}
        self.results: dict[str, Any] = {"plan": {k: (str(v) if isinstance(v, Path) else sorted(v) if isinstance(v, set) else v)
                                                 for k, v in plan.__dict__.items()}}

    # targets

    def want(self, name: str) -> bool:
        return name in self.plan.targets

    def get_reference(self, name: str) -> ReferenceProxy | None:
        """A reference proxy (LiteLLM, Portkey), started on first use; None if not wanted or it cannot run."""
        if not self.want(name) or name in self.skipped:
            return None
        if name not in self.references:
            log(f"starting {LABEL[name]} …")
            try:
                ref = self.references[name] = REFERENCE_PROXIES[name](self.upstream, self.tmp)
                log(f"{LABEL[name]} {ref.version} up in {ref.startup_s:.1f}s (idle CPU {ref.idle_cpu_percent}%)")
                self.results[name] = ref.describe()
            except Exception as exc:  # noqa: BLE001 - anything: report and go on without it
                self.skipped[name] = str(exc).strip()
                log(f"{LABEL[name]} SKIPPED: {self.skipped[name]}")
                self.results[name] = {"skipped": self.skipped[name]}
                return None
        return self.references[name]

    def start_ours(self, label: str) -> OurProxy | None:
        if not self.want("ours"):
            return None
        self.ours = OurProxy(self.upstream, self.tmp, label)
        return self.ours

    def settle(self) -> float:
        """Before a measurement: no proxy still busy with an earlier run (see `settle`)."""
        pids = [p.proc.pid for p in (self.ours, *self.references.values()) if p is not None and p.proc.alive()]
        return settle(pids)

    def duration_for(self, name: str, conns: int) -> float:
        """Long enough for about 5 rounds of every connection at the target's last measured
        rate (LiteLLM at 256 connections takes ~3 s per round: a 3 s run would count one round
        and miss the requests in flight at the end), but never under --duration; at most 15 s."""
        rate = self.rate_seen.get(name, {"direct": 20000.0, "ours": 2000.0, "litellm": 60.0, "portkey": 1000.0}[name])
        cap = 8.0 if self.plan.quick else 15.0
        return max(self.plan.duration, min(cap, 5 * conns / max(rate, 1.0)))

    def note_rate(self, leg: Leg, run: dict[str, Any]) -> None:
        """Remember a target's rate, for `duration_for`."""
        if run["rps"] > 0:
            self.rate_seen[leg.name] = run["rps"]

    def targets(self, ours: OurProxy | None) -> list[Target]:
        found = []
        if self.want("direct"):
            found.append(direct_target(self.upstream.port))
        if ours is not None:
            found.append(ours.target)
        for name in REFERENCES:
            ref = self.get_reference(name)
            if ref is not None:
                found.append(ref.target)
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

    def run(self) -> None:
        plan = self.plan
        self.results["machine"] = machine_info()
        self.results["started"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        t0, cpu0 = time.monotonic(), cpu_counters()
        if "b" in plan.only or "e" in plan.only:
            scenarios.capacity(self)
        for letter in SCENARIOS:
            if letter in plan.only:
                try:
                    RUNS[letter](self)
                except KeyboardInterrupt:
                    raise
                except Exception as exc:  # noqa: BLE001 - report it, run the other scenarios
                    import traceback

                    log(f"scenario {letter} FAILED: {type(exc).__name__}: {exc}")
                    self.results.setdefault("failed", {})[letter] = traceback.format_exc()[-3000:]
                    if self.ours is not None:  # its log and rows still tell what happened
                        self.results.setdefault("failed_ours", {})[letter] = self.finish_ours(self.ours, 0)
        self.results["seconds"] = round(time.monotonic() - t0, 1)
        self.results["upstream_served_by_tag"] = self.upstream.stats()["by_tag"]  # every target's calls reached it
        # how busy the machine was: the bench itself keeps about 2 runnable; steal is time the VM's host took
        self.results["machine"]["loadavg_at_end"] = os.getloadavg()
        spent = [b - a for a, b in zip(cpu0, cpu_counters())]
        self.results["machine"]["steal_percent"] = round(100 * spent[7] / max(1, sum(spent[:8])), 1) if len(spent) > 7 else None
        for ref in self.references.values():
            ref.proc.stop()

    def close(self) -> None:
        Process.stop_all()
        if not self.plan.keep_tmp:
            logs = self.plan.out / "logs"
            logs.mkdir(parents=True, exist_ok=True)
            for f in self.tmp.glob("*.log"):
                shutil.copy(f, logs / f.name)
            shutil.rmtree(self.tmp, ignore_errors=True)


#: What each scenario letter runs (bench/scenarios.py, bench/scenario_responses.py).
RUNS: dict[str, Callable[[Bench], None]] = {
    "a": scenarios.sequential_calls,
    "b": scenarios.concurrency_sweep,
    "c": scenarios.streams,
    "d": scenarios.recorder_alone,
    "e": scenarios.memory,
    "f": scenario_responses.run,
}


def main(argv: list[str] | None = None) -> int:
    plan = parse_args(argv, __doc__.split("\n\n")[0])
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
