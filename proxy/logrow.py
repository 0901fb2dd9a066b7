"""A call's log row, and the line that keeps it in the journal until the database has it.

The journal holds one JSON line per call. Normally it is the call's facts, the `CallRecord`'s
fields as they are, in the order of a numbered layout (`{"v": 1, "facts": [...]}`):
serializing them is plain data for orjson, a quarter of what rendering the row costs
(`CallRecord.rows()`: prompt text, parsed answer, cost, ~30 columns), and it happens before
the answer leaves, while the rows are rendered later by the writer, many at a time, off the
response path, exactly as when nothing is journaled. A list of values costs 30-40 % less
than an object naming each (no dict to build, no key to write) and makes a quarter fewer
bytes; the layouts of earlier versions stay in `LAYOUTS`, so that a journal left by one is
still read, as is the object form (`{"record": {...}}`) of the first journals.
A request body is kept once, as its text: the payload parsed from it is parsed again on replay.
When the facts cannot be kept exactly (an answer that is not valid UTF-8, a value orjson
refuses), the line holds the rendered rows instead, `{"run": {...}, "attempts": [...]}`, the
format of the spool files of earlier versions (with `"run": null` for attempts alone).

`decode` reads lines of either kind back (journals of dead processes, rows that waited on
disk) into rows, checking every column of rendered rows and rendering records again with the
proxy's pricer, so that a damaged line is set aside instead of reaching the database.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterable
from operator import attrgetter
from typing import Any

import orjson

from .pricing import Pricer
from .record import Attempt, CallRecord
from .store import attempts, inference_runs

log = logging.getLogger("proxy.recorder")

Row = dict[str, Any]
Rows = tuple[Row, list[Row]]  # one call: its run row and its attempt rows

#: The fields a record line keeps, in the dataclass's order (the pricer is kept as whether
#: there was one; what is computed from the facts, such as the price, is not kept).
FIELDS = tuple(f.name for f in dataclasses.fields(CallRecord) if f.init)
#: Record line layouts by number. A change to `CallRecord`'s fields adds a layout (and makes
#: it `LAYOUT`) rather than edit one: journals written with the others are still read.
LAYOUTS: dict[int, tuple[str, ...]] = {
    1: ("endpoint", "request_id", "created_at", "started", "log_full", "provider", "model",
        "upstream_model", "payload", "request_text", "payload_is_text", "response_body", "answer",
        "response_text", "status_code", "error", "stream", "usage", "latency_ms", "ttft_ms", "cache",
        "session_id", "tags", "user", "client", "request_headers", "study_metadata", "pricer", "notes",
        "attempts"),
}
LAYOUT = 1
_facts = attrgetter(*FIELDS)
_PRICER, _PAYLOAD, _BODY = (FIELDS.index(name) for name in ("pricer", "payload", "response_body"))
_RESTORED = tuple(name for name in FIELDS if name != "pricer")  # the pricer is the proxy's own
_ATTEMPT_FIELDS = frozenset(f.name for f in dataclasses.fields(Attempt))


def journal_line(record: CallRecord) -> bytes:
    """The record's facts as one line; its rendered rows if they cannot be kept exactly."""
    values = list(_facts(record))
    values[_PRICER] = record.pricer is not None
    if record.payload_is_text and record.request_text is not None:
        values[_PAYLOAD] = None  # parsed again from the text if replayed: not twice on disk
    if record.response_body is not None:  # surrogateescape: any byte comes back as it was
        values[_BODY] = record.response_body.decode("utf-8", "surrogateescape")
    try:
        return orjson.dumps({"v": LAYOUT, "facts": values}, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:  # lone surrogates (bytes that are not UTF-8), an integer past 64 bits, ...
        run, attempt_rows = rows_of(record)
        return dump_line({"run": run, "attempts": attempt_rows})


def facts_of(item: dict[str, Any]) -> dict[str, Any]:
    """A record line → its facts by name, whatever the layout it was written with."""
    if "record" in item:  # the object form of the first journals
        return item["record"]
    names, values = LAYOUTS[item["v"]], item["facts"]
    if len(values) != len(names):
        raise ValueError(f"a record line of layout {item['v']} with {len(values)} values")
    return dict(zip(names, values))


def record_from(facts: dict[str, Any], pricer: Pricer | None) -> CallRecord:
    """A record line's facts → the `CallRecord` again (raises on a damaged line)."""
    priced = bool(facts.get("pricer"))
    fields = {name: facts[name] for name in _RESTORED if name in facts}
    if fields.get("payload_is_text") and fields.get("payload") is None and isinstance(fields.get("request_text"), str):
        fields["payload"] = orjson.loads(fields["request_text"])
    body = fields.get("response_body")
    if isinstance(body, str):
        fields["response_body"] = body.encode("utf-8", "surrogateescape")
    fields["attempts"] = [Attempt(**{k: v for k, v in a.items() if k in _ATTEMPT_FIELDS})
                          for a in fields.get("attempts") or []]
    return CallRecord(**fields, pricer=pricer if priced else None)


def rows_of(record: CallRecord) -> tuple[Row, list[Row]]:
    """`record.rows()`, or the facts that are sure to store when rendering failed (a bug in
    rendering must not cost the row)."""
    try:
        return record.rows()
    except Exception as exc:
        log.exception("could not build the log row of request %s; storing what is known", record.request_id)
        return _fallback_rows(record, exc), []


def flatten(rows: Iterable[Rows]) -> tuple[list[Row], list[Row]]:
    """Rows → (runs, attempt rows), the two lists `Store.write` takes."""
    runs: list[Row] = []
    attempt_rows: list[Row] = []
    for run, its in rows:
        runs.append(run)
        attempt_rows.extend(its)
    return runs, attempt_rows


def dump_line(item: Any) -> bytes:
    """One JSON line; values orjson refuses (an integer past 64 bits) go through the json module."""
    try:
        return orjson.dumps(item, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:
        return json.dumps(item, default=str, ensure_ascii=False).encode("utf-8", "surrogatepass") + b"\n"


def decode(lines: Iterable[bytes], bad: list[bytes] | None = None,
           pricer: Pricer | None = None) -> tuple[list[Row], list[Row]]:
    """Journal lines → (runs, attempt rows): records rendered (with `pricer`), rendered rows
    checked to have exactly their table's columns. A line that cannot be read goes to `bad`."""
    runs: list[Row] = []
    attempt_rows: list[Row] = []
    for line in lines:
        if not line.strip():
            continue
        try:
            item = orjson.loads(line)
            if "record" in item or "facts" in item:
                run, its = rows_of(record_from(facts_of(item), pricer))
            else:
                run = _clean(RUN_COLUMNS, item["run"]) if item.get("run") is not None else None
                its = [_clean(ATTEMPT_COLUMNS, a) for a in item.get("attempts") or []]
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
            if bad is not None:
                bad.append(line)
            continue
        if run is not None:
            runs.append(run)
        attempt_rows.extend(its)
    return runs, attempt_rows


def describe(exc: BaseException) -> str:
    """`Type: first line of the message` (SQLAlchemy appends the statement on later lines)."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message[:300]}" if message else type(exc).__name__


Column = tuple[str, Any, bool]  # name, default, required


def _columns(table: Any) -> list[Column]:
    """(name, default, required) of every column but the surrogate `id`."""
    columns = []
    for c in table.columns:
        if c.name == "id":
            continue
        default = c.default.arg if c.default is not None and c.default.is_scalar else None
        columns.append((c.name, default, not c.nullable and default is None))
    return columns


RUN_COLUMNS = _columns(inference_runs)
ATTEMPT_COLUMNS = _columns(attempts)


def _clean(columns: list[Column], row: Row) -> Row:
    """The row with every column of its table (so one executemany takes them all), nothing else."""
    cleaned = {}
    for name, default, required in columns:
        value = row.get(name, default)
        if value is None and required:
            raise ValueError(f"journaled row without {name}")
        if value is not None and not isinstance(value, (str, int, float)):
            raise ValueError(f"journaled {name} is not a column value")
        cleaned[name] = value
    return cleaned


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) or value is None else str(value)


def _fallback_rows(record: CallRecord, exc: BaseException) -> Row:
    """The facts that are sure to store, when `record.rows()` failed."""
    run: Row = {name: default for name, default, _ in RUN_COLUMNS}
    error = f"log row incomplete ({describe(exc)})"
    run.update(
        request_id=_text(record.request_id),
        created_at=_text(record.created_at),
        endpoint=_text(record.endpoint),
        provider=_text(record.provider),
        model=_text(record.model),
        upstream_model=_text(record.upstream_model),
        status_code=record.status_code if isinstance(record.status_code, int) else None,
        error=f"{record.error}; {error}" if isinstance(record.error, str) and record.error else error,
        stream=int(bool(record.stream)),
        latency_ms=record.latency_ms if isinstance(record.latency_ms, float | int) else None,
        attempts=len(record.attempts),
    )
    return run
