"""The study runner: one prompt set × many models, through the proxy's own pipeline, into the log.

    study-query-llm study PROMPTS --models a,b,c [--repeats N] [--concurrency K] [--name NAME]
                          [--param temperature=0.2 …] [--db PATH | --database-url URL]
                          [--base-url http://host:port/v1 [--api-key KEY]] [--resume]

PROMPTS is JSONL (`{"prompt": "…"}` or `{"messages": […]}` per line, any other field kept
as metadata) or CSV with a `prompt` column (the other columns kept as metadata).

One code path for both modes: an `httpx.AsyncClient` that posts plain OpenAI chat
completions to `/v1/chat/completions`, either in-process (an `httpx.ASGITransport` over
`proxy.app.create_app(settings)`, its lifespan around the run so the recorder starts and
drains) or over the network to a running proxy (`--base-url`). So every call goes through
the same routing, retry, de-duplication switch and recording as a served request.

Every row of a study carries:

* `tags` = `["<name>"]` (`X-Study-Tags`) and `session_id` = `<name>` (`X-Study-Session`);
* `metadata` = `{"study", "run", "item", "repeat", "input_hash", …the item's own fields}`
  (`X-Study-Metadata`, which the proxy merges into the row and never sends upstream).

The log is the source of truth for `--resume`: a call is done when the log has a row of
the study with status 200, no error, and the same (item, input_hash, model, repeat). The
`input_hash` (of the messages and `--param` values) makes a changed or reordered prompt
file, or changed parameters, count as new work rather than being skipped by mistake.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import re
import shlex
import signal
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx

DEFAULT_CONCURRENCY = 4
#: `X-Study-Metadata` is a header: HTTP servers refuse header blocks past a few tens of KiB
#: (h11's default is 64 KiB in all), so an item's own fields are kept only up to this size.
METADATA_HEADER_LIMIT = 8000
#: An answer with one of these statuses to a model's first call says the model cannot be
#: served at all (unknown model, provider without a key, bad proxy key): its other calls are
#: skipped rather than sent to fail the same way.
MODEL_LEVEL_STATUSES = frozenset({401, 403, 404})
#: Without a terminal, a progress line this often (seconds).
PLAIN_PROGRESS_INTERVAL = 10.0
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+/-]{0,99}$")
RESERVED_PARAMS = frozenset({"model", "messages"})
CORE_METADATA = ("study", "run", "item", "repeat", "input_hash")
IN_PROCESS_BASE_URL = "http://study-runner.invalid/v1"

EXIT_OK = 0
EXIT_FAILED_CALLS = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class StudyError(Exception):
    """A problem with the command line or the prompt file: printed as is, exit code 2."""


# --------------------------------------------------------------------------------------
# The prompt set
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One prompt of the set: its position, its messages and its other fields."""

    index: int
    messages: list[dict[str, Any]]
    extras: dict[str, Any]
    where: str  # "file.jsonl:3", for messages


def load_prompts(path: str | Path) -> list[Item]:
    """The items of a JSONL or CSV prompt file; `StudyError` says what is wrong and where."""
    path = Path(path)
    if not path.exists():
        raise StudyError(f"prompt file not found: {path}")
    if not path.is_file():
        raise StudyError(f"not a file: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise StudyError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise StudyError(f"cannot read {path}: {exc.strerror}") from None
    suffix = path.suffix.lower()
    if suffix == ".csv" or (suffix not in (".jsonl", ".ndjson", ".json") and not text.lstrip().startswith("{")):
        items = _load_csv(path, text)
    else:
        items = _load_jsonl(path, text)
    if not items:
        raise StudyError(f"{path}: no prompts in the file")
    return items


def _load_jsonl(path: Path, text: str) -> list[Item]:
    items: list[Item] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise StudyError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(value, dict):
            raise StudyError(f"{where}: expected a JSON object like {{\"prompt\": \"…\"}}, got {type(value).__name__}")
        items.append(_item(len(items), value, where))
    return items


def _load_csv(path: Path, text: str) -> list[Item]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = [c.strip() if c else c for c in (reader.fieldnames or [])]
    if "prompt" not in columns:
        found = ", ".join(repr(c) for c in columns) or "none"
        raise StudyError(f"{path}: a CSV prompt file needs a 'prompt' column (columns found: {found})")
    reader.fieldnames = columns
    items: list[Item] = []
    for row in reader:
        where = f"{path}:{reader.line_num}"
        if None in row:
            raise StudyError(f"{where}: this row has more fields than the header")
        if not any((v or "").strip() for v in row.values()):
            continue  # a blank line
        values = {k: v for k, v in row.items() if k}
        items.append(_item(len(items), values, where))
    return items


def _item(index: int, value: dict[str, Any], where: str) -> Item:
    extras = {k: v for k, v in value.items() if k not in ("prompt", "messages")}
    has_prompt, has_messages = "prompt" in value, "messages" in value
    if has_prompt and has_messages:
        raise StudyError(f"{where}: give either \"prompt\" or \"messages\", not both")
    if has_messages:
        messages = value["messages"]
        if not isinstance(messages, list) or not messages:
            raise StudyError(f"{where}: \"messages\" must be a non-empty list of {{\"role\": …, \"content\": …}} objects")
        for n, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise StudyError(f"{where}: messages[{n}] must be an object with a \"role\" (and its \"content\")")
        return Item(index, messages, extras, where)
    if not has_prompt:
        raise StudyError(f"{where}: no \"prompt\" or \"messages\" field")
    prompt = value["prompt"]
    if not isinstance(prompt, str) or not prompt.strip():
        raise StudyError(f"{where}: \"prompt\" must be non-empty text")
    return Item(index, [{"role": "user", "content": prompt}], extras, where)


def parse_params(specs: Iterable[str]) -> dict[str, Any]:
    """`--param key=value`: the value as JSON when it parses (numbers, booleans, null, lists,
    objects, "quoted strings"), otherwise as plain text."""
    params: dict[str, Any] = {}
    for spec in specs:
        key, eq, raw = spec.partition("=")
        key = key.strip()
        if not eq or not key:
            raise StudyError(f"--param {spec!r}: expected KEY=VALUE, e.g. temperature=0.2")
        if key in RESERVED_PARAMS:
            raise StudyError(f"--param {key}: set by the runner itself (use --models, and the prompt file)")
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    return params


def parse_models(spec: str) -> list[str]:
    models = list(dict.fromkeys(m.strip() for m in spec.split(",") if m.strip()))
    if not models:
        raise StudyError("--models: give at least one model, e.g. --models openai/gpt-4o-mini,mock/echo")
    return models


def default_name(prompts: str | Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9._:@+/-]+", "-", Path(prompts).stem).strip("-._") or "study"
    return stem[:100]


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise StudyError(
            f"--name {name!r}: use letters, digits and . _ : @ + / - (no spaces or commas; "
            "it becomes a tag), starting with a letter or digit, at most 100 characters"
        )
    return name


# --------------------------------------------------------------------------------------
# The plan: items × models × repeats, and what the log already holds
# --------------------------------------------------------------------------------------

Key = tuple[int, str, str, int]  # (item, input_hash, model, repeat)


@dataclass(frozen=True)
class Call:
    item: Item
    model: str
    repeat: int
    input_hash: str

    @property
    def key(self) -> Key:
        return (self.item.index, self.input_hash, self.model, self.repeat)


def input_hash(messages: list[dict[str, Any]], params: dict[str, Any]) -> str:
    """What an item asks (messages and parameters, not the model): 16 hex digits of SHA-256."""
    canonical = json.dumps({"messages": messages, "params": params}, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def plan_calls(items: Sequence[Item], models: Sequence[str], repeats: int, params: dict[str, Any]) -> list[Call]:
    """Item by item, each model in turn: an interrupted study has every model on the same items."""
    calls = []
    for item in items:
        digest = input_hash(item.messages, params)
        for repeat in range(repeats):
            for model in models:
                calls.append(Call(item, model, repeat, digest))
    return calls


def metadata_header(name: str, run_id: str, call: Call) -> tuple[str, list[str]]:
    """The `X-Study-Metadata` value (ASCII JSON) and the item fields left out for size."""
    metadata: dict[str, Any] = {
        "study": name,
        "run": run_id,
        "item": call.item.index,
        "repeat": call.repeat,
        "input_hash": call.input_hash,
    }
    omitted = []
    size = len(_ascii_json(metadata))
    for key, value in call.item.extras.items():
        if key in metadata:
            omitted.append(key)
            continue
        piece = len(_ascii_json({key: value}))
        if size + piece > METADATA_HEADER_LIMIT:
            omitted.append(key)
            continue
        metadata[key] = value
        size += piece
    if omitted:
        metadata["omitted_fields"] = omitted
    return _ascii_json(metadata), omitted


def _ascii_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"), default=str)


async def read_study_rows(database: str, name: str) -> list[dict[str, Any]]:
    """The log's rows of study `name` (tagged with it and carrying it in `metadata.study`),
    with `metadata` parsed. An absent SQLite file or a log without tables has none."""
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    from proxy.store.engine import async_database_url, sqlite_path

    path = sqlite_path(database)
    if path is not None and not path.exists():
        return []
    # A plain engine, not the proxy's: reads need no BEGIN IMMEDIATE (which takes the write lock).
    engine = create_async_engine(async_database_url(database), hide_parameters=True)
    try:
        async with engine.connect() as conn:
            if not await conn.run_sync(lambda c: sa.inspect(c).has_table("inference_runs")):
                return []
            result = await conn.execute(
                sa.text(
                    "SELECT id, request_id, created_at, model, provider, status_code, error, latency_ms, "
                    "prompt_tokens, completion_tokens, total_tokens, cost_usd, cache, tags, metadata "
                    "FROM inference_runs WHERE tags LIKE :pattern ORDER BY id"
                ),
                {"pattern": f"%{json.dumps(name)}%"},  # a pre-filter; the exact test is below
            )
            raw = [dict(row._mapping) for row in result]
    finally:
        await engine.dispose()
    rows = []
    for row in raw:
        tags, metadata = _json_or_none(row["tags"]), _json_or_none(row["metadata"])
        if isinstance(tags, list) and name in tags and isinstance(metadata, dict) and metadata.get("study") == name:
            row["metadata"] = metadata
            rows.append(row)
    return rows


def _json_or_none(text: str | None) -> Any:
    try:
        return json.loads(text) if text else None
    except json.JSONDecodeError:
        return None


def succeeded(row: dict[str, Any]) -> bool:
    return row.get("status_code") == 200 and not row.get("error")


def finished_keys(rows: Iterable[dict[str, Any]]) -> set[Key]:
    """(item, input_hash, model, repeat) of every successful row."""
    keys = set()
    for row in rows:
        metadata = row["metadata"]
        if succeeded(row) and isinstance(metadata.get("item"), int) and isinstance(metadata.get("repeat"), int):
            keys.add((metadata["item"], str(metadata.get("input_hash")), row["model"], metadata["repeat"]))
    return keys


# --------------------------------------------------------------------------------------
# Progress
# --------------------------------------------------------------------------------------


class Progress:
    """A tqdm bar (count, rate, ETA) on a terminal; plain lines every few seconds otherwise.
    Either way `close()` prints one final line."""

    def __init__(self, label: str, total: int, done: int, stream: TextIO | None = None) -> None:
        self.label, self.total, self.initial = label, total, done
        self.stream = stream or sys.stderr
        self.done, self.ok, self.failed, self.skipped = done, 0, 0, 0
        self.started = time.monotonic()
        self._next_line = self.started + PLAIN_PROGRESS_INTERVAL
        self._bar = None
        if _isatty(self.stream):
            try:
                from tqdm import tqdm
            except ImportError:  # pragma: no cover - tqdm is a dependency; plain lines otherwise
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(
                    total=total, initial=done, unit="call", desc=label, file=self.stream,
                    dynamic_ncols=True, smoothing=0.1, leave=True,
                )

    def advance(self, outcome: str) -> None:
        """`outcome`: "ok", "failed" or "skipped"."""
        self.done += 1
        setattr(self, outcome, getattr(self, outcome) + 1)
        if self._bar is not None:
            self._bar.update(1)
            if self.failed or self.skipped:
                self._bar.set_postfix(failed=self.failed, skipped=self.skipped, refresh=False)
        elif time.monotonic() >= self._next_line:
            self._next_line = time.monotonic() + PLAIN_PROGRESS_INTERVAL
            print(self._line(), file=self.stream, flush=True)

    def write(self, message: str) -> None:
        if self._bar is not None:
            self._bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elapsed = time.monotonic() - self.started
        rate = (self.done - self.initial) / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.ok} ok", f"{self.failed} failed"]
        if self.skipped:
            parts.append(f"{self.skipped} skipped")
        if self.initial:
            parts.append(f"{self.initial} done before")
        print(
            f"{self.label}: {self.done}/{self.total} calls ({', '.join(parts)}) in {elapsed:.1f} s, {rate:.1f} calls/s",
            file=self.stream,
            flush=True,
        )

    def _line(self) -> str:
        elapsed = time.monotonic() - self.started
        rate = (self.done - self.initial) / elapsed if elapsed > 0 else 0.0
        left = self.total - self.done
        eta = _duration(left / rate) if rate > 0 else "?"
        return f"{self.label}: {self.done}/{self.total} calls, {rate:.1f} calls/s, ETA {eta}"


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _duration(seconds: float) -> str:
    seconds = int(math.ceil(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


# --------------------------------------------------------------------------------------
# Running the calls
# --------------------------------------------------------------------------------------


@dataclass
class Result:
    call: Call
    status_code: int
    error: str | None
    latency_ms: float

    @property
    def ok(self) -> bool:
        return self.status_code == 200 and self.error is None


@dataclass
class _Gate:
    """A model's first call goes alone; the others wait for it and are skipped if it shows
    that the model cannot be served at all."""

    state: str = "new"  # new → probing → open | closed
    opened: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str | None = None
    skipped: int = 0


class _Fatal(Exception):
    """The proxy cannot be reached: no point in sending anything else."""


@dataclass
class Outcome:
    results: list[Result]
    interrupted: bool
    fatal: str | None
    closed_models: dict[str, str]  # model → why its calls were skipped
    skipped: int


class StudyRun:
    """Sends the planned calls through one `httpx.AsyncClient`, K at a time."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        url: str,
        name: str,
        calls: Sequence[Call],
        params: dict[str, Any],
        headers: dict[str, str],
        concurrency: int,
        progress: Progress,
    ) -> None:
        self.client, self.url, self.name = client, url, name
        self.calls, self.params, self.headers = list(calls), params, headers
        self.concurrency = concurrency
        self.progress = progress
        self.run_id = uuid.uuid4().hex[:8]
        self.results: list[Result] = []
        self.gates: dict[str, _Gate] = {}
        self.interrupted = False
        self.fatal: str | None = None
        self._next = 0
        self._workers: list[asyncio.Task[None]] = []
        self._warned_omitted = False

    async def run(self) -> Outcome:
        loop = asyncio.get_running_loop()
        self._workers = [asyncio.create_task(self._worker()) for _ in range(min(self.concurrency, len(self.calls)))]
        handled = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self.interrupt)
                handled.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or Windows
                pass
        try:
            outcomes = await asyncio.gather(*self._workers, return_exceptions=True)
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, (asyncio.CancelledError, _Fatal)):
                raise outcome
        closed = {m: g.reason or "" for m, g in self.gates.items() if g.state == "closed"}
        skipped = sum(g.skipped for g in self.gates.values())
        return Outcome(self.results, self.interrupted, self.fatal, closed, skipped)

    def interrupt(self) -> None:
        """Ctrl-C (or SIGTERM): cancel what is in flight; a second one quits at once."""
        if self.interrupted:
            raise KeyboardInterrupt
        self.interrupted = True
        self.progress.write("Interrupted: cancelling the calls in flight (Ctrl-C again to quit at once)…")
        self._stop()

    def _stop(self) -> None:
        current = asyncio.current_task()
        for worker in self._workers:
            if worker is not current:
                worker.cancel()

    async def _worker(self) -> None:
        while not self.interrupted and self.fatal is None and self._next < len(self.calls):
            call = self.calls[self._next]
            self._next += 1
            gate = self.gates.setdefault(call.model, _Gate())
            if gate.state == "probing":
                await gate.opened.wait()
            if gate.state == "closed":
                gate.skipped += 1
                self.progress.advance("skipped")
                continue
            probing = gate.state == "new"
            if probing:
                gate.state = "probing"
            result: Result | None = None
            try:
                result = await self._send(call)
            except httpx.TransportError as exc:
                self.fatal = f"cannot reach the proxy at {self.url}: {str(exc) or type(exc).__name__}"
                self._stop()
                raise _Fatal(self.fatal) from None
            finally:
                if probing:
                    if result is not None and result.status_code in MODEL_LEVEL_STATUSES:
                        gate.state, gate.reason = "closed", f"HTTP {result.status_code}: {result.error}"
                        self.progress.write(f"model {call.model!r} cannot be used ({gate.reason}): skipping its other calls")
                    else:  # answered, or the run is ending (cancelled, or the proxy is gone)
                        gate.state = "open"
                    gate.opened.set()
            self.results.append(result)
            self.progress.advance("ok" if result.ok else "failed")

    async def _send(self, call: Call) -> Result:
        metadata, omitted = metadata_header(self.name, self.run_id, call)
        if omitted and not self._warned_omitted:
            self._warned_omitted = True
            self.progress.write(
                f"note: item fields {', '.join(omitted)} of {call.item.where} are not in the row's metadata "
                "(a name the runner uses, or too large for a header)"
            )
        body = {"model": call.model, "messages": call.item.messages, **self.params}
        headers = {**self.headers, "X-Study-Metadata": metadata}
        started = time.perf_counter()
        response = await self.client.post(self.url, json=body, headers=headers)
        latency = (time.perf_counter() - started) * 1000
        error = None if response.status_code == 200 else _error_message(response)
        return Result(call, response.status_code, error, round(latency, 3))


def _error_message(response: httpx.Response) -> str:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict) and error.get("message"):
        code = f" ({error['code']})" if error.get("code") else ""
        return f"{error['message']}{code}"
    return response.text[:200] or response.reason_phrase


# --------------------------------------------------------------------------------------
# The comparison at the end
# --------------------------------------------------------------------------------------


def summary_table(rows: Sequence[dict[str, Any]], models: Sequence[str]) -> str:
    """Per model: calls, ok, failed, p50/p95 latency of the successful ones, tokens, cost.
    `rows` are log rows or `Result`s turned into dicts (then without tokens or cost)."""
    order = list(dict.fromkeys([*models, *(r["model"] for r in rows)]))
    header = ("model", "calls", "ok", "failed", "p50 ms", "p95 ms", "tokens", "cost $")
    lines = [header]
    for model in order:
        mine = [r for r in rows if r["model"] == model]
        if not mine:
            continue
        good = [r for r in mine if succeeded(r)]
        latencies = sorted(r["latency_ms"] for r in good if r.get("latency_ms") is not None)
        tokens = [r.get("total_tokens") for r in good if r.get("total_tokens") is not None]
        costs = [r.get("cost_usd") for r in good if r.get("cost_usd") is not None]
        lines.append((
            model,
            str(len(mine)),
            str(len(good)),
            str(len(mine) - len(good)),
            _ms(_percentile(latencies, 50)),
            _ms(_percentile(latencies, 95)),
            str(sum(tokens)) if tokens else "-",
            f"{sum(costs):.6f}" if costs else "-",
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths)))
        for line in lines
    )


def _percentile(values: Sequence[float], pct: int) -> float | None:
    """Nearest-rank percentile (the value of a real call, as the README's SQL recipe does)."""
    if not values:
        return None
    rank = max(1, math.ceil(pct / 100 * len(values)))
    return values[rank - 1]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def failures(rows: Sequence[dict[str, Any]], limit: int = 5) -> list[str]:
    """The most frequent errors, as `model: HTTP 500 message (×3)`."""
    counts: dict[tuple[str, Any, str], int] = {}
    for row in rows:
        if not succeeded(row):
            key = (row["model"], row.get("status_code"), (row.get("error") or "")[:160])
            counts[key] = counts.get(key, 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:limit]
    return [f"{model}: HTTP {status} {error} (×{n})" for (model, status, error), n in ranked]


def print_comparison(name: str, database: str | None, rows: list[dict[str, Any]] | None,
                     outcome: Outcome | None, models: Sequence[str], out: TextIO) -> None:
    """`analytics.study`'s provider comparison when it is there; else the runner's own table,
    over the whole study in the log (or over this run's calls when the log cannot be read)."""
    if database is not None and rows:
        table = _study_comparison(database, name)
        if table is not None:
            print(f"Comparison for study {name!r} (from the log):", file=out)
            print(table, file=out)
            _print_errors(rows, out)
            return
    if rows is not None:
        source, data = "the log, every run of the study", rows
    else:
        source = "this run; pass --db to read the whole study from the log"
        data = [
            {"model": r.call.model, "status_code": r.status_code, "error": r.error, "latency_ms": r.latency_ms}
            for r in (outcome.results if outcome else [])
        ]
    if not data:
        print(f"Study {name!r}: no calls in the log yet.", file=out)
        return
    print(f"Study {name!r} ({source}):", file=out)
    print(summary_table(data, models), file=out)
    _print_errors(data, out)


def _print_errors(rows: list[dict[str, Any]], out: TextIO) -> None:
    errors = failures(rows)
    if errors:
        print("Errors:", file=out)
        for line in errors:
            print(f"  {line}", file=out)


def _study_comparison(database: str, name: str) -> str | None:
    """`analytics.study.Study(db).provider_comparison(study=name)` as text, None if unavailable."""
    try:
        from analytics.study import Study  # written alongside this module; optional here
    except ImportError:
        return None
    try:
        table = Study(database).provider_comparison(study=name)
    except Exception as exc:  # its failure must not hide the run's own summary
        print(f"(analytics.study could not compare the study: {type(exc).__name__}: {exc})", file=sys.stderr)
        return None
    if hasattr(table, "to_string"):
        return table.to_string(index=False) if getattr(table, "empty", False) is False else None
    return str(table)


# --------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `study` command's arguments (the CLI adds the sub-parser and calls `run`)."""
    parser.add_argument("prompts", metavar="PROMPTS",
                        help='JSONL ({"prompt": …} or {"messages": […]} per line) or CSV with a "prompt" column')
    parser.add_argument("--models", required=True, metavar="A,B,C", help="comma-separated models, as a client names them")
    parser.add_argument("--repeats", type=_positive_int, default=1, metavar="N", help="calls per prompt and model (default 1)")
    parser.add_argument("--concurrency", type=_positive_int, default=DEFAULT_CONCURRENCY, metavar="K",
                        help=f"calls in flight at once (default {DEFAULT_CONCURRENCY})")
    parser.add_argument("--name", help="the study's name, tagged on every row (default: the prompt file's name)")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="a request parameter, e.g. temperature=0.2 or max_tokens=200 (JSON values); repeatable")
    parser.add_argument("--resume", action="store_true",
                        help="run only the calls that have no successful row of this study in the log")
    parser.add_argument("--retries", type=_non_negative_int, metavar="N",
                        help="upstream retries per call (X-Study-Retries; default: the proxy's)")
    parser.add_argument("--cache", choices=("off", "on", "refresh"), default="off",
                        help="the proxy's answer cache for these calls (default off: every call reaches a model)")
    database = parser.add_mutually_exclusive_group()
    database.add_argument("--db", metavar="PATH", help="SQLite file of the log")
    database.add_argument("--database-url", metavar="URL", help="sqlite:///file.db or postgresql://… (default: $DATABASE_URL)")
    parser.add_argument("--config", metavar="FILE", help="TOML file with extra providers and aliases (in-process mode)")
    parser.add_argument("--base-url", metavar="URL",
                        help="a running proxy's OpenAI base URL, e.g. http://127.0.0.1:8000/v1 (default: run in-process)")
    parser.add_argument("--api-key", metavar="KEY",
                        help="the running proxy's key, if it has [clients] (default: $STUDY_QUERY_LLM_API_KEY)")


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text}")
    return value


def run(args: argparse.Namespace) -> int:
    """`study-query-llm study …`: 0 when every call succeeded, 1 when some failed or were
    skipped, 2 for bad input, 130 when interrupted."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        return asyncio.run(_run(args))
    except StudyError as exc:
        print(f"study-query-llm study: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("study-query-llm study: stopped at once; rows of calls that had finished may be missing "
              "from the log. Re-run with --resume to finish the study.", file=sys.stderr)
        return EXIT_INTERRUPTED


async def _run(args: argparse.Namespace) -> int:
    from proxy.config import ConfigError, load_settings

    items = load_prompts(args.prompts)
    models = parse_models(args.models)
    params = parse_params(args.param)
    name = check_name(args.name or default_name(args.prompts))
    network = args.base_url is not None
    if network and args.config:
        raise StudyError("--config configures the in-process proxy; with --base-url the running proxy's configuration applies")
    if not network and args.api_key:
        raise StudyError("--api-key is for a running proxy (--base-url); in-process calls need no proxy key")

    settings = None
    database: str | None = args.database_url or args.db
    if not network:
        try:
            settings = load_settings(config_file=args.config, database_url=database, ui=False)
        except ConfigError as exc:
            raise StudyError(f"configuration error: {exc}") from None
        # The runner is the operator: proxy keys ([clients]) and the Host allow-list guard the
        # network, not this process.
        settings = dataclasses.replace(settings, client_keys={}, allowed_hosts=("*",))
        database = settings.database_url
    elif args.resume and database is None:
        raise StudyError("--resume with --base-url reads the proxy's log: give it with --db PATH or --database-url URL")

    rows = await _read_rows(database, name) if database is not None else None
    calls = plan_calls(items, models, args.repeats, params)
    done = finished_keys(rows or [])
    if rows and not args.resume:
        raise StudyError(
            f"the log already has {len(rows)} rows of study {name!r}: add --resume to run only what is missing, "
            "or choose another --name"
        )
    todo = [c for c in calls if c.key not in done]
    before = len(calls) - len(todo)
    where = f"proxy at {args.base_url}" if network else "in-process proxy"
    if args.cache != "off" and args.repeats > 1:
        print(f"note: with --cache {args.cache}, repeats of a prompt may be answered from the proxy's cache",
              file=sys.stderr)
    print(
        f"Study {name!r}: {_count(len(items), 'prompt')} × {_count(len(models), 'model')} × "
        f"{_count(args.repeats, 'repeat')} = {_count(len(calls), 'call')}"
        + (f"; {before} already in the log, {len(todo)} to run" if args.resume else "")
        + f" ({where}, concurrency {args.concurrency})",
        file=sys.stderr,
        flush=True,
    )

    headers = {
        "X-Study-Tags": name,
        "X-Study-Session": name,
        # Repeats are identical requests on purpose: the proxy must not fold them into one call.
        "X-Study-Dedup": "off",
        "X-Study-Cache": args.cache,
    }
    if args.retries is not None:
        headers["X-Study-Retries"] = str(args.retries)
    api_key = args.api_key or os.environ.get("STUDY_QUERY_LLM_API_KEY")
    if network and api_key:
        headers["Authorization"] = f"Bearer {api_key}"

    outcome = None
    if todo:
        progress = Progress(f"study {name}", len(calls), before)
        if network:
            outcome = await _run_network(args.base_url, name, todo, params, headers, args.concurrency, progress)
        else:
            outcome = await _run_in_process(settings, name, todo, params, headers, args.concurrency, progress)
        progress.close()
        if network and database is not None:
            await _wait_for_log(args.base_url)
        rows = await _read_rows(database, name) if database is not None else None
    else:
        print("Nothing to run: every call of the study has a successful row in the log.", file=sys.stderr)

    print_comparison(name, database, rows, outcome, models, sys.stdout)
    sys.stdout.flush()
    return _report_end(args, name, calls, rows, outcome)


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


async def _read_rows(database: str, name: str) -> list[dict[str, Any]]:
    try:
        return await read_study_rows(database, name)
    except Exception as exc:
        from proxy.store.engine import display_url

        raise StudyError(f"cannot read the log {display_url(database)}: {type(exc).__name__}: {exc}") from None


async def _run_in_process(settings: Any, name: str, calls: list[Call], params: dict[str, Any],
                          headers: dict[str, str], concurrency: int, progress: Progress) -> Outcome:
    from proxy.app import create_app

    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    # The lifespan opens the upstream pool and starts the recorder; leaving it drains the recorder,
    # so every call that finished is in the log, however the run ends.
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=transport, base_url=IN_PROCESS_BASE_URL, timeout=None, limits=limits) as client:
            run = StudyRun(client, IN_PROCESS_BASE_URL + "/chat/completions", name, calls, params, headers,
                           concurrency, progress)
            return await run.run()


async def _run_network(base_url: str, name: str, calls: list[Call], params: dict[str, Any],
                       headers: dict[str, str], concurrency: int, progress: Progress) -> Outcome:
    base = base_url.rstrip("/")
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    # No read timeout: the proxy has its own (first byte, stream idle, whole-request deadline).
    timeout = httpx.Timeout(None, connect=10.0)
    async with httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False) as client:
        run = StudyRun(client, base + "/chat/completions", name, calls, params, headers, concurrency, progress)
        return await run.run()


async def _wait_for_log(base_url: str, timeout: float = 5.0) -> None:
    """A running proxy writes rows a few ms after answering: wait until its recorder has
    nothing pending (`/healthz`), so the comparison sees this run's last rows."""
    root = re.sub(r"/v1/?$", "", base_url.rstrip("/"))
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            try:
                health = (await client.get(root + "/healthz")).json()
                if health.get("log", {}).get("pending") == 0:
                    await asyncio.sleep(0.05)  # `pending` drops when the batch is taken, before its commit
                    return
            except (httpx.HTTPError, ValueError, AttributeError):
                await asyncio.sleep(0.3)  # not this proxy's /healthz: give the writer a moment
                return
            await asyncio.sleep(0.05)


def _report_end(args: argparse.Namespace, name: str, calls: list[Call], rows: list[dict[str, Any]] | None,
                outcome: Outcome | None) -> int:
    err = sys.stderr
    if outcome is None:
        return EXIT_OK
    for model, reason in outcome.closed_models.items():
        print(f"Model {model!r} was skipped after its first call failed: {reason}", file=err)
    ran = len(outcome.results)
    ok = sum(r.ok for r in outcome.results)
    if outcome.fatal:
        print(f"study-query-llm study: stopped: {outcome.fatal}", file=err)
    if outcome.interrupted or outcome.fatal:
        if rows is not None:
            missing = len(calls) - len({k for k in finished_keys(rows)} & {c.key for c in calls})
            status = f"{ok} calls of this run finished; {missing} of the study's {len(calls)} calls are still to do"
        else:
            status = f"{ok} calls of this run finished"
        print(f"{'Interrupted' if outcome.interrupted else 'Stopped'}: {status}. What finished is in the log.", file=err)
        print(f"To finish the study: {resume_command(args, name)}", file=err)
        return EXIT_INTERRUPTED if outcome.interrupted else EXIT_FAILED_CALLS
    if ok < ran or outcome.skipped:
        what = f"{ran - ok} of {ran} calls failed" + (f" and {outcome.skipped} were skipped" if outcome.skipped else "")
        print(f"{what} (errors above). To run them again: {resume_command(args, name)}", file=err)
        return EXIT_FAILED_CALLS
    return EXIT_OK


def resume_command(args: argparse.Namespace, name: str) -> str:
    """The command line that finishes this study."""
    parts = ["study-query-llm", "study", args.prompts, "--models", args.models, "--name", name]
    if args.repeats != 1:
        parts += ["--repeats", str(args.repeats)]
    if args.concurrency != DEFAULT_CONCURRENCY:
        parts += ["--concurrency", str(args.concurrency)]
    for spec in args.param:
        parts += ["--param", spec]
    if args.retries is not None:
        parts += ["--retries", str(args.retries)]
    if args.cache != "off":
        parts += ["--cache", args.cache]
    if args.db:
        parts += ["--db", args.db]
    if args.database_url:
        from proxy.store.engine import display_url

        parts += ["--database-url", display_url(args.database_url)]
    if args.config:
        parts += ["--config", args.config]
    if args.base_url:
        parts += ["--base-url", args.base_url]
    parts.append("--resume")
    return shlex.join(parts)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="study-query-llm study",
        description="Run a prompt set across models through the proxy's pipeline, every call recorded in the log.",
    )
    add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """`python -m analytics.runner …` (the same as `study-query-llm study …`)."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
