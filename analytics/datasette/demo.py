"""A realistic made-up log, to look at the UI without calling any model, and to test it.

    python -m analytics.datasette.demo demo.db [--rows 600] [--days 3]
    python -m analytics.datasette.demo demo.db --screenshot docs/dashboard.png

Rows are written through the proxy's own `Store` (same schema, same migrations), spread over the
last `days` days up to now, so the dashboard's windows (24h, 7d) find them: four providers with
their own latency, a diurnal load, upstream errors (Azure 502s, Hyperbolic 429s), cache hits and
dedups carrying the cost they saved, sessions, tags and one small study over three models.
`--screenshot` serves the log like `study-query-llm serve` does (under /ui/) and has headless
Chromium photograph the dashboard.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# (provider, model as asked, upstream model, median latency ms, spread, error rate, error status, $/1M in, $/1M out)
MODELS = [
    ("openai", "openai/gpt-4o-mini", "gpt-4o-mini", 620.0, 0.35, 0.01, 500, 0.15, 0.60),
    ("openai", "openai/gpt-4o", "gpt-4o", 1150.0, 0.40, 0.01, 500, 2.50, 10.00),
    ("azure", "azure/gpt-4o-mini", "gpt-4o-mini", 800.0, 0.45, 0.05, 502, 0.15, 0.60),
    ("hyperbolic", "hyperbolic/meta-llama/Llama-3.3-70B-Instruct", "meta-llama/Llama-3.3-70B-Instruct",
     1500.0, 0.55, 0.08, 429, 0.40, 0.40),
    ("mock", "mock/echo", "echo", 4.0, 0.30, 0.0, 500, 0.0, 0.0),
]
WEIGHTS = [0.38, 0.12, 0.2, 0.18, 0.12]
PROMPTS = [
    ("What is the capital of Australia?", "The capital of Australia is Canberra."),
    ("Summarise the plot of Hamlet in one sentence.",
     "Prince Hamlet feigns madness to avenge his father's murder by his uncle Claudius, and nearly everyone dies."),
    ("Translate 'good morning' into French.", "Bonjour."),
    ("Give three uses of a paperclip.", "Holding papers together, resetting a device through a pinhole, and as a zip pull."),
    ("Is 221 a prime number?", "No: 221 = 13 × 17."),
    ("Write a haiku about logging proxies.", "Every call recorded\nlatency, tokens and cost\nnothing is forgotten"),
]
STUDY = "capitals-v1"
STUDY_ITEMS = ["France", "Japan", "Kenya", "Peru"]
STUDY_MODELS = [0, 2, 3]  # indexes into MODELS
ERRORS = {
    500: "upstream 500: The server had an error while processing your request.",
    502: "upstream 502 Bad Gateway",
    429: "upstream 429: rate limit reached (retried 3 times)",
}


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _empty_row() -> dict[str, Any]:
    from proxy.store.schema import inference_runs

    return {c.name: None for c in inference_runs.columns if c.name != "id"}


def _call(
    rng: random.Random, n: int, when: datetime, model_index: int, prompt: str, answer: str, **extra: Any
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    provider, model, upstream, median, spread, error_rate, error_status, price_in, price_out = MODELS[model_index]
    busy = 1.0 + 0.35 * math.sin((when.hour - 6) / 24 * 2 * math.pi)  # slower in the (UTC) afternoon
    latency = round(median * busy * math.exp(rng.gauss(0, spread)), 1)
    prompt_tokens = 12 + len(prompt) // 4 + rng.randint(0, 20)
    completion_tokens = max(1, len(answer) // 4 + rng.randint(0, 60))
    cost = round((prompt_tokens * price_in + completion_tokens * price_out) / 1e6, 8) if price_in else None
    roll = rng.random()
    cache = extra.pop("cache", "hit" if roll < 0.14 else "dedup" if roll < 0.17 else "miss" if roll < 0.8 else None)
    failed = extra.pop("failed", rng.random() < error_rate)
    stream = int(rng.random() < 0.3)
    row = _empty_row() | {
        "request_id": f"demo-{n:06d}",
        "created_at": _iso(when),
        "endpoint": "chat/completions",
        "provider": provider,
        "model": model,
        "upstream_model": upstream,
        "prompt": f"user: {prompt}",
        "response": answer,
        "request_json": json.dumps({"model": model, "messages": [{"role": "user", "content": prompt}], "stream": bool(stream)}),
        "response_json": json.dumps({
            "id": f"chatcmpl-{n}", "object": "chat.completion", "model": upstream,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }),
        "status_code": 200,
        "stream": stream,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "latency_ms": latency,
        "ttft_ms": round(latency * rng.uniform(0.15, 0.4), 1) if stream else None,
        "attempts": 1,
        "cache": cache,
        "cost_usd": cost,
        "client": "default",
        "request_headers": json.dumps({"authorization": "[redacted]", "content-type": "application/json"}),
    }
    if cache == "hit":
        row |= {"latency_ms": round(rng.uniform(0.4, 2.5), 1), "attempts": 0, "ttft_ms": None}
    if failed:
        attempts = 3 if error_status in (429, 502) else 1
        row |= {
            "status_code": error_status, "error": ERRORS[error_status], "response": None, "response_json":
            json.dumps({"error": {"message": ERRORS[error_status], "type": "upstream_error", "code": str(error_status)}}),
            "prompt_tokens": None, "completion_tokens": None, "total_tokens": None, "cost_usd": None,
            "cache": None, "attempts": attempts, "latency_ms": round(latency * attempts * 1.3, 1), "ttft_ms": None,
        }
    row.update(extra)
    tries = []
    start = when
    for attempt in range(1, row["attempts"] + 1):
        last = attempt == row["attempts"]
        tries.append({
            "request_id": row["request_id"], "attempt": attempt, "provider": provider, "url_path": "/chat/completions",
            "status_code": row["status_code"] if last or not failed else error_status,
            "error": row["error"], "latency_ms": round(row["latency_ms"] / row["attempts"], 1), "started_at": _iso(start),
        })
        start += timedelta(milliseconds=row["latency_ms"] / row["attempts"])
    return row, tries


def demo_rows(rows: int = 600, days: float = 3.0, seed: int = 7, now: datetime | None = None) -> tuple[list, list]:
    """`rows` calls over the last `days` days, plus the attempts behind them."""
    rng = random.Random(seed)
    now = now or datetime.now(UTC)
    start = now - timedelta(days=days)
    runs: list[dict[str, Any]] = []
    attempts: list[dict[str, Any]] = []
    study_calls = len(STUDY_ITEMS) * len(STUDY_MODELS)
    for n in range(1, max(0, rows - study_calls) + 1):
        when = start + timedelta(seconds=rng.uniform(0, days * 86400))
        index = rng.choices(range(len(MODELS)), WEIGHTS)[0]
        prompt, answer = rng.choice(PROMPTS)
        session = f"chat-{rng.randint(1, 12):02d}" if rng.random() < 0.4 else None
        tags = json.dumps(rng.choice([["pilot"], ["pilot", "french"], ["eval"], []]))
        row, tries = _call(rng, n, when, index, prompt, answer, session_id=session, tags=tags, user="alice")
        runs.append(row)
        attempts += tries
    study_start = now - timedelta(hours=5)
    n = len(runs)
    for item, country in enumerate(STUDY_ITEMS):
        for model_index in STUDY_MODELS:
            n += 1
            capital = {"France": "Paris", "Japan": "Tokyo", "Kenya": "Nairobi", "Peru": "Lima"}[country]
            answer = f"The capital of {country} is {capital}." if model_index != 3 else f"{capital}."
            metadata = {"study": STUDY, "run": "r1", "item": item, "repeat": 0, "input_hash": f"h{item}",
                        "country": country}
            row, tries = _call(
                rng, n, study_start + timedelta(seconds=n), model_index, f"What is the capital of {country}?",
                answer, session_id=STUDY, tags=json.dumps([STUDY]), metadata=json.dumps(metadata),
                cache="miss", failed=False,
            )
            runs.append(row)
            attempts += tries
    runs.sort(key=lambda r: r["created_at"])
    return runs, attempts


def write_demo_log(path: str | Path, rows: int = 600, days: float = 3.0, seed: int = 7) -> Path:
    """Create (or add to) a log at `path` with `rows` made-up calls; returns the path."""
    from proxy.store import Store

    path = Path(path)

    async def build() -> None:
        store = Store(str(path))
        try:
            await store.migrate()
            runs, tries = demo_rows(rows, days, seed)
            for i in range(0, len(runs), 500):
                batch = runs[i : i + 500]
                ids = {r["request_id"] for r in batch}
                await store.write(batch, [a for a in tries if a["request_id"] in ids])
        finally:
            await store.dispose()

    asyncio.run(build())
    return path


@contextmanager
def serve_under_ui(db_path: str | Path, host: str = "127.0.0.1") -> Iterator[str]:
    """Datasette over `db_path` mounted at /ui/ in Starlette, as the proxy serves it, on a free
    loopback port in a thread; yields the UI's base URL (http://127.0.0.1:PORT/ui/)."""
    import socket
    from contextlib import asynccontextmanager

    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from . import DATABASE_NAME, create_datasette

    ds = create_datasette(db_path, base_url="/ui/")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        await ds.invoke_startup()
        yield

    app = Starlette(routes=[Mount("/ui", app=ds.app())], lifespan=lifespan)
    with socket.socket() as sock:
        sock.bind((host, 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://{host}:{port}/ui/"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        ds.get_database(DATABASE_NAME).close()


def find_chromium() -> str | None:
    """The Chromium (or Chrome) binary on PATH, if any."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium(url: str, *, screenshot: Path | None = None, dump_dom: bool = False,
             size: tuple[int, int] = (1400, 1000), budget_ms: int = 8000, timeout: float = 90.0) -> str:
    """Run headless Chromium on `url` once: a screenshot, or the DOM after scripts ran (returned)."""
    binary = find_chromium()
    if binary is None:
        raise FileNotFoundError("no chromium on PATH (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        args = [
            binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}",
            f"--window-size={size[0]},{size[1]}", f"--virtual-time-budget={budget_ms}",
            "--run-all-compositor-stages-before-draw",
        ]
        if screenshot is not None:
            args.append(f"--screenshot={screenshot}")
        if dump_dom:
            args.append("--dump-dom")
        done = subprocess.run([*args, url], capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"chromium exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analytics.datasette.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("db", help="the log file to create (or add rows to)")
    parser.add_argument("--rows", type=int, default=600)
    parser.add_argument("--days", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--screenshot", type=Path, help="also save a PNG of the dashboard here")
    parser.add_argument("--page", default="-/dashboards/overview", help="the page to photograph, under /ui/")
    parser.add_argument("--size", default="1400x1000", help="the browser window, WIDTHxHEIGHT")
    args = parser.parse_args(argv)
    path = write_demo_log(args.db, args.rows, args.days, args.seed)
    print(f"wrote {args.rows} calls to {path}")
    if args.screenshot:
        width, height = (int(v) for v in args.size.lower().split("x"))
        with serve_under_ui(path) as base:
            chromium(base + args.page, screenshot=args.screenshot.resolve(), size=(width, height))
        print(f"saved {args.screenshot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
