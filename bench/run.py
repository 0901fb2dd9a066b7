"""Run the benchmark: direct to a fake upstream, through our proxy, through LiteLLM, side by side.

    python bench/run.py                      # everything (about 10-12 minutes on 2 cores)
    python bench/run.py --quick              # short runs, for iterating (about 2-3 minutes)
    python bench/run.py --only b --targets direct,ours -c 32 --latencies 0 --quick   # one cell, seconds

Scenarios (see bench/README.md): a sequential latency, b concurrency sweep, c streaming,
d recorder alone (± a Datasette reader), e memory over 100,000 requests.

Processes and cores: the proxy under test (ours or LiteLLM, one at a time under load) is
pinned to core 0; the fake upstream, wrk, the Python clients and this script to core 1.
Pairs are interleaved (the order of targets rotates every round) and medians of rounds
are reported, with ratios taken per round and then the median.

Results: RESULTS_DIR/results.md, results.json and bench.png (RESULTS_DIR is bench/results
for a full run, bench/results/quick for --quick or a partial run, or --out). A full run
also puts the table into bench/README.md between the `results:start/end` markers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

import clients  # noqa: E402

PY = sys.executable
LITELLM_VENV = BENCH / ".venv-litellm"
LITELLM_CONFIG = BENCH / "litellm" / "config.yaml"
LITELLM_PIN = "1.106.12"
WRK_POST = BENCH / "wrk" / "post.lua"
WRK_DATASETTE = BENCH / "wrk" / "datasette.lua"
PROXY_CPU, LOAD_CPU = "0", "1"

STREAM_CHUNKS, STREAM_GAP_MS = 50, 2
#: "#N#" is replaced per request (wrk: bench/wrk/post.lua; Python clients: Target.request), so that
#: every request is unique: no cache or merging of identical concurrent requests can answer it.
MESSAGES = [{"role": "user", "content": "Hello, this is benchmark request #N#. Please answer briefly."}]
RUN_ID = secrets.token_hex(4)
_unique = iter(range(1, 1 << 62))
#: Environment variables the proxy reads; never inherited from the caller's shell.
STRIPPED_PREFIXES = ("OPENAI_", "AZURE_", "HYPERBOLIC_", "DATABASE_URL", "PANEL_", "STUDY_", "LITELLM_")

TARGET_NAMES = ("direct", "ours", "litellm")
LABEL = {"direct": "direct", "ours": "ours", "litellm": "LiteLLM"}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


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
    p.add_argument("--only", default="a,b,c,d,e", help="scenarios to run, e.g. a,b (default: all)")
    p.add_argument("--targets", default="direct,ours,litellm", help="subset of direct,ours,litellm")
    p.add_argument("-c", "--concurrency", default="1,8,32,128,256", help="scenario b connection counts")
    p.add_argument("--latencies", default="0,50", help="scenario b upstream latencies in ms")
    p.add_argument("--reps", type=int, help="rounds per scenario b cell (default 3, quick 1)")
    p.add_argument("--duration", type=float, help="minimum seconds per wrk run in scenario b (default 3, quick 2)")
    p.add_argument("--recorder-rows", type=int, help="rows per scenario d run (default 100000, quick 20000)")
    p.add_argument("--memory-requests", type=int, help="requests in scenario e (default 100000, quick 20000)")
    p.add_argument("--out", type=Path, help="results directory (default bench/results, or bench/results/quick)")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temporary databases and logs")
    a = p.parse_args(argv)
    only = {s.strip() for s in a.only.split(",") if s.strip()}
    if not only <= set("abcde"):
        p.error(f"--only takes letters among a,b,c,d,e, not {a.only!r}")
    targets = [t.strip() for t in a.targets.split(",") if t.strip()]
    if not set(targets) <= set(TARGET_NAMES):
        p.error(f"--targets takes direct, ours, litellm, not {a.targets!r}")
    targets = [t for t in TARGET_NAMES if t in targets]
    concurrency = [int(x) for x in a.concurrency.split(",")]
    latencies = [int(x) for x in a.latencies.split(",")]
    q = a.quick
    full = (
        not q and only == set("abcde") and targets == list(TARGET_NAMES)
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


# -- processes -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(cpu: str) -> list[str]:
    return ["taskset", "-c", cpu] if PINNING else []


PINNING = bool(shutil.which("taskset")) and (os.cpu_count() or 1) >= 2


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(STRIPPED_PREFIXES)}
    env.update(extra)
    return env


class Process:
    """A child process of ours, its output in a log file; stopped by its own pid only."""

    running: list[Process] = []

    def __init__(self, name: str, cmd: list[str], log_path: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.name, self.cmd, self.log_path = name, cmd, log_path
        self.log_file = open(log_path, "wb")
        self.popen = subprocess.Popen(
            cmd, stdout=self.log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=cwd, start_new_session=True,
        )
        Process.running.append(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 35.0) -> int | None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"{self.name} (pid {self.pid}) did not stop within {timeout:.0f}s of SIGTERM: killing it")
                self.popen.kill()
                self.popen.wait()
        self.log_file.close()
        if self in Process.running:
            Process.running.remove(self)
        return self.popen.returncode

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    @classmethod
    def stop_all(cls) -> None:
        for proc in list(cls.running):
            with contextlib.suppress(Exception):
                proc.stop(timeout=10)


def http_get(port: int, path: str, timeout: float = 5.0, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_http(port: int, path: str, proc: Process, timeout: float, headers: dict[str, str] | None = None) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited with status {proc.popen.returncode}:\n{proc.tail()}")
        try:
            status, _ = http_get(port, path, timeout=2.0, headers=headers)
            if status == 200:
                return time.monotonic() - start
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name} did not answer {path} within {timeout:.0f}s:\n{proc.tail()}")


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settle(pids: list[int], timeout: float = 60.0, window: float = 0.25, idle_cpu_s: float = 0.01) -> float:
    """Wait until none of these processes uses CPU (less than `idle_cpu_s` per `window`).

    LiteLLM goes on working through requests that wrk abandoned when a run ended (seconds of
    backlog at 256 connections), and our recorder may still be writing: either would steal
    core 0 from the next measurement. Returns the seconds waited.
    """
    start = time.monotonic()
    alive = [p for p in pids if Path(f"/proc/{p}").exists()]
    while alive and time.monotonic() - start < timeout:
        before = {p: cpu_seconds(p) for p in alive if Path(f"/proc/{p}").exists()}
        time.sleep(window)
        busy = [p for p, t in before.items() if Path(f"/proc/{p}").exists() and cpu_seconds(p) - t > idle_cpu_s]
        if not busy:
            break
    return time.monotonic() - start


# -- the three targets -----------------------------------------------------------------------


class Upstream:
    def __init__(self, tmp: Path) -> None:
        ready = tmp / "upstream.port"
        self.proc = Process(
            "fake upstream",
            [*pinned(LOAD_CPU), PY, str(BENCH / "fake_upstream.py"), "--port", "0", "--ready-file", str(ready)],
            tmp / "upstream.log",
        )
        start = time.monotonic()
        while not ready.exists():
            if not self.proc.alive() or time.monotonic() - start > 20:
                raise RuntimeError(f"the fake upstream did not start:\n{self.proc.tail()}")
            time.sleep(0.02)
        self.port = int(ready.read_text())
        self.base = f"http://127.0.0.1:{self.port}"

    def served(self, tag: str) -> int:
        _, body = http_get(self.port, "/__bench/stats")
        return int(json.loads(body)["by_tag"].get(tag, 0))


@dataclass
class Target:
    name: str
    port: int
    paths: dict[str, str]  # kind ("lat0", "lat50", "stream") -> path
    models: dict[str, str]
    auth: str | None = None

    def body(self, kind: str, stream: bool = False) -> bytes:
        payload: dict[str, Any] = {"model": self.models[kind], "messages": MESSAGES, "max_tokens": 16}
        if stream:
            payload["stream"] = True
        return json.dumps(payload, separators=(",", ":")).encode()

    def url(self, kind: str) -> str:
        return f"http://127.0.0.1:{self.port}{self.paths[kind]}"

    def request(self, kind: str, stream: bool = False) -> bytes:
        """One request, its body made unique."""
        body = self.body(kind, stream).replace(b"#N#", f"{RUN_ID}-py-{next(_unique)}".encode())
        return clients.build_request("127.0.0.1", self.port, self.paths[kind], body, self.auth)

    def requests(self, kind: str, count: int, stream: bool = False) -> list[bytes]:
        return [self.request(kind, stream) for _ in range(count)]


def direct_target(upstream: Upstream) -> Target:
    p = "/v1/chat/completions"
    return Target(
        "direct", upstream.port,
        {"lat0": f"/t-direct{p}", "lat50": f"/t-direct/lat-50{p}", "stream": f"/t-direct/chunks-{STREAM_CHUNKS}/gap-{STREAM_GAP_MS}{p}"},
        {"lat0": "bench-model", "lat50": "bench-model", "stream": "bench-model"},
    )


class OurProxy:
    """`python -m proxy serve` with full logging into a fresh SQLite file, pinned to core 0."""

    def __init__(self, upstream: Upstream, tmp: Path, label: str) -> None:
        self.tmp, self.label = tmp, label
        self.db = tmp / f"tmp-{label}.db"
        for suffix in ("", "-wal", "-shm", ".spool.jsonl"):
            Path(str(self.db) + suffix).unlink(missing_ok=True)
        config = tmp / "proxy.toml"
        config.write_text(
            "# written by bench/run.py: the 0 ms upstream is the openai provider (OPENAI_BASE_URL)\n"
            f'[providers.lat50]\nbase_url = "{upstream.base}/t-ours/lat-50/v1"\napi_key_env = "OPENAI_API_KEY"\n\n'
            f'[providers.stream]\nbase_url = "{upstream.base}/t-ours/chunks-{STREAM_CHUNKS}/gap-{STREAM_GAP_MS}/v1"\n'
            'api_key_env = "OPENAI_API_KEY"\n'
        )
        self.port = free_port()
        self.cmd = [
            PY, "-m", "proxy", "serve", "--host", "127.0.0.1", "--port", str(self.port), "--db", str(self.db),
            "--no-ui", "--config", str(config), "--log-level", "warning",
        ]
        env = clean_env(
            OPENAI_API_KEY="sk-bench-upstream", OPENAI_BASE_URL=f"{upstream.base}/t-ours/v1",
            PYTHONPATH=str(ROOT),
        )
        self.proc = Process(f"our proxy ({label})", [*pinned(PROXY_CPU), *self.cmd], tmp / f"proxy-{label}.log", env=env, cwd=tmp)
        self.startup_s = wait_http(self.port, "/healthz", self.proc, timeout=60)
        self.served_before = upstream.served("ours")  # the fake upstream counts for the whole run
        self.target = Target(
            "ours", self.port,
            {"lat0": "/v1/chat/completions", "lat50": "/v1/chat/completions", "stream": "/v1/chat/completions"},
            {"lat0": "openai/bench-model", "lat50": "lat50/bench-model", "stream": "stream/bench-model"},
        )
        self.crashed: str | None = None

    def health(self) -> dict[str, Any]:
        _, body = http_get(self.port, "/healthz")
        return json.loads(body).get("log", {})

    def drain(self, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until the recorder has nothing pending and its `written` count stands still."""
        time.sleep(0.3)  # requests abandoned by the load generator finish upstream first
        start, last = time.monotonic(), None
        while time.monotonic() - start < timeout:
            if not self.proc.alive():
                self.crashed = f"exited with status {self.proc.popen.returncode}: {self.proc.tail(5)}"
                return {}
            try:
                health = self.health()
            except OSError:
                time.sleep(0.1)
                continue
            key = (health.get("pending"), health.get("written"), health.get("spooled"))
            if health.get("pending") == 0 and key == last:
                return health | {"drain_s": round(time.monotonic() - start, 2)}
            last = key
            time.sleep(0.15)
        return (self.health() if self.proc.alive() else {}) | {"drain_timeout": True}

    def stop_and_count(self, completed: int, upstream: Upstream) -> dict[str, Any]:
        """Stop (SIGTERM, graceful), then compare the rows with what the clients got."""
        health = self.drain()
        served = upstream.served("ours") - self.served_before
        rss = rss_kib(self.pid) if self.proc.alive() else None
        code = self.proc.stop()
        if self.crashed is None and code not in (0, None, -signal.SIGTERM):
            self.crashed = f"exit status {code} after SIGTERM"
        account = count_rows(self.db)
        spool = Path(str(self.db) + ".spool.jsonl")
        result = {
            "completed_by_clients": completed,
            "rows": account["rows"],
            "attempt_rows": account["attempts"],
            "upstream_calls": served,
            "rows_lost": max(0, completed - account["rows"]) + max(0, served - account["attempts"]),
            "rows_extra": max(0, account["rows"] - completed),
            "by_status": account["by_status"],
            "by_cache": account["by_cache"],  # {"None": n} unless the proxy answered from a cache or merged requests
            "spool_left": spool.exists() and spool.stat().st_size > 0,
            "recorder": {k: health.get(k) for k in ("written", "spooled", "lost", "refused", "degraded", "drain_s", "drain_timeout") if k in health},
            "rss_kib_at_end": rss,
            "exit_code": code,
            "crashed": self.crashed,
            "log_tail": self.proc.tail(8) if (self.crashed or account["errors"]) else "",
        }
        return result

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cleanup(self, keep: bool) -> None:
        if keep:
            return
        for suffix in ("", "-wal", "-shm", ".spool.jsonl"):
            Path(str(self.db) + suffix).unlink(missing_ok=True)


def count_rows(db: Path) -> dict[str, Any]:
    if not db.exists():
        return {"rows": 0, "attempts": 0, "by_status": {}, "by_cache": {}, "errors": 0}
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        rows = conn.execute("SELECT count(*) FROM inference_runs").fetchone()[0]
        attempts = conn.execute("SELECT count(*) FROM attempts").fetchone()[0]
        by_cache = {str(k): v for k, v in conn.execute("SELECT cache, count(*) FROM inference_runs GROUP BY 1")}
        by_status: dict[str, int] = {}
        for status, error, n in conn.execute(
            "SELECT status_code, coalesce(error, ''), count(*) FROM inference_runs GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 12"
        ):
            by_status[f"{status}{' ' + error[:120] if error else ''}"] = n
    finally:
        conn.close()
    errors = sum(n for k, n in by_status.items() if k != "200")
    return {"rows": rows, "attempts": attempts, "by_status": by_status, "by_cache": by_cache, "errors": errors}


class LiteLLM:
    """LiteLLM's proxy, one worker, no database, pinned to core 0; its own venv."""

    def __init__(self, upstream: Upstream, tmp: Path) -> None:
        exe = LITELLM_VENV / "bin" / "litellm"
        if not exe.exists():
            install_log = BENCH / "results" / "litellm-install.log"
            why = f"{exe} is missing: run `make bench` (it installs litellm[proxy]=={LITELLM_PIN} into {LITELLM_VENV.relative_to(ROOT)})"
            if install_log.exists() and not (LITELLM_VENV / ".installed").exists():  # the install failed: say why
                lines = install_log.read_text(errors="replace").strip().splitlines()
                errors = [l for l in lines if "error" in l.lower()] or lines
                why += f"; the last install attempt ended with: {' | '.join(l.strip() for l in errors[-3:])}"
            raise RuntimeError(why)
        self.version = subprocess.run(
            [str(LITELLM_VENV / "bin" / "python"), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        config = tmp / "litellm.yaml"
        config.write_text(LITELLM_CONFIG.read_text().replace("UPSTREAM", upstream.base))
        self.key = "sk-bench-" + secrets.token_hex(16)  # generated per run, never written to disk
        self.port = free_port()
        self.cmd = [str(exe), "--config", str(config), "--host", "127.0.0.1", "--port", str(self.port), "--num_workers", "1"]
        # LITELLM_LOCAL_MODEL_COST_MAP: this machine has no internet; without it LiteLLM retries
        # fetching its price list from GitHub for ~10 s at start-up, then uses the same local copy.
        env = clean_env(LITELLM_MASTER_KEY=self.key, LITELLM_LOCAL_MODEL_COST_MAP="True")
        self.env_note = "LITELLM_MASTER_KEY=sk-bench-<random per run>, LITELLM_LOCAL_MODEL_COST_MAP=True"
        self.proc = Process("LiteLLM", [*pinned(PROXY_CPU), *self.cmd], tmp / "litellm.log", env=env, cwd=tmp)
        self.startup_s = wait_http(self.port, "/health/liveliness", self.proc, timeout=180)
        self.target = Target(
            "litellm", self.port,
            {"lat0": "/v1/chat/completions", "lat50": "/v1/chat/completions", "stream": "/v1/chat/completions"},
            {"lat0": "bench-model", "lat50": "bench-model-lat50", "stream": "bench-stream"},
            auth=self.key,
        )
        time.sleep(1.0)
        before = cpu_seconds(self.proc.pid)
        time.sleep(2.0)
        self.idle_cpu_percent = round((cpu_seconds(self.proc.pid) - before) / 2.0 * 100, 1)

    def describe(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "command": ("taskset -c 0 " if PINNING else "") + "bench/.venv-litellm/bin/litellm --config <bench/litellm/config.yaml"
                       " rendered> --host 127.0.0.1 --port <free port> --num_workers 1",
            "environment": self.env_note,
            "config": "bench/litellm/config.yaml (UPSTREAM replaced by the fake upstream's address)",
            "startup_s": round(self.startup_s, 1),
            "idle_cpu_percent": self.idle_cpu_percent,
        }


# -- load generation -------------------------------------------------------------------------


def wrk(url: str, body: bytes, conns: int, duration: float, auth: str | None = None,
        stop_after: int | None = None, script: Path = WRK_POST, cpu: str = LOAD_CPU) -> dict[str, Any]:
    env = dict(os.environ, BENCH_BODY=body.decode(), BENCH_AUTH=auth or "", BENCH_RUN_ID=f"{RUN_ID}-{next(_unique)}")
    if stop_after:
        env["BENCH_STOP_AFTER"] = str(stop_after)
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
            found.append(direct_target(self.upstream))
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
        d = direct_target(self.upstream)
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
        targets = self.targets(ours)
        conns = {t.name: clients.Conn("127.0.0.1", t.port) for t in targets}
        by_name = {t.name: t for t in targets}
        for t in targets:  # warm-up: connections, caches
            for request in t.requests("lat0", 50 if t.name != "litellm" else 20):
                conns[t.name].call(request)
        blocks: dict[str, list[dict[str, float]]] = {t.name: [] for t in targets}
        all_ms: dict[str, list[float]] = {t.name: [] for t in targets}
        failures: dict[str, int] = {t.name: 0 for t in targets}
        completed_ours = 50
        for r in range(plan.seq_rounds):
            for name in rotate([t.name for t in targets], r):
                self.settle()
                conns[name].open()  # a fresh connection (servers drop idle ones), warmed by one untimed call
                conns[name].call(by_name[name].request("lat0"))
                if name == "ours":
                    completed_ours += 1
                lat = []
                for request in by_name[name].requests("lat0", plan.seq_block):
                    status, ns, _ = conns[name].call(request)
                    if status != 200:
                        failures[name] += 1
                    lat.append(ns / 1e6)
                blocks[name].append({"p50": pct(lat, 50), "p99": pct(lat, 99)})
                all_ms[name] += lat
                if name == "ours":
                    completed_ours += len(lat)
        for c in conns.values():
            c.close()
        out: dict[str, Any] = {"rounds": plan.seq_rounds, "block": plan.seq_block, "targets": {}}
        for name in blocks:
            out["targets"][name] = {
                "p50_ms": med([b["p50"] for b in blocks[name]]),
                "p99_ms": med([b["p99"] for b in blocks[name]]),
                "pooled_p50_ms": pct(all_ms[name], 50),
                "pooled_p99_ms": pct(all_ms[name], 99),
                "rps": 1000 / statistics.mean(all_ms[name]),
                "non_200": failures[name],
                "requests": len(all_ms[name]),
            }
        if "direct" in blocks:
            for name in blocks:
                if name == "direct":
                    continue
                out["targets"][name]["added_p50_ms"] = med([b["p50"] - d["p50"] for b, d in zip(blocks[name], blocks["direct"])])
                out["targets"][name]["added_p99_ms"] = med([b["p99"] - d["p99"] for b, d in zip(blocks[name], blocks["direct"])])
        out["ours_rows"] = self.finish_ours(ours, completed_ours)
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
                targets = self.targets(ours)
                completed_ours = 0
                for t in targets:  # warm-up (also opens the connections)
                    self.settle()
                    run = wrk(t.url(kind), t.body(kind), conns, plan.warmup, t.auth)
                    if t.name == "ours":
                        completed_ours += run["requests"]
                runs: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
                by_name = {t.name: t for t in targets}
                for r in range(plan.reps):
                    for name in rotate(list(by_name), r):
                        t = by_name[name]
                        waited = self.settle()
                        run = wrk(t.url(kind), t.body(kind), conns, self.duration_for(name, conns), t.auth)
                        run["settled_s"] = round(waited, 2)
                        runs[name].append(run)
                        if run["rps"] > 0:
                            self.rate_seen[name] = run["rps"]
                        if name == "ours":
                            completed_ours += run["requests"]
                cell: dict[str, Any] = {"latency_ms": latency, "conns": conns, "targets": {}}
                for name, rs in runs.items():
                    cell["targets"][name] = {
                        "rps": med([x["rps"] for x in rs]),
                        "p50_ms": med([x["p50_ms"] for x in rs]),
                        "p99_ms": med([x["p99_ms"] for x in rs]),
                        "errors": sum(x["errors"] for x in rs),
                        "error_kinds": _merge([x["error_kinds"] for x in rs]),
                        "runs": rs,
                    }
                if "ours" in runs and "litellm" in runs:
                    cell["ours_over_litellm"] = med([o["rps"] / l["rps"] if l["rps"] else float("inf")
                                                     for o, l in zip(runs["ours"], runs["litellm"])])
                if "direct" in runs and "litellm" in runs:  # the best any proxy could do against LiteLLM here
                    cell["direct_over_litellm"] = med([d["rps"] / l["rps"] if l["rps"] else float("inf")
                                                       for d, l in zip(runs["direct"], runs["litellm"])])
                if "ours" in runs and "direct" in runs:
                    cell["ours_over_direct"] = med([o["rps"] / d["rps"] for o, d in zip(runs["ours"], runs["direct"])])
                cell["ours_rows"] = self.finish_ours(ours, completed_ours)
                cells.append(cell)
                parts = [f"{LABEL[n]} {v['rps']:,.0f} req/s p99 {v['p99_ms']:.1f} ms err {v['errors']}" for n, v in cell["targets"].items()]
                ratio = f" | ours÷LiteLLM {cell['ours_over_litellm']:.1f}x" if "ours_over_litellm" in cell else ""
                lost = f" | rows lost {cell['ours_rows']['rows_lost']}" if cell.get("ours_rows") else ""
                log(f"  {latency:>2} ms c={conns:<3} " + " | ".join(parts) + ratio + lost)
        self.results["b"] = {"reps": plan.reps, "duration_s": plan.duration, "cells": cells}

    # c. streaming

    def scenario_c(self) -> None:
        plan = self.plan
        log(f"scenario c: streams of {STREAM_CHUNKS} chunks {STREAM_GAP_MS} ms apart, "
            f"{plan.stream_rounds} rounds x {plan.stream_block} streams per target, interleaved")
        ours = self.start_ours("c")
        targets = self.targets(ours)
        conns = {t.name: clients.Conn("127.0.0.1", t.port) for t in targets}
        by_name = {t.name: t for t in targets}
        for t in targets:
            for request in t.requests("stream", 3, stream=True):
                conns[t.name].stream(request)
        blocks: dict[str, list[dict[str, float]]] = {t.name: [] for t in targets}
        chunks: dict[str, list[int]] = {t.name: [] for t in targets}
        bad: dict[str, int] = {t.name: 0 for t in targets}
        completed_ours = 3
        for r in range(plan.stream_rounds):
            for name in rotate([t.name for t in targets], r):
                self.settle()
                conns[name].open()  # a fresh connection (servers drop idle ones), warmed by one untimed stream
                conns[name].stream(by_name[name].request("stream", stream=True))
                if name == "ours":
                    completed_ours += 1
                ttft, gaps, total = [], [], []
                for request in by_name[name].requests("stream", plan.stream_block, stream=True):
                    timing = conns[name].stream(request)
                    if timing.status != 200 or not timing.done or len(timing.event_ns) < STREAM_CHUNKS or timing.ttft_ns < 0:
                        bad[name] += 1
                    if timing.ttft_ns >= 0:
                        ttft.append(timing.ttft_ns / 1e6)
                    ev = timing.event_ns
                    gaps += [(b - a) / 1e6 for a, b in zip(ev, ev[1:])]
                    if ev:
                        total.append(ev[-1] / 1e6)
                    chunks[name].append(len(ev))
                    if name == "ours":
                        completed_ours += 1
                blocks[name].append({"ttft_p50": pct(ttft, 50), "ttft_p99": pct(ttft, 99), "gap_p50": pct(gaps, 50),
                                     "gap_p99": pct(gaps, 99), "total_p50": pct(total, 50)})
        for c in conns.values():
            c.close()
        out: dict[str, Any] = {"chunks": STREAM_CHUNKS, "gap_ms": STREAM_GAP_MS, "rounds": plan.stream_rounds,
                               "block": plan.stream_block, "targets": {}}
        for name, bs in blocks.items():
            out["targets"][name] = {k + "_ms": med([b[k] for b in bs]) for k in bs[0]}
            out["targets"][name]["content_chunks_median"] = med(chunks[name])
            out["targets"][name]["incomplete_streams"] = bad[name]
        if "direct" in blocks:
            for name, bs in blocks.items():
                if name == "direct":
                    continue
                for k in ("ttft_p50", "ttft_p99", "gap_p50", "gap_p99"):
                    out["targets"][name][f"added_{k}_ms"] = med([b[k] - d[k] for b, d in zip(bs, blocks["direct"])])
        out["ours_rows"] = self.finish_ours(ours, completed_ours)
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

    # all

    def run(self) -> None:
        plan = self.plan
        self.results["machine"] = machine_info()
        self.results["started"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        t0 = time.monotonic()
        if "b" in plan.only or "e" in plan.only:
            self.capacity()
        for letter in "abcde":
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


def _merge(dicts: list[dict[str, int]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            merged[k] = merged.get(k, 0) + v
    return merged


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError):
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split(":", 1)[1].strip()
    wrk_version = ""
    with contextlib.suppress(Exception):
        wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.splitlines()[0].split(" Copyright")[0].strip()
    commit = ""
    with contextlib.suppress(Exception):
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "proxy"], capture_output=True, text=True).stdout.strip()
        if dirty:
            commit += " + uncommitted changes in proxy/"
    packages = {}
    for name in ("uvicorn", "uvloop", "httptools", "starlette", "aiohttp", "sqlalchemy", "aiosqlite", "orjson"):
        with contextlib.suppress(Exception):
            import importlib.metadata as md

            packages[name] = md.version(name)
    return {
        "cpu": model, "cores": os.cpu_count(), "memory": mem, "kernel": platform.release(),
        "python": platform.python_version(), "wrk": wrk_version, "loadavg_at_start": os.getloadavg(),
        "pinning": "proxy under test on core 0; fake upstream, wrk, Python clients and the harness on core 1" if PINNING else "none (taskset missing or 1 core)",
        "commit": commit, "packages": packages,
    }


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
