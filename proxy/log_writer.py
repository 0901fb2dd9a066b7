"""Batches into the database: one transaction each, retried once if it failed fast, and rows the
database refuses by themselves set aside, so that one bad row cannot hold up the log.

`write(runs, attempts)` raises when the database is unavailable (locked past the busy
timeout, read-only, full, gone, server down): the recorder then keeps the rows and tries
again later. A row that the database refuses for its own values (an integer past 64 bits,
a constraint) is written alone, and if refused again appended to the `.bad` file with the
error, for a human to look at; unreadable journal lines go there too (`set_aside`).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import exc as sa_exc

from .logrow import Row, describe, dump_line
from .private_files import append_private
from .store import Store

log = logging.getLogger("proxy.recorder")

#: A write that fails faster than this is retried once (a transient lock or connection blip);
#: one that already waited out SQLite's busy timeout is not waited out a second time.
FAST_FAILURE_S = 1.0


class BatchWriter:
    def __init__(self, store: Store, bad_path: Path, *, write_timeout: float | None = 30.0,
                 retry_delay: float = 0.1) -> None:
        self.store = store
        self.bad_path = bad_path
        self.write_timeout = write_timeout
        self.retry_delay = retry_delay
        self.failed_batches = 0  # failed write calls
        self.refused = 0  # runs the database refused by themselves, set aside
        self.lost = 0  # refused runs that could not be set aside either

    async def write(self, runs: Sequence[Row], attempt_rows: Sequence[Row]) -> None:
        """One transaction, tried a second time if the first failed fast; raises if both fail."""
        started = time.monotonic()
        try:
            await self.write_once(runs, attempt_rows)
            return
        except Exception as exc:
            self.failed_batches += 1
            if time.monotonic() - started > FAST_FAILURE_S:
                raise
            log.info("log write failed (%s); retrying once in %gs", describe(exc), self.retry_delay)
        await asyncio.sleep(self.retry_delay)
        try:
            await self.write_once(runs, attempt_rows)
        except Exception:
            self.failed_batches += 1
            raise

    async def write_once(self, runs: Sequence[Row], attempt_rows: Sequence[Row]) -> None:
        """One transaction; if the database refuses the rows themselves, each run is tried alone
        and those refused again are set aside."""
        try:
            await asyncio.wait_for(self.store.write(runs, attempt_rows), self.write_timeout)
            return
        except Exception as exc:
            if not is_row_error(exc):
                raise
        by_request: dict[Any, list[Row]] = {}
        for attempt in attempt_rows:
            by_request.setdefault(attempt.get("request_id"), []).append(attempt)
        groups: list[tuple[Row | None, list[Row]]] = [(run, by_request.pop(run.get("request_id"), [])) for run in runs]
        groups += [(None, orphans) for orphans in by_request.values()]
        for run, its in groups:
            try:
                await asyncio.wait_for(self.store.write([run] if run else [], its), self.write_timeout)
            except Exception as exc:
                if not is_row_error(exc):
                    raise
                self._refused(run, its, exc)

    def set_aside(self, lines: Iterable[bytes]) -> None:
        """Keep lines the database will not take (unreadable, or refused) in the `.bad` file."""
        append_private(self.bad_path, b"".join(line if line.endswith(b"\n") else line + b"\n" for line in lines))

    def keep_unreadable(self, lines: list[bytes]) -> None:
        """Journal lines that cannot be read (a write cut short by a crash) go to the `.bad` file."""
        try:
            self.set_aside(lines)
        except OSError as exc:
            log.error("%d unreadable journal line(s) could not be kept in %s either (%s)",
                      len(lines), self.bad_path, describe(exc))
            return
        log.warning("%d unreadable line(s) in a journal of an earlier run (a write cut short by a crash?) "
                    "were set aside in %s", len(lines), self.bad_path)

    def _refused(self, run: Row | None, its: list[Row], exc: BaseException) -> None:
        request_id = (run or (its[0] if its else {})).get("request_id")
        try:
            self.set_aside([dump_line({"run": run, "attempts": its, "error": describe(exc)})])
        except OSError as write_error:
            self.lost += 1 if run else 0
            log.error("log row %s LOST: the database refused it (%s) and %s could not be written (%s)",
                      request_id, describe(exc), self.bad_path, describe(write_error))
            return
        self.refused += 1 if run else 0
        log.error("the database refused log row %s (%s): set aside in %s", request_id, describe(exc), self.bad_path)


def is_row_error(exc: BaseException | None) -> bool:
    """True when the database refused the rows themselves (a value out of range, a constraint),
    False when it is unavailable (locked, read-only, full, unreachable), where waiting helps.

    A SQLite file's writes raise sqlite3's own errors (OverflowError for an integer past 64
    bits); PostgreSQL's come wrapped by SQLAlchemy, the driver's error in `orig`.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (OverflowError, sa_exc.IntegrityError, sa_exc.DataError, sqlite3.IntegrityError, sqlite3.DataError)):
            return True
        state = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
        if isinstance(state, str) and state[:2] in ("22", "23"):  # PostgreSQL: data exception, integrity
            return True
        exc = getattr(exc, "orig", None) or exc.__cause__
    return False
