"""Scenario d: the recorder alone. `proxy.recorder.Recorder` + `proxy.store.Store`, no HTTP.

    python bench/recorder_bench.py --rows 100000 DB [DB ...]        # one run per file, printed as JSON

or, driven by bench/run.py over stdin/stdout (so a reader can be started between the
migration and the writes):

    python bench/recorder_bench.py --rows 100000 --serve
    < "prepare PATH"   > {"ready": PATH}          (fresh database created and migrated)
    < "go"             > {"rows": N, "seconds": S, "rows_per_s": R, ...}
    < "quit"

The records are built once, up front, like the ones the proxy hands over for a logged
non-streaming chat call (request body, redacted headers, upstream answer with usage, one
attempt); the clock runs from the first `submit()` until `recorder.written` reaches N,
so it includes rendering the rows (`CallRecord.rows()`, in the recorder's task), the SQLite
inserts, the full-text index and the commits (in the store's writer thread): everything
the recorder does per row.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson  # noqa: E402

from proxy.cli import tune_garbage_collector  # noqa: E402
from proxy.record import CallRecord, redact_headers  # noqa: E402
from proxy.recorder import Recorder  # noqa: E402
from proxy.store import Store  # noqa: E402

from canned import COMPLETION  # noqa: E402  (bench/ is on sys.path when run as a script)

HEADERS = {
    "host": "127.0.0.1:9200",
    "content-type": "application/json",
    "accept": "application/json",
    "authorization": "Bearer sk-bench",
    "user-agent": "OpenAI/Python 1.99.0",
    "x-study-tags": "bench,recorder",
}


def build_records(count: int) -> list[CallRecord]:
    records = []
    headers = redact_headers(HEADERS)
    for i in range(count):
        record = CallRecord("chat/completions", model="openai/bench-model", provider="openai", upstream_model="bench-model")
        record.payload = {
            "model": "openai/bench-model",
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": f"Benchmark question number {i}: what is {i} + {i}?"},
            ],
            "max_tokens": 16,
        }
        record.request_text = orjson.dumps(record.payload).decode()
        record.request_headers = headers
        record.tags = ["bench", "recorder"]
        record.response_body = COMPLETION
        record.begin_attempt("openai", "/v1/chat/completions").finish(200)
        record.finish(200)
        records.append(record)
    return records


async def prepare(path: str) -> Store:
    for suffix in ("", "-wal", "-shm", ".spool.jsonl"):
        try:
            os.unlink(path + suffix)
        except FileNotFoundError:
            pass
    store = Store(path)
    await store.migrate()
    return store


async def run_once(store: Store, records: list[CallRecord]) -> dict[str, float | int]:
    recorder = Recorder(store)  # the proxy's defaults (app.create_app uses Recorder(store))
    await recorder.start()
    gc.collect()
    count = len(records)
    start = time.perf_counter()
    for record in records:
        recorder.submit(record)
    submitted = time.perf_counter() - start
    while recorder.written < count and not recorder.degraded:
        await asyncio.sleep(0.002)
    seconds = time.perf_counter() - start
    await recorder.stop()
    stats = recorder.stats()
    await store.dispose()
    return {
        "rows": count,
        "written": stats["written"],
        "spooled": stats["spooled"],
        "lost": stats["lost"],
        "degraded": stats["degraded"],
        "seconds": round(seconds, 4),
        "submit_seconds": round(submitted, 4),
        "rows_per_s": round(count / seconds, 1),
    }


async def serve(records: list[CallRecord]) -> None:
    loop = asyncio.get_running_loop()
    store: Store | None = None
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if not line or line == "quit":
            return
        if line.startswith("prepare "):
            path = line.split(" ", 1)[1]
            store = await prepare(path)
            print(json.dumps({"ready": path}), flush=True)
        elif line == "go" and store is not None:
            result = await run_once(store, records)
            store = None
            print(json.dumps(result), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description="rows/s of the proxy's recorder into SQLite")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--serve", action="store_true", help="take commands on stdin (used by bench/run.py)")
    parser.add_argument("db", nargs="*", help="SQLite files to write (each is deleted first)")
    args = parser.parse_args()
    started = time.perf_counter()
    records = build_records(args.rows)
    tune_garbage_collector()  # as `serve` does: the records built up front are never rescanned
    print(json.dumps({"built": args.rows, "seconds": round(time.perf_counter() - started, 2)}), file=sys.stderr, flush=True)
    try:
        import uvloop  # type: ignore[import-not-found]

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    if args.serve:
        run(serve(records))
        return 0

    async def each() -> None:
        for path in args.db:
            store = await prepare(path)
            print(json.dumps({"db": path, **await run_once(store, records)}), flush=True)

    run(each())
    return 0


if __name__ == "__main__":
    sys.exit(main())
