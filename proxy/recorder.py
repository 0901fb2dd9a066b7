"""The recorder: every finished call's row, from the handler to the database, and never lost.

The road of a row:

1. the handler finishes a `CallRecord` and calls `Recorder.submit` (via `ProxyAPI.submit`,
   or `RelayedStream` before a stream's last event), before the answer leaves;
2. durability `process` or `power`: at the next turn of the event loop (at once when the
   call is alone), `GroupCommit` (`proxy.group_commit`) has the backlog append the journal
   lines of every record submitted meanwhile (`proxy.logrow`: the record's facts) to this
   process's journal with one write (`proxy.journal`), which makes them safe from the death
   of the process; `power` also fdatasyncs them. Their answers wait for that
   (`GroupCommit.durable_send`, which the app puts around every request's `send`);
3. the backlog (`proxy.backlog`) keeps the records in memory, bounded in bytes; past the
   bound, on disk only. With `none`, records wait in memory and reach no disk first;
4. the one writer task takes batches from the backlog, renders their rows many at a time
   (`CallRecord.rows()`; a small batch first waits `linger`, 20 ms, for company) and writes
   each batch in one transaction (`proxy.log_writer`, then `proxy.store`: one SQLite
   writer thread);
5. once a batch is committed, the journal deletes the files whose rows are all in the
   database. At the next start, journals left by dead processes are written first
   (`proxy.orphans`); rows are keyed by request id and never written twice.

When the database cannot be written, the recorder logs one warning, keeps the rows (memory,
then journal) and tries again every `retry_interval` seconds. When neither the journal nor
memory can take a row, `accepting` turns False and the proxy refuses new calls (503
`log_unavailable`), unless `serve_unlogged`, which serves them and counts the rows in `lost`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from . import log_health
from .backlog import Backlog, Batch
from .config_sections import DURABILITY_MODES, LogPolicy
from .group_commit import GroupCommit
from .journal import Journal
from .log_writer import BatchWriter
from .logrow import describe, journal_line
from .orphans import adopt
from .pricing import Pricer
from .record import CallRecord
from .store import Store

log = logging.getLogger("proxy.recorder")

DEFAULT_MEMORY_BYTES = LogPolicy.memory_bytes
#: At shutdown a degraded recorder tries the database once more, unless it failed this recently.
FINAL_RETRY_GAP_S = 1.0


class Recorder:
    def __init__(
        self,
        store: Store,
        *,
        durability: str = "process",
        journal_dir: str | Path | None = None,
        memory_bytes: int = DEFAULT_MEMORY_BYTES,
        serve_unlogged: bool = False,
        max_batch: int = 500,
        linger: float = 0.02,
        retry_interval: float = 2.0,
        write_timeout: float | None = 30.0,
        stop_timeout: float = 10.0,
        retry_delay: float = 0.1,
    ) -> None:
        if durability not in DURABILITY_MODES:
            raise ValueError(f"durability must be one of {', '.join(DURABILITY_MODES)}, not {durability!r}")
        self.store = store
        self.durability = durability
        base = store.path if store.path is not None else Path.cwd() / "study_query_llm"
        self.journal = Journal(journal_dir or base.with_name(base.name + ".journal"), sync=durability == "power")
        self.commit = None if durability == "none" else GroupCommit(
            self._write_queued, self.journal.unsynced if durability == "power" else None)
        self._queued: list[CallRecord] = []  # submitted, for the next turn of the loop to journal
        self.legacy_spools = [base.with_name(base.name + ".spool.jsonl" + s) for s in (".replaying", "")]
        self.writer = BatchWriter(store, base.with_name(base.name + ".bad.jsonl"),
                                  write_timeout=write_timeout, retry_delay=retry_delay)
        self.backlog = Backlog(self.journal, memory_bytes, keep_unplaced=not serve_unlogged)
        self.serve_unlogged = serve_unlogged
        self.max_batch = max_batch
        self.linger = linger
        self.retry_interval = retry_interval
        self.stop_timeout = stop_timeout

        self.accepting = True  # False: the proxy refuses new calls (no place for their rows)
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = self._stopped = self._final_try = False
        self._degraded = False
        self._degraded_since = self._last_failure = 0.0
        self._next_retry = 0.0
        self._late_logged = False

        self.written = 0  # runs written to the database (from memory or read back from the journal)
        self.replayed = 0  # runs written from journals (and spools) of earlier runs
        self.torn = 0  # lines cut short by a crash mid-write, found in journals of earlier runs
        self.lost = 0  # rows lost at shutdown or after stop (their disk refused them)
        self.refused_calls = 0  # calls answered 503 `log_unavailable`

    # -- state -----------------------------------------------------------------------------

    @property
    def pricer(self) -> Pricer | None:
        """Prices the rows of records read back from a journal (the proxy's own pricer)."""
        return self.backlog.pricer

    @pricer.setter
    def pricer(self, pricer: Pricer | None) -> None:
        self.backlog.pricer = pricer

    @property
    def degraded(self) -> bool:
        """True while the database cannot be written."""
        return self._degraded

    @property
    def pending(self) -> int:
        """Rows not yet in the database (submitted this turn of the loop, in memory, or only on disk)."""
        return len(self._queued) + len(self.backlog)

    def stats(self) -> dict[str, Any]:
        """The counters `/healthz` shows (`proxy.log_health`)."""
        return log_health.stats(self)

    def health(self) -> tuple[int, dict[str, Any]]:
        """`/healthz`: (HTTP status, body); see `proxy.log_health`."""
        return log_health.health(self)

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the journal, migrate, write what dead processes left, then start the writer.

        Never raises for database trouble: the recorder starts degraded and keeps retrying.
        """
        self._closing = self._stopped = self._final_try = False
        self._wakeup = asyncio.Event()
        self.backlog.open_journal()
        try:
            self.backlog.orphans = adopt(self.journal.directory, self.journal.id, self.legacy_spools)
        except OSError as exc:
            log.error("cannot look for journals of earlier runs in %s: %s", self.journal.directory, describe(exc))
        try:
            if not self.store.migrated:
                await self.store.migrate()
            before = self.replayed
            while self.backlog.orphans and await self._step(await self.backlog.take(self.max_batch)):
                pass
            if self.replayed > before:
                # Counted as read back: a row that reached the database just before that run
                # stopped is among them (and is one row still).
                log.warning("%d log rows left in the journal %s by an earlier run are in the log now",
                            self.replayed - before, self.journal.directory)
        except Exception as exc:
            self._degrade(exc)
        self._task = asyncio.create_task(self._run(), name="recorder")

    def submit(self, record: CallRecord) -> None:
        """Keep a finished record's row; with `process` and `power`, journaled at the next turn
        of the event loop, before the answer leaves (`GroupCommit.durable_send`). Returns at once."""
        if self._stopped:
            self._late(record)
            return
        if self.commit is not None:
            self._queued.append(record)
            self.commit.submitted()  # `_write_queued` at the next turn of the loop
            return
        if not self.backlog.place(record):
            self._unplaced()
        self._wakeup.set()

    def _write_queued(self) -> None:
        """The group commit's write: every record submitted since the last one, in one append."""
        records, self._queued = self._queued, []
        try:
            if records and not self.backlog.place_batch(records):
                self._unplaced()
        except Exception:  # a bug must not cost the rows: they wait in memory as records
            log.exception("could not journal %d log rows; keeping them in memory", len(records))
            self.backlog.keep(records)
        self._wakeup.set()

    async def stop(self, timeout: float | None = None) -> None:
        """Write what can be written within `stop_timeout`; what is left stays in the journal."""
        task = self._task
        if task is None:
            return
        self._closing = True
        if self.commit is not None:
            self.commit.flush()
        self._wakeup.set()
        timeout = self.stop_timeout if timeout is None else timeout
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            log.error("the log writer did not finish within %gs of shutdown: the rest stays in the journal", timeout)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        except Exception:
            log.exception("the log writer failed at shutdown: the rest stays in the journal")
        self._task = None
        self._stopped = True
        await self._close_files()

    # -- the writer task -------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                if self._degraded:
                    if self._closing:
                        if self._final_try or time.monotonic() - self._last_failure < FINAL_RETRY_GAP_S:
                            return
                        self._final_try = True
                    elif loop.time() < self._next_retry:
                        await self._sleep()
                        continue
                    self._next_retry = loop.time() + self.retry_interval
                    self._retry_journal()
                backlog = self.backlog
                if (self.linger and not (self._closing or self._degraded or backlog.orphans)
                        and 0 < len(backlog.memory) < self.max_batch):
                    await asyncio.sleep(self.linger)
                batch = await backlog.take(self.max_batch)
                if batch is None:
                    if self._closing:
                        return
                    await self._sleep()
                    continue
                await self._step(batch)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not end the writer: the rows stay in the backlog
                log.exception("unexpected error in the log writer; carrying on")
                if self._closing:
                    return
                await asyncio.sleep(0.1)

    async def _sleep(self) -> None:
        """Wait for a new row; while degraded or without a journal, for the next retry too."""
        self._wakeup.clear()
        timeout = None
        if self._degraded:
            timeout = max(0.0, self._next_retry - asyncio.get_running_loop().time())
        elif self.backlog.journal_error is not None:
            timeout = self.retry_interval
        try:
            await asyncio.wait_for(self._wakeup.wait(), timeout)
        except TimeoutError:
            if not self._degraded:
                self._retry_journal()

    async def _step(self, batch: Batch | None) -> bool:
        """Write one batch and take it off the backlog; False if the database refused (degraded)."""
        if batch is None:
            return False
        if batch.torn:
            self.torn += 1
            batch.bad.append(batch.torn)
        if batch.bad:
            self.writer.keep_unreadable(batch.bad)
        if batch.runs or batch.attempts:
            try:
                await self.writer.write(batch.runs, batch.attempts)
            except Exception as exc:
                self._degrade(exc)
                return False
        self.backlog.done(batch)
        if batch.source == "earlier":
            self.replayed += len(batch.runs)
        else:
            self.written += len(batch.runs)
        if self._degraded:
            self._recover()
        if not self.accepting:
            self.accepting = not self.backlog.has_no_room
        return True

    # -- trouble ---------------------------------------------------------------------------

    def _degrade(self, exc: BaseException) -> None:
        self._last_failure = time.monotonic()
        self._next_retry = asyncio.get_running_loop().time() + self.retry_interval
        if self._degraded:
            return
        self._degraded = True
        self._degraded_since = time.monotonic()
        log.warning(
            "cannot write the log database %s (%s): log rows wait in memory (up to %d bytes) and in the "
            "journal %s, and go to the database once it can be written again (tried every %gs); "
            "requests are served as usual",
            self.store.display, describe(exc), self.backlog.memory_limit, self.journal.directory, self.retry_interval,
        )

    def _recover(self) -> None:
        self._degraded = False
        log.warning("the log database %s is writable again (after %.1fs): writing the rows that waited",
                    self.store.display, time.monotonic() - self._degraded_since)

    def _retry_journal(self) -> None:
        self.backlog.retry_journal()
        self.accepting = self.accepting or not self.backlog.has_no_room

    def _unplaced(self) -> None:
        """A row found no place: refuse new calls (unless serve_unlogged: the backlog counted it lost)."""
        if self.serve_unlogged:
            return
        if self.accepting:
            log.error("refusing new calls (503 log_unavailable): the journal %s cannot be written (%s) and "
                      "log rows in memory reached the bound of %d bytes", self.journal.directory,
                      self.backlog.journal_error, self.backlog.memory_limit)
        self.accepting = False

    # -- shutdown --------------------------------------------------------------------------

    async def _close_files(self) -> None:
        """Rows on no disk yet go to the journal; the journal keeps what is not in the database."""
        if self.commit is not None:
            await self.commit.close()  # writes what was submitted last, finishes the syncs
        left, lost = self.backlog.close()
        self.lost += lost
        if left:
            log.warning("%d log rows wait in the journal %s: they will be written to the database at the next start",
                        left, self.journal.directory)

    def _late(self, record: CallRecord) -> None:
        """A row submitted after stop (a straggler): into a journal of its own, for the next start."""
        if not self._late_logged:
            self._late_logged = True
            log.warning("log rows submitted after the recorder stopped go to the journal %s", self.journal.directory)
        self.lost += self.backlog.append_now([journal_line(record)])
        self.journal.close()


__all__ = ["Recorder"]
