"""The servers of a bench run: the fake upstream and our proxy, each a child process (the others: references.py).

Our proxy runs from this tree (`PYTHONPATH` is the repository root, whatever the venv's
editable install points at), with full logging into a fresh SQLite file per scenario;
`stop_and_count` compares its rows with what the clients received and what the fake
upstream served.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

from procs import (
    LOAD_CPU, PROXY_CPU, PY, ROOT, Process, clean_env, free_port, http_get, pinned, rss_kib, wait_http,
)
from targets import STREAM_CHUNKS, STREAM_GAP_MS, Target

BENCH = Path(__file__).resolve().parent
#: The Responses-to-chat translation, when this tree has it (providers declared `responses = false`).
TRANSLATION = (ROOT / "proxy" / "responses" / "translate.py").exists() or (ROOT / "proxy" / "providers" / "translated.py").exists()


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

    def stats(self) -> dict[str, Any]:
        _, body = http_get(self.port, "/__bench/stats")
        return json.loads(body)

    def served(self, tag: str) -> int:
        return int(self.stats()["by_tag"].get(tag, 0))

    def served_by_endpoint(self, tag: str) -> dict[str, int]:
        return dict(self.stats()["by_endpoint"].get(tag, {}))


class OurProxy:
    """`python -m proxy serve` with full logging into a fresh SQLite file, pinned to core 0."""

    def __init__(self, upstream: Upstream, tmp: Path, label: str) -> None:
        self.tmp, self.label = tmp, label
        self.db = tmp / f"tmp-{label}.db"
        for suffix in ("", "-wal", "-shm", ".spool.jsonl"):
            Path(str(self.db) + suffix).unlink(missing_ok=True)
        config = tmp / "proxy.toml"
        stream = f"chunks-{STREAM_CHUNKS}/gap-{STREAM_GAP_MS}"
        config.write_text(
            "# written by bench/run.py: the 0 ms upstream is the openai provider (OPENAI_BASE_URL)\n"
            f'[providers.lat50]\nbase_url = "{upstream.base}/t-ours/lat-50/v1"\napi_key_env = "OPENAI_API_KEY"\n\n'
            f'[providers.stream]\nbase_url = "{upstream.base}/t-ours/{stream}/v1"\napi_key_env = "OPENAI_API_KEY"\n\n'
            "# the same upstreams as chat-only servers: the proxy translates Responses calls to chat/completions\n"
            f'[providers.chatonly]\nkind = "openai"\nbase_url = "{upstream.base}/t-ours/v1"\nno_key = true\nresponses = false\n\n'
            f'[providers.chatonly-stream]\nkind = "openai"\nbase_url = "{upstream.base}/t-ours/{stream}/v1"\n'
            "no_key = true\nresponses = false\n"
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
        self.endpoints_before = upstream.served_by_endpoint("ours")
        models = {"lat0": "openai/bench-model", "lat50": "lat50/bench-model", "stream": "stream/bench-model",
                  "chatonly": "chatonly/bench-model", "chatonly-stream": "chatonly-stream/bench-model"}
        self.target = Target("ours", self.port, dict.fromkeys(models, "/v1"), models)
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
        by_endpoint = {k: v - self.endpoints_before.get(k, 0) for k, v in upstream.served_by_endpoint("ours").items()}
        rss = rss_kib(self.pid) if self.proc.alive() else None
        code = self.proc.stop()
        if self.crashed is None and code not in (0, None, -signal.SIGTERM):
            self.crashed = f"exit status {code} after SIGTERM"
        account = count_rows(self.db)
        journal = Path(str(self.db) + ".journal")  # rows a graceful stop could not write wait there
        result = {
            "completed_by_clients": completed,
            "rows": account["rows"],
            "attempt_rows": account["attempts"],
            "upstream_calls": served,
            "upstream_by_endpoint": {k: v for k, v in by_endpoint.items() if v},
            "rows_lost": max(0, completed - account["rows"]) + max(0, served - account["attempts"]),
            "rows_extra": max(0, account["rows"] - completed),
            "by_status": account["by_status"],
            "by_cache": account["by_cache"],  # {"None": n} unless the proxy answered from a cache or merged requests
            "spool_left": journal.is_dir() and any(journal.iterdir()),
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
