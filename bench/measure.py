"""Load generation and interleaved measurement, shared by every scenario that compares legs.

`sequential`, `streaming` and `wrk_rounds` measure a list of `Leg`s in rounds whose order
rotates every round, so that the drift of a shared machine hits every leg alike. Each
returns a `Measured`: per leg, the values of every round and their medians; "added" values
and ratios are taken per round (leg − base, leg ÷ base) and then the median of those.
"""

from __future__ import annotations

import json
import math
import os
import signal
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import clients
from procs import LOAD_CPU, cpu_seconds, pinned
from targets import RUN_ID, Leg, unique

BENCH = Path(__file__).resolve().parent
WRK_POST = BENCH / "wrk" / "post.lua"



def wrk_together(loads: dict[str, tuple[str, bytes]], conns: int, duration: float) -> dict[str, dict[str, Any]]:
    """One wrk run per (url, body) of `loads`, all at the same time: proxies that share a core
    each get a share of it, so the ratio of their req/s is that of their CPU cost per call."""
    found: dict[str, dict[str, Any]] = {}
    threads = [threading.Thread(target=lambda name=name, url=url, body=body: found.update({name: wrk(url, body, conns, duration)}))
               for name, (url, body) in loads.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    missing = set(loads) - set(found)
    if missing:
        raise RuntimeError(f"wrk failed for {sorted(missing)} (see the output above)")
    return found


def wrk(url: str, body: bytes, conns: int, duration: float, auth: str | None = None,
        stop_after: int | None = None, script: Path = WRK_POST, cpu: str = LOAD_CPU,
        headers: dict[str, str] | None = None, delay_ms: int | None = None) -> dict[str, Any]:
    """One wrk run; `delay_ms` paces each connection (a wait before each request)."""
    env = dict(os.environ, BENCH_BODY=body.decode(), BENCH_AUTH=auth or "", BENCH_RUN_ID=f"{RUN_ID}-{unique()}",
               BENCH_HEADERS="".join(f"{name}: {value}\n" for name, value in (headers or {}).items()))
    if stop_after:
        env["BENCH_STOP_AFTER"] = str(stop_after)
    if delay_ms:
        env["BENCH_DELAY_MS"] = str(delay_ms)
    seconds = max(1, math.ceil(duration))
    cmd = [*pinned(cpu), "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", "30s", "--latency", "-s", str(script), url]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    started = time.monotonic()
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("BENCHSTOPPED"):
            proc.send_signal(signal.SIGINT)  # interrupt wrk's sleep: the thread has stopped
    proc.wait()
    wall = time.monotonic() - started
    summary = next((json.loads(l[len("BENCHJSON "):]) for l in lines if l.startswith("BENCHJSON ")), None)
    if summary is None:
        raise RuntimeError(f"wrk gave no summary: {''.join(lines)[-2000:]}")
    seconds_run = summary["duration_us"] / 1e6
    if stop_after:
        seconds_run = min(seconds_run, wall)
    errors = summary["errors"]
    lat = summary["latency_us"]
    return {
        "requests": summary["requests"],
        "seconds": round(seconds_run, 3),
        "rps": round(summary["requests"] / seconds_run, 1) if seconds_run else 0.0,
        "p50_ms": lat["p50"] / 1000,
        "p90_ms": lat["p90"] / 1000,
        "p99_ms": lat["p99"] / 1000,
        "max_ms": lat["max"] / 1000,
        "errors": sum(errors.values()),
        "error_kinds": {k: v for k, v in errors.items() if v},
    }


class WrkBackground:
    """wrk running until stopped (SIGINT), for the Datasette reader of scenario d."""

    def __init__(self, url: str, conns: int, script: Path, cpu: str) -> None:
        cmd = [*pinned(cpu), "wrk", "-t1", f"-c{conns}", "-d600s", "--timeout", "30s", "-s", str(script), url]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def stop(self) -> dict[str, Any]:
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=30)
        line = next((l for l in out.splitlines() if l.startswith("BENCHJSON ")), None)
        if line is None:
            return {"error": out[-500:]}
        summary = json.loads(line[len("BENCHJSON "):])
        seconds = summary["duration_us"] / 1e6
        return {
            "requests": summary["requests"],
            "rps": round(summary["requests"] / seconds, 1) if seconds else 0.0,
            "p50_ms": summary["latency_us"]["p50"] / 1000,
            "p99_ms": summary["latency_us"]["p99"] / 1000,
            "errors": sum(summary["errors"].values()),
        }


# -- statistics ------------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def med(values: list[float]) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(values) if values else float("nan")


def rotate(items: list[str], k: int) -> list[str]:
    k %= max(1, len(items))
    return items[k:] + items[:k]


def merge_counts(dicts: list[dict[str, int]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            merged[k] = merged.get(k, 0) + v
    return merged


# -- interleaved rounds ----------------------------------------------------------------------


@dataclass
class Measured:
    """Per leg: `targets` (medians and counts, what the results keep), `rounds` (one dict per round)."""

    targets: dict[str, dict[str, Any]] = field(default_factory=dict)
    rounds: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    completed_ours: int = 0  # answers our proxy gave, warm-ups included: each is a row in its log

    def added(self, name: str, base: str, key: str) -> float:
        """Median over rounds of (name − base) for one value."""
        return med([a[key] - b[key] for a, b in zip(self.rounds[name], self.rounds[base])])

    def ratio(self, name: str, base: str, key: str = "rps") -> float:
        """Median over rounds of name ÷ base for one value."""
        return med([a[key] / b[key] if b[key] else math.inf for a, b in zip(self.rounds[name], self.rounds[base])])

    def add_added(self, base: str, keys: tuple[str, ...]) -> None:
        """`added_<key>_ms` (leg − base, per round) on every leg but the base, when the base was measured."""
        if base not in self.rounds:
            return
        for name in self.rounds:
            if name != base:
                for key in keys:
                    self.targets[name][f"added_{key}_ms"] = self.added(name, base, key)


Settle = Callable[[], float]


def _rounds(legs: list[Leg], count: int, settle: Settle, measure: Callable[[Leg], dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """`count` rounds of every leg, the order rotating each round, each after `settle()`."""
    by_name = {leg.name: leg for leg in legs}
    out: dict[str, list[dict[str, Any]]] = {leg.name: [] for leg in legs}
    for r in range(count):
        for name in rotate(list(by_name), r):
            waited = settle()
            values = measure(by_name[name])
            values["settled_s"] = round(waited, 2)
            out[name].append(values)
    return out


def sequential(legs: list[Leg], rounds: int, block: int, settle: Settle) -> Measured:
    """Non-streaming calls one at a time: per round and leg, p50 and p99 of `block` calls."""
    conns = {leg.name: clients.Conn("127.0.0.1", leg.target.port) for leg in legs}
    m = Measured()
    samples: dict[str, list[float]] = {leg.name: [] for leg in legs}
    failures = dict.fromkeys(samples, 0)
    for leg in legs:  # warm-up: connections, caches
        warm = leg.requests(20 if leg.target.name == "litellm" else 50)
        for request in warm:
            conns[leg.name].call(request)
        m.completed_ours += len(warm) if leg.on_ours else 0

    def measure(leg: Leg) -> dict[str, Any]:
        conn = conns[leg.name]
        conn.open()  # a fresh connection (servers drop idle ones), warmed by one untimed call
        requests = leg.requests(block + 1)
        conn.call(requests[0])
        lat = []
        for request in requests[1:]:
            status, ns, _ = conn.call(request)
            failures[leg.name] += status != 200
            lat.append(ns / 1e6)
        samples[leg.name] += lat
        m.completed_ours += len(requests) if leg.on_ours else 0
        return {"p50": pct(lat, 50), "p99": pct(lat, 99)}

    m.rounds = _rounds(legs, rounds, settle, measure)
    for c in conns.values():
        c.close()
    for name, rs in m.rounds.items():
        m.targets[name] = {
            "p50_ms": med([b["p50"] for b in rs]),
            "p99_ms": med([b["p99"] for b in rs]),
            "pooled_p50_ms": pct(samples[name], 50),
            "pooled_p99_ms": pct(samples[name], 99),
            "rps": 1000 / statistics.mean(samples[name]),
            "non_200": failures[name],
            "requests": len(samples[name]),
        }
    return m


STREAM_KEYS = ("ttft_p50", "ttft_p99", "gap_p50", "gap_p99", "total_p50")


def streaming(legs: list[Leg], rounds: int, block: int, settle: Settle, tokens: int) -> Measured:
    """Streams one at a time: time to the first token event, gaps between token events, whole stream.

    A stream counts as incomplete unless it is a 200 with at least `tokens` token events and
    the event that ends the API's streams.
    """
    conns = {leg.name: clients.Conn("127.0.0.1", leg.target.port) for leg in legs}
    m = Measured()
    received: dict[str, list[int]] = {leg.name: [] for leg in legs}
    bad = dict.fromkeys(received, 0)
    for leg in legs:
        for request in leg.requests(3, stream=True):
            conns[leg.name].stream(request, leg.api.sse)
        m.completed_ours += 3 if leg.on_ours else 0

    def measure(leg: Leg) -> dict[str, Any]:
        conn = conns[leg.name]
        conn.open()  # a fresh connection (servers drop idle ones), warmed by one untimed stream
        requests = leg.requests(block + 1, stream=True)
        conn.stream(requests[0], leg.api.sse)
        ttft, gaps, total = [], [], []
        for request in requests[1:]:
            timing = conn.stream(request, leg.api.sse)
            ev = timing.event_ns
            if timing.status != 200 or not timing.done or len(ev) < tokens or timing.ttft_ns < 0:
                bad[leg.name] += 1
            if timing.ttft_ns >= 0:
                ttft.append(timing.ttft_ns / 1e6)
            gaps += [(b - a) / 1e6 for a, b in zip(ev, ev[1:])]
            if ev:
                total.append(ev[-1] / 1e6)
            received[leg.name].append(len(ev))
        m.completed_ours += len(requests) if leg.on_ours else 0
        return {"ttft_p50": pct(ttft, 50), "ttft_p99": pct(ttft, 99), "gap_p50": pct(gaps, 50),
                "gap_p99": pct(gaps, 99), "total_p50": pct(total, 50)}

    m.rounds = _rounds(legs, rounds, settle, measure)
    for c in conns.values():
        c.close()
    for name, rs in m.rounds.items():
        m.targets[name] = {f"{k}_ms": med([b[k] for b in rs]) for k in STREAM_KEYS}
        m.targets[name]["content_chunks_median"] = med(received[name])
        m.targets[name]["incomplete_streams"] = bad[name]
    return m


def wrk_rounds(legs: list[Leg], conns: int, reps: int, warmup: float, settle: Settle,
               duration_for: Callable[[Leg], float], on_run: Callable[[Leg, dict[str, Any]], None] | None = None,
               pid_of: Callable[[Leg], int | None] | None = None) -> Measured:
    """wrk at `conns` connections, one warm-up run per leg, then `reps` interleaved runs per leg.

    With `pid_of` (the process serving a leg, or None), each run also reports the CPU time
    that process spent per answer, up to when it has settled (its log written): on a shared
    machine, a steadier measure of the work per request than req/s.
    """
    m = Measured()
    for leg in legs:  # warm-up (also opens the connections)
        settle()
        run = wrk(leg.url(), leg.body(), conns, warmup, leg.target.auth, headers=leg.headers())
        m.completed_ours += run["requests"] if leg.on_ours else 0

    def measure(leg: Leg) -> dict[str, Any]:
        pid = pid_of(leg) if pid_of is not None else None
        before = cpu_seconds(pid) if pid else 0.0
        run = wrk(leg.url(), leg.body(), conns, duration_for(leg), leg.target.auth, headers=leg.headers())
        if pid:
            settle()
            run["cpu_us_per_request"] = (cpu_seconds(pid) - before) / max(1, run["requests"]) * 1e6
        m.completed_ours += run["requests"] if leg.on_ours else 0
        if on_run is not None:
            on_run(leg, run)
        return run

    m.rounds = _rounds(legs, reps, settle, measure)
    for name, rs in m.rounds.items():
        m.targets[name] = {
            "rps": med([x["rps"] for x in rs]),
            "p50_ms": med([x["p50_ms"] for x in rs]),
            "p99_ms": med([x["p99_ms"] for x in rs]),
            "errors": sum(x["errors"] for x in rs),
            "error_kinds": merge_counts([x["error_kinds"] for x in rs]),
            "runs": rs,
        }
        if all("cpu_us_per_request" in x for x in rs):
            m.targets[name]["cpu_us_per_request"] = med([x["cpu_us_per_request"] for x in rs])
    return m
