"""One log row: the `inference_runs` row and its `attempts` rows, as Python values and as a line.

The line is what the journal holds: `{"run": {...}, "attempts": [{...}, ...]}\\n`, one JSON
object per call, with the tables' column names (the spools of earlier versions hold the same
lines, and `"run": null` for attempts whose run was elsewhere). `render` turns a finished
`CallRecord` into a `LogRow` once; the recorder keeps the values for the database and the
journal keeps the line, so nothing is rendered twice.
`decode` reads lines back (from a journal of an earlier run, or rows that waited on disk),
checking every column, so that a damaged line is set aside instead of reaching the database.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

import orjson

from .record import CallRecord
from .store import attempts, inference_runs

log = logging.getLogger("proxy.recorder")

Row = dict[str, Any]


class LogRow:
    """A rendered call: `run` and `attempts` for the database, `line` for the journal.

    `segment` is the journal file holding the line (None while it is on no disk); the
    recorder tells that segment once the row is in the database.
    """

    __slots__ = ("run", "attempts", "line", "segment")

    def __init__(self, run: Row, attempt_rows: list[Row], line: bytes) -> None:
        self.run = run
        self.attempts = attempt_rows
        self.line = line
        self.segment: Any = None


def render(record: CallRecord) -> LogRow:
    """The record's rows and journal line; a failure to render still gives a row."""
    run, attempt_rows = rows_of(record)
    return LogRow(run, attempt_rows, dump_line({"run": run, "attempts": attempt_rows}))


def rows_of(record: CallRecord) -> tuple[Row, list[Row]]:
    """`record.rows()`, or the facts that are sure to store when rendering failed (a bug in
    rendering must not cost the row)."""
    try:
        return record.rows()
    except Exception as exc:
        log.exception("could not build the log row of request %s; storing what is known", record.request_id)
        return _fallback_rows(record, exc), []


def flatten(rows: Iterable[LogRow | tuple[Row, list[Row]]]) -> tuple[list[Row], list[Row]]:
    """Rows → (runs, attempt rows), the two lists `Store.write` takes."""
    runs: list[Row] = []
    attempt_rows: list[Row] = []
    for row in rows:
        run, its = (row.run, row.attempts) if isinstance(row, LogRow) else row
        runs.append(run)
        attempt_rows.extend(its)
    return runs, attempt_rows


def dump_line(item: Any) -> bytes:
    """One JSON line; values orjson refuses (an integer past 64 bits) go through the json module."""
    try:
        return orjson.dumps(item, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:
        return json.dumps(item, default=str, ensure_ascii=False).encode("utf-8", "surrogatepass") + b"\n"


def decode(lines: Iterable[bytes], bad: list[bytes] | None = None) -> tuple[list[Row], list[Row]]:
    """Journal lines → (runs, attempt rows), every row with exactly its table's columns.

    A line that is not JSON, or whose rows lack a required column, goes to `bad`.
    """
    runs: list[Row] = []
    attempt_rows: list[Row] = []
    for line in lines:
        if not line.strip():
            continue
        try:
            item = orjson.loads(line)
            run, item_attempts = item.get("run"), item.get("attempts") or []
            cleaned_run = _clean(RUN_COLUMNS, run) if run is not None else None
            cleaned_attempts = [_clean(ATTEMPT_COLUMNS, a) for a in item_attempts]
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            if bad is not None:
                bad.append(line)
            continue
        if cleaned_run is not None:
            runs.append(cleaned_run)
        attempt_rows.extend(cleaned_attempts)
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
