"""The processes of a bench run (starting, pinning, waiting for, measuring, stopping) and its machine.

The proxy under test is pinned to core `PROXY_CPU`; the fake upstream, wrk, the Python
clients and the harness to `LOAD_CPU` (when taskset exists and there are two cores).
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

PY = sys.executable
ROOT = Path(__file__).resolve().parent.parent
PROXY_CPU, LOAD_CPU = "0", "1"
#: Environment variables the proxy reads; never inherited from the caller's shell.
STRIPPED_PREFIXES = ("OPENAI_", "AZURE_", "HYPERBOLIC_", "DATABASE_URL", "PANEL_", "STUDY_", "LITELLM_")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PINNING = bool(shutil.which("taskset")) and (os.cpu_count() or 1) >= 2


def script_scratch(label: str) -> Path:
    """A side script's start: itself pinned to the load generator's core (where pinning is
    possible), and a scratch directory of its own under bench/results/."""
    if PINNING:
        os.sched_setaffinity(0, {int(LOAD_CPU)})
    tmp = ROOT / "bench" / "results" / f"tmp-{label}-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    return tmp


def pinned(cpu: str) -> list[str]:
    return ["taskset", "-c", cpu] if PINNING else []


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


def cpu_counters() -> list[int]:
    """The machine's CPU time counters: /proc/stat's `cpu` line (user nice system idle iowait irq softirq steal …)."""
    with contextlib.suppress(OSError):
        return [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return []


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
