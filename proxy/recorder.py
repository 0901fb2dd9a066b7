"""One writer task between the handlers and the database: handlers hand over, never wait.

Records wait in memory; the writer takes whatever is waiting (up to `max_batch`) and
writes it in one transaction, so batches grow by themselves under load. A small batch
first waits `linger` seconds (20 ms) for company: at a few hundred calls a second that
makes one commit of several rows instead of one commit per row, which cost the proxy's
core more than the call itself. `submit()` is synchronous and O(1) whatever the database does.

When the database cannot be written (locked past the busy timeout, missing, read-only,
out of space, server down), the batch is tried once more if it failed fast, then:

* the recorder logs ONE warning (which database, why, where the rows go) and becomes
  *degraded*: this batch and every later one are appended to the spool, a JSONL file next
  to the database (`proxy.spool.Spool`), so memory stays bounded and the proxy keeps serving;
* every `retry_interval` seconds it replays the spool into the database; once that works it
  logs that it recovered (and how many rows it replayed) and writes directly again. Rows
  that arrive during a long replay are spooled a batch at a time (into a fresh file,
  replayed next), so the outage's rows come first and memory stays flat;
* if the spool cannot be written either (read-only directory, full disk), rows are held in
  memory, up to `memory_limit` rows, and both are retried every `retry_interval`.
  **Past that bound new rows are dropped, counted in `lost` and logged as an error: this
  is the only place where a row can be lost** (besides a shutdown while both the database
  and the spool refuse rows, which is logged the same way).

Memory is otherwise bounded by time, not by count: records wait in `_pending` only while a
write is in progress (at most SQLite's busy timeout, or `write_timeout`).

A spool left by an earlier run is replayed by `start()` before any new row. `stop()` drains
everything: written, or spooled when the database is down, within `stop_timeout` seconds
(after which what is left is spooled synchronously); it never drops a row silently.

Rows are keyed by our own UUID request ids and `Store.write` skips rows already present, so
a batch written twice (a replay after a partial commit) never duplicates a row. A row that
the database refuses by itself (a value out of range, say) is not allowed to block the log:
it is written alone, and if refused again set aside in `<spool>.bad` with the error.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import exc as sa_exc

from .record import CallRecord
from .spool import RUN_COLUMNS, Spool, dump_line
from .store import Store

log = logging.getLogger("proxy.recorder")

Row = dict[str, Any]
Rows = list[tuple[Row, list[Row]]]  # (run row, its attempt rows)

#: A write that fails faster than this is retried once (a transient lock or connection blip);
#: one that already waited out SQLite's busy timeout is not waited out a second time.
FAST_FAILURE_S = 1.0
#: At shutdown a degraded recorder tries the database once more, unless it failed this recently.
FINAL_RETRY_GAP_S = 1.0
#: At most one "rows lost" error per this many seconds (with the running count).
LOST_LOG_INTERVAL_S = 10.0


class Recorder:
    def __init__(
        self,
        store: Store,
        max_batch: int = 500,
        linger: float = 0.02,
        high_water: int = 50_000,
        *,
        spool: Spool | str | os.PathLike[str] | None = None,
        retry_interval: float = 2.0,
        memory_limit: int = 100_000,
        write_timeout: float | None = 30.0,
        stop_timeout: float = 10.0,
        retry_delay: float = 0.1,
    ) -> None:
        self.store = store
        self.max_batch = max_batch
        self.linger = linger
        self.high_water = high_water
        if spool is None:
            spool = Spool.beside(store)
        self.spool = spool if isinstance(spool, Spool) else Spool(spool)
        self.retry_interval = retry_interval
        self.memory_limit = memory_limit
        self.write_timeout = write_timeout
        self.stop_timeout = stop_timeout
        self.retry_delay = retry_delay

        self._pending: deque[CallRecord] = deque()
        self._held: deque[tuple[Row, list[Row]]] = deque()  # rows neither the database nor the spool took
        self._inflight: Rows | None = None
        self._wakeup = asyncio.Event()
        self._closing = False
        self._stopped = False
        self._task: asyncio.Task[None] | None = None
        self._degraded = False
        self._degraded_since = 0.0
        self._episode_replayed = 0
        self._spool_broken = False
        self._next_retry = 0.0
        self._last_failure = 0.0
        self._lost_logged_at: float | None = None
        self._late_logged = False

        self.written = 0  # runs written to the database directly
        self.failed_batches = 0  # failed write calls
        self.spooled = 0  # runs appended to the spool
        self.replayed = 0  # runs written from the spool to the database
        self.refused = 0  # runs the database refused by themselves, set aside in <spool>.bad
        self.lost = 0  # runs dropped: the memory bound was reached with database and spool both down

    # -- state -----------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def held(self) -> int:
        """Rows kept in memory because neither the database nor the spool could take them."""
        return len(self._held)

    @property
    def degraded(self) -> bool:
        """True while the database cannot be written and rows go to the spool (or memory)."""
        return self._degraded

    def stats(self) -> dict[str, Any]:
        return {
            "pending": self.pending,
            "written": self.written,
            "degraded": self._degraded,
            "spool": str(self.spool.path),
            "spooled": self.spooled,
            "replayed": self.replayed,
            "held_in_memory": self.held,
            "refused": self.refused,
            "lost": self.lost,
        }

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Migrate if needed, replay a spool left by an earlier run, then start the writer.

        Never raises for database trouble: the recorder starts degraded and keeps retrying.
        """
        self._closing = False
        self._stopped = False
        self._wakeup = asyncio.Event()
        try:
            if not self.store.migrated:
                await self.store.migrate()
            if self.spool.exists():
                count = await self._replay()
                if count:
                    log.warning(
                        "wrote %d log rows left in the spool %s by an earlier run", count, self.spool.path
                    )
        except Exception as exc:
            self._degrade(exc)
        self._task = asyncio.create_task(self._run(), name="recorder")

    def submit(self, record: CallRecord) -> None:
        """Hand a finished record over; returns at once, whatever the database is doing."""
        if self._stopped:  # after shutdown (a straggler): straight to the spool, replayed at next start
            if not self._late_logged:
                self._late_logged = True
                log.warning("log rows submitted after the recorder stopped go to the spool %s", self.spool.path)
            self._spool_now(self._render([record]))
            return
        self._pending.append(record)
        if len(self._pending) == self.high_water:
            log.warning("%d log rows waiting: the database is not keeping up", self.high_water)
        self._wakeup.set()

    async def stop(self, timeout: float | None = None) -> None:
        """Write (or spool) everything still waiting, then end the writer task; bounded in time."""
        task = self._task
        if task is None:
            return
        self._closing = True
        self._wakeup.set()
        timeout = self.stop_timeout if timeout is None else timeout
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            log.error("the log writer did not finish within %gs of shutdown: spooling what is left", timeout)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            self._spool_leftovers()
        except Exception:
            log.exception("the log writer failed at shutdown: spooling what is left")
            self._spool_leftovers()
        self._task = None
        self._stopped = True

    # -- the writer task -------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                if self._degraded and asyncio.get_running_loop().time() >= self._next_retry:
                    await self._recover()
                if self._pending:
                    if len(self._pending) < self.max_batch and self.linger and not (self._closing or self._degraded):
                        await asyncio.sleep(self.linger)
                    batch = [self._pending.popleft() for _ in range(min(self.max_batch, len(self._pending)))]
                    await self._process(batch)
                    continue
                if self._closing:
                    await self._finish()
                    return
                await self._sleep()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not end the writer: keep the rows, carry on
                log.exception("unexpected error in the log writer; carrying on")
                if self._inflight:
                    self._hold(self._inflight)
                    self._inflight = None
                if self._closing:
                    self._spool_leftovers()
                    return
                await asyncio.sleep(0.1)

    async def _sleep(self) -> None:
        """Wait for a new record, or for the next retry while degraded."""
        self._wakeup.clear()
        timeout = None
        if self._degraded:
            timeout = max(0.0, self._next_retry - asyncio.get_running_loop().time())
        try:
            await asyncio.wait_for(self._wakeup.wait(), timeout)
        except TimeoutError:
            pass

    async def _process(self, records: list[CallRecord]) -> None:
        rows = self._render(records)
        self._inflight = rows  # until written or spooled: what shutdown spools if the task is cancelled
        if not self._degraded:
            try:
                await self._write_with_retry(rows)
                self.written += len(rows)
                self._inflight = None
                return
            except Exception as exc:
                self._degrade(exc)
        await self._spool_or_hold(rows)
        self._inflight = None

    async def _finish(self) -> None:
        """At shutdown, with nothing pending: one last chance for the database, then memory → spool."""
        if self._degraded and time.monotonic() - self._last_failure >= FINAL_RETRY_GAP_S:
            await self._recover()
        if self._held:
            await self._move_held_to_spool()
        while self._held:  # the spool is unwritable: the database is the last chance
            chunk = [self._held[i] for i in range(min(self.max_batch, len(self._held)))]
            try:
                await self._write(*_flatten(chunk))
            except Exception as exc:
                self.lost += len(self._held)
                log.error(
                    "%d log rows LOST at shutdown: neither the database (%s) nor the spool %s could take them",
                    len(self._held), _describe(exc), self.spool.path,
                )
                self._held.clear()
                break
            for _ in chunk:
                self._held.popleft()
            self.written += len(chunk)
        if self.lost:
            log.error("%d log rows were LOST in this run (database and spool both unwritable)", self.lost)
        if self._degraded and self.spool.exists():
            log.warning(
                "log rows are waiting in the spool %s (%d spooled by this run): they will be written "
                "to the database at the next start", self.spool.path, self.spooled,
            )

    # -- writing ---------------------------------------------------------------------------

    async def _write_with_retry(self, rows: Rows) -> None:
        runs, attempt_rows = _flatten(rows)
        started = time.monotonic()
        try:
            await self._write(runs, attempt_rows)
            return
        except Exception as exc:
            self.failed_batches += 1
            if time.monotonic() - started > FAST_FAILURE_S:
                raise
            log.info("log write failed (%s); retrying once in %gs", _describe(exc), self.retry_delay)
        await asyncio.sleep(self.retry_delay)
        try:
            await self._write(runs, attempt_rows)
        except Exception:
            self.failed_batches += 1
            raise

    async def _write(self, runs: Sequence[Row], attempt_rows: Sequence[Row]) -> None:
        """One transaction; if the database refuses the rows themselves, each run is tried alone
        and those refused again are set aside, so that one bad row cannot block the log."""
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
                self._set_aside(run, its, exc)

    def _set_aside(self, run: Row | None, its: list[Row], exc: BaseException) -> None:
        request_id = (run or (its[0] if its else {})).get("request_id")
        try:
            self.spool.set_aside([dump_line({"run": run, "attempts": its, "error": _describe(exc)})])
        except Exception as write_error:
            self.lost += 1 if run else 0
            log.error(
                "log row %s LOST: the database refused it (%s) and %s could not be written (%s)",
                request_id, _describe(exc), self.spool.bad_path, _describe(write_error),
            )
            return
        self.refused += 1 if run else 0
        log.error("the database refused log row %s (%s): set aside in %s", request_id, _describe(exc), self.spool.bad_path)

    async def _replay(self) -> int:
        before = self.spool.replayed
        try:
            await self.spool.replay(write=self._write, batch_size=self.max_batch, between_batches=self._spool_pending)
        finally:  # files replayed to the end count, even if a later one failed
            count = self.spool.replayed - before
            self.replayed += count
            self._episode_replayed += count
        return count

    async def _spool_pending(self) -> None:
        """During a replay while degraded: once a batch of new rows has piled up, spool it (into a
        fresh file, replayed next) rather than let memory grow with a long replay. Fewer rows
        wait, and are written directly once the replay is done."""
        while self._degraded and len(self._pending) >= self.max_batch:
            await self._process([self._pending.popleft() for _ in range(self.max_batch)])

    # -- degraded mode ---------------------------------------------------------------------

    def _degrade(self, exc: BaseException) -> None:
        self._last_failure = time.monotonic()
        self._next_retry = asyncio.get_running_loop().time() + self.retry_interval
        if self._degraded:
            return
        self._degraded = True
        self._degraded_since = time.monotonic()
        self._episode_replayed = 0
        log.warning(
            "cannot write the log database %s (%s): log rows now go to the spool file %s and will be "
            "written to the database once it can be written again (tried every %gs); requests are served as usual",
            self.store.display, _describe(exc), self.spool.path, self.retry_interval,
        )

    async def _recover(self) -> bool:
        """Replay the spool (and rows held in memory) into the database; True once it worked."""
        self._next_retry = asyncio.get_running_loop().time() + self.retry_interval
        if self._held:
            await self._move_held_to_spool()
        from_memory = 0
        try:
            if self.spool.exists():
                await self._replay()
            if self.spool.exists():  # rows kept arriving faster than they were replayed: go on at once
                self._next_retry = asyncio.get_running_loop().time()
                return False
            while self._held:
                chunk = [self._held[i] for i in range(min(self.max_batch, len(self._held)))]
                await self._write(*_flatten(chunk))
                for _ in chunk:
                    self._held.popleft()
                from_memory += len(chunk)
                self.written += len(chunk)
        except Exception as exc:
            self._last_failure = time.monotonic()
            log.debug("the log database still cannot be written: %s", _describe(exc))
            return False
        if self._degraded:
            self._degraded = False
            self._spool_broken = False
            log.warning(
                "the log database %s is writable again (after %.1fs): %d rows replayed from the spool %s%s",
                self.store.display, time.monotonic() - self._degraded_since, self._episode_replayed, self.spool.path,
                f" and {from_memory} from memory" if from_memory else "",
            )
        return True

    async def _spool_or_hold(self, rows: Rows) -> None:
        if self._spool_broken:  # retried on the retry tick, not once per batch
            self._hold(rows)
            return
        try:
            await asyncio.to_thread(self.spool.append, *_flatten(rows))
            self.spooled += len(rows)
        except Exception as exc:
            self._spool_failed(exc)
            self._hold(rows)

    async def _move_held_to_spool(self) -> None:
        """Held rows → spool, a batch at a time (a broken spool costs one small try, not a big one)."""
        moved = 0
        while self._held:
            chunk = [self._held[i] for i in range(min(self.max_batch, len(self._held)))]
            try:
                await asyncio.to_thread(self.spool.append, *_flatten(chunk))
            except Exception as exc:
                self._spool_failed(exc)
                return
            for _ in chunk:
                self._held.popleft()
            moved += len(chunk)
            self.spooled += len(chunk)
        if self._spool_broken:
            self._spool_broken = False
            log.warning("the log spool %s can be written again: %d rows moved there from memory", self.spool.path, moved)

    def _spool_failed(self, exc: BaseException) -> None:
        if self._spool_broken:
            return
        self._spool_broken = True
        log.error(
            "cannot write the log spool %s either (%s): keeping up to %d log rows in memory, retrying every %gs",
            self.spool.path, _describe(exc), self.memory_limit, self.retry_interval,
        )

    def _hold(self, rows: Rows) -> None:
        room = max(0, self.memory_limit - len(self._held))
        if len(rows) > room:
            self.lost += len(rows) - room
            rows = rows[:room]
            now = time.monotonic()
            if self._lost_logged_at is None or now - self._lost_logged_at >= LOST_LOG_INTERVAL_S:
                self._lost_logged_at = now
                log.error(
                    "%d log rows LOST so far: the database %s and the spool %s both refuse rows and %d are "
                    "already held in memory (the limit)",
                    self.lost, self.store.display, self.spool.path, self.memory_limit,
                )
        self._held.extend(rows)

    def _spool_now(self, rows: Rows) -> None:
        """Blocking append for the last moments (shutdown timeout, rows after stop)."""
        if not rows:
            return
        try:
            self.spool.append(*_flatten(rows))
            self.spooled += len(rows)
        except Exception as exc:
            self.lost += len(rows)
            log.error("%d log rows LOST: the spool %s cannot be written (%s)", len(rows), self.spool.path, _describe(exc))

    def _spool_leftovers(self) -> None:
        rows: Rows = list(self._inflight or []) + list(self._held)
        self._inflight = None
        self._held.clear()
        pending = list(self._pending)
        self._pending.clear()
        rows += self._render(pending)
        if rows:
            self._spool_now(rows)
            log.warning("%d log rows were spooled to %s at shutdown: they will be written at the next start",
                        len(rows), self.spool.path)

    # -- rows ------------------------------------------------------------------------------

    def _render(self, records: Iterable[CallRecord]) -> Rows:
        rows: Rows = []
        for record in records:
            try:
                rows.append(record.rows())
            except Exception as exc:  # a bug in rendering must not cost the row
                log.exception("could not build the log row of request %s; storing what is known", record.request_id)
                rows.append(_fallback_rows(record, exc))
        return rows


def _flatten(rows: Rows) -> tuple[list[Row], list[Row]]:
    runs = [run for run, _ in rows]
    attempt_rows = [a for _, its in rows for a in its]
    return runs, attempt_rows


def _describe(exc: BaseException) -> str:
    """`Type: first line of the message` (SQLAlchemy appends the statement on later lines)."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message[:300]}" if message else type(exc).__name__


def is_row_error(exc: BaseException | None) -> bool:
    """True when the database refused the rows themselves (a value out of range, a constraint),
    False when it is unavailable (locked, read-only, full, unreachable), where spooling helps.

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


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) or value is None else str(value)


def _fallback_rows(record: CallRecord, exc: BaseException) -> tuple[Row, list[Row]]:
    """The facts that are sure to store, when `record.rows()` failed."""
    run: Row = {name: default for name, default, _ in RUN_COLUMNS}
    error = f"log row incomplete ({_describe(exc)})"
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
    return run, []


__all__ = ["Recorder", "is_row_error"]
