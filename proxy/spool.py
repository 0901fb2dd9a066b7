"""`Spool`: log rows kept in a local JSONL file while the database cannot take them.

One line per run: `{"run": {...}, "attempts": [{...}, ...]}` with the table's column names
(a line with `"run": null` carries attempts whose run was not in the same batch). Each batch
is written with one `write()` on an `O_APPEND` descriptor, so it is in the kernel (safe from
a crash of the proxy, not of the machine: the same promise as SQLite's `synchronous=NORMAL`)
before `append` returns; `fsync=True` asks for more. A failed append is cut back to where it
began, and an append after a torn last line (a crash mid-write) starts on a new line.

`replay(store)` first renames the file to `<name>.replaying` (atomic: whatever is appended
meanwhile starts a fresh file), writes its rows back in batches and deletes it only once all
of them are committed. A `.replaying` file left by a crash or an interrupted replay is
replayed first. `Store.write` skips rows already in the database (keyed by our own UUID
request ids), so replaying a file twice never duplicates a row. Lines that cannot be parsed
(a torn last line) are not dropped silently: they are copied to `<name>.bad`.

One proxy process per spool file: two processes replaying the same file is not supported.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any

import orjson

from .store import Store, attempts, inference_runs

log = logging.getLogger("proxy.spool")

Row = dict[str, Any]
Write = Callable[[Sequence[Row], Sequence[Row]], Awaitable[None]]

#: Each file replayed holds what arrived while the previous one was replayed, so they shrink;
#: past this many the rest waits for the next replay.
MAX_FILES_PER_REPLAY = 100

#: Where the spool goes when the database is not a local file (PostgreSQL).
DEFAULT_SPOOL = "study_query_llm.spool.jsonl"


class Spool:
    def __init__(self, path: str | os.PathLike[str], fsync: bool = False) -> None:
        self.path = Path(path)
        self.replaying_path = self.path.with_name(self.path.name + ".replaying")
        self.bad_path = self.path.with_name(self.path.name + ".bad")
        self.fsync = fsync
        self.replayed = 0  # runs of the files replayed to the end by this object (each file counted once)

    @classmethod
    def beside(cls, store: Store, fsync: bool = False) -> Spool:
        """The default spool: `<db file>.spool.jsonl` next to a SQLite file, else `./study_query_llm.spool.jsonl`."""
        if store.path is not None:
            return cls(store.path.with_name(store.path.name + ".spool.jsonl"), fsync)
        return cls(Path.cwd() / DEFAULT_SPOOL, fsync)

    def __repr__(self) -> str:
        return f"Spool({str(self.path)!r})"

    def exists(self) -> bool:
        """Whether rows are waiting on disk (in the spool or a half-replayed file)."""
        return self.path.exists() or self.replaying_path.exists()

    # -- writing -----------------------------------------------------------------------

    def append(self, runs: Sequence[Row], attempt_rows: Sequence[Row] = ()) -> int:
        """Append a batch (blocking; the recorder calls it in a thread); return the runs written.

        Raises OSError when the file cannot be written (read-only directory, disk full, ...);
        then nothing of this batch is left in the file.
        """
        data = encode(runs, attempt_rows)
        if not data:
            return 0
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0)
        try:
            fd = os.open(self.path, flags, 0o600)
        except FileNotFoundError:  # the directory went away: make it again
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, flags, 0o600)
        try:
            start = os.fstat(fd).st_size
            if start:
                os.lseek(fd, start - 1, os.SEEK_SET)
                if os.read(fd, 1) != b"\n":  # torn last line: begin ours on a line of its own
                    data = b"\n" + data
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if self.fsync:
                    os.fsync(fd)
            except OSError:
                try:
                    os.ftruncate(fd, start)
                except OSError:
                    pass
                raise
        finally:
            os.close(fd)
        return len(runs)

    def set_aside(self, lines: Iterable[bytes]) -> None:
        """Keep lines the database will not take (unreadable, or refused) in `<name>.bad`, for a human."""
        with open(self.bad_path, "ab") as out:
            out.writelines(line if line.endswith(b"\n") else line + b"\n" for line in lines)

    # -- replaying ---------------------------------------------------------------------

    async def replay(
        self, store: Store | None = None, batch_size: int = 500, write_timeout: float | None = None,
        write: Write | None = None, between_batches: Callable[[], Awaitable[None]] | None = None,
    ) -> int:
        """Write every spooled row to `store` (or through `write`); return how many runs were replayed.

        `between_batches` is awaited after each batch: the recorder spools the rows that arrived
        meanwhile (into a fresh file, replayed next), so a long replay does not fill memory.
        Raises whatever the write raises; the rows then stay on disk (the file being replayed
        keeps its `.replaying` name) and the next replay starts over: rows already committed
        are skipped by the database.
        """
        if write is None:
            if store is None:
                raise TypeError("replay() needs a store or a write function")
            write = store.write
        total = 0
        for _ in range(MAX_FILES_PER_REPLAY):  # a leftover `.replaying` file, then the live spool, ...
            if not self.replaying_path.exists():
                try:
                    os.replace(self.path, self.replaying_path)
                except FileNotFoundError:
                    break
            total += await self._replay_file(write, batch_size, write_timeout, between_batches)
        return total

    async def _replay_file(
        self, write: Write, batch_size: int, write_timeout: float | None,
        between_batches: Callable[[], Awaitable[None]] | None,
    ) -> int:
        total = 0
        bad: list[bytes] = []
        with open(self.replaying_path, "rb") as file:
            while True:
                lines = await asyncio.to_thread(_read_lines, file, batch_size)
                if not lines:
                    break
                runs, attempt_rows = decode(lines, bad)
                if runs or attempt_rows:
                    await asyncio.wait_for(write(runs, attempt_rows), write_timeout)
                total += len(runs)
                if between_batches is not None:
                    await between_batches()
        if bad:
            self.set_aside(bad)
            log.warning(
                "%d unreadable line(s) in the log spool %s (a write cut short by a crash?) were set aside in %s",
                len(bad), self.replaying_path, self.bad_path,
            )
        self.replaying_path.unlink()
        self.replayed += total
        return total


# -- encoding ----------------------------------------------------------------------------


def encode(runs: Sequence[Row], attempt_rows: Sequence[Row] = ()) -> bytes:
    """One JSON line per run, carrying that run's attempts."""
    by_request: dict[Any, list[Row]] = {}
    for attempt in attempt_rows:
        by_request.setdefault(attempt.get("request_id"), []).append(attempt)
    parts = [dump_line({"run": run, "attempts": by_request.pop(run.get("request_id"), [])}) for run in runs]
    parts += [dump_line({"run": None, "attempts": orphans}) for orphans in by_request.values()]
    return b"".join(parts)


def dump_line(item: Any) -> bytes:
    """One JSON line; values orjson refuses (an integer past 64 bits) go through the json module."""
    try:
        return orjson.dumps(item, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:
        return json.dumps(item, default=str, ensure_ascii=False).encode("utf-8", "surrogatepass") + b"\n"


def decode(lines: Iterable[bytes], bad: list[bytes] | None = None) -> tuple[list[Row], list[Row]]:
    """Spool lines → (runs, attempt rows), every row with exactly its table's columns.

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
            raise ValueError(f"spooled row without {name}")
        if value is not None and not isinstance(value, (str, int, float)):
            raise ValueError(f"spooled {name} is not a column value")
        cleaned[name] = value
    return cleaned


def _read_lines(file: IO[bytes], n: int) -> list[bytes]:
    lines = []
    for _ in range(n):
        line = file.readline()
        if not line:
            break
        lines.append(line)
    return lines
