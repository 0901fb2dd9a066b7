"""The rows accepted but not yet in the database: where each one waits, and the order they leave in.

* durability `process` or `power`: the recorder hands over, once per turn of the event loop,
  every record finished meanwhile (`place_batch`): their journal lines (`logrow.journal_line`)
  are appended with one write, and the records kept in memory;
* durability `none`: each record is kept in memory as it is (`place`), on no disk;
* either way the writer renders the rows later, many at a time (`take`), `RENDER_SLICE` rows
  between two turns of the event loop, so that no answer waits behind a whole batch. Memory
  is bounded in bytes (a record counts its journal line, or its texts when it has none). Past the bound,
  rows go to the journal only (`spill`): from then on every new row does, until the writer has
  read them all back, so they stay in order and memory stays flat.

A row that neither the journal (it failed: `journal_error`) nor memory (full) can take has no
place: with `keep_unplaced` it is kept in memory all the same, over the bound (the recorder then
refuses new calls, so only the calls already in flight add to it); otherwise it is dropped and
counted in `lost` (the operator chose to serve calls that cannot be logged).

`take(n)` gives the writer its next batch, oldest first: journals left by dead processes
(`proxy.orphans`), then memory, then the rows only on disk. Nothing leaves the backlog until
`done(batch)`, called once the batch is in the database: a failed write is simply taken again.
`done` tells the journal, which deletes a file once all of its rows are in the database.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from .journal import Journal, Segment, read_lines
from .logrow import Row, decode, describe, flatten, journal_line, rows_of
from .orphans import Orphan
from .pricing import Pricer
from .record import CallRecord

log = logging.getLogger("proxy.recorder")

#: What a record held in memory is taken to cost besides its texts (dicts, timings, attempts).
RECORD_OVERHEAD_BYTES = 1024

Entry = tuple[CallRecord, int, float, Segment | None]  # record, bytes, when, journal file holding it
#: At most one "rows lost" error per this many seconds (with the running count).
LOST_LOG_INTERVAL_S = 10.0
#: Rows rendered in one go (about 1 ms of CPU): a batch of 500 at once held every call for 10-25 ms.
RENDER_SLICE = 32


@dataclass(slots=True)
class Batch:
    """Rows for one transaction, and what `done` must do once they are in the database."""

    source: str  # "earlier" (a dead process's journal), "memory" or "disk" (this journal, read back)
    runs: list[Row]
    attempts: list[Row]
    taken: int = 0  # memory entries, or journal lines, this batch takes off the backlog
    resume: Any = None  # where the source goes on: a file offset, or (segment, offset)
    bad: list[bytes] = field(default_factory=list)  # unreadable lines, for the .bad file
    torn: bytes = b""  # a last line cut short by a crash


class Backlog:
    def __init__(self, journal: Journal, memory_limit: int, *, keep_unplaced: bool) -> None:
        self.journal = journal
        self.memory_limit = memory_limit
        self.keep_unplaced = keep_unplaced
        self.memory: deque[Entry] = deque()
        self.memory_bytes = 0
        self.pricer: Pricer | None = None  # for records read back from a journal
        self.spill: tuple[Segment, int] | None = None  # the first row that is only on disk
        self.spill_since = 0.0
        self.on_disk_only = 0
        self.orphans: list[Orphan] = []
        self.journal_error: str | None = None  # why the last append failed; None: the next row tries
        self.journal_down = False  # from a failed append (or open) to the next one that works
        self.journaled = 0
        self.lost = 0
        self._lost_logged_at = -LOST_LOG_INTERVAL_S

    # -- placing a row ---------------------------------------------------------------------

    def place(self, record: CallRecord) -> bool:
        """`none`: keep the record in memory as it is; past the bound, it goes to the journal."""
        if self.memory_bytes >= self.memory_limit or self.spill is not None:
            return self.place_batch([record])
        size = _record_size(record)
        self.memory.append((record, size, time.monotonic(), None))
        self.memory_bytes += size
        return True

    def keep(self, records: list[CallRecord]) -> None:
        """Keep records in memory as they are, on no disk."""
        now = time.monotonic()
        for record in records:
            size = _record_size(record)
            self.memory.append((record, size, now, None))
            self.memory_bytes += size

    def place_batch(self, records: list[CallRecord]) -> bool:
        """Append the records' journal lines with one write and keep the records; False if
        some row had no place."""
        lines = [journal_line(record) for record in records]
        data = lines[0] if len(lines) == 1 else b"".join(lines)
        segment = None
        if self.journal_error is None and self.journal.is_open:
            try:
                segment = self.journal.append(data, len(lines))
            except OSError as exc:
                self.journal_failed(exc)
            else:
                self.journaled += len(lines)
                if self.journal_down:
                    self.journal_works()
        offset = segment.size - len(data) if segment is not None else 0
        now, placed = time.monotonic(), True
        for record, line in zip(records, lines):
            size = len(line)
            if segment is not None:
                if self.spill is not None or self.memory_bytes + size > self.memory_limit:
                    if self.spill is None:
                        self.spill, self.spill_since = (segment, offset), now
                    self.on_disk_only += 1
                    offset += size
                    continue
                offset += size
            elif self.memory_bytes + size > self.memory_limit:
                placed = False
                if not self.keep_unplaced:
                    self._lose()
                    continue
            self.memory.append((record, size, now, segment))
            self.memory_bytes += size
        return placed

    def _lose(self) -> None:
        self.lost += 1
        now = time.monotonic()
        if now - self._lost_logged_at >= LOST_LOG_INTERVAL_S:
            self._lost_logged_at = now
            log.error("%d log rows LOST so far: the journal %s cannot be written (%s) and memory is full; "
                      "calls are served unlogged (serve_unlogged)", self.lost, self.journal.directory,
                      self.journal_error)

    def open_journal(self) -> None:
        try:
            self.journal.open()
        except OSError as exc:
            self.journal_failed(exc)
        else:
            self.journal_works()

    def retry_journal(self) -> None:
        """Every retry interval while the journal fails: open it again if need be, and let the
        next row try it (a call let through to find out)."""
        if self.journal_error is None:
            return
        self.journal_error = None
        if not self.journal.is_open:
            self.open_journal()

    def journal_failed(self, exc: BaseException) -> None:
        if not self.journal_down:
            log.error("cannot write the log journal in %s (%s): new log rows are kept in memory only, "
                      "up to %d bytes, until it can be written again", self.journal.directory, describe(exc),
                      self.memory_limit)
        self.journal_error, self.journal_down = describe(exc), True

    def journal_works(self) -> None:
        if self.journal_down:
            log.warning("the log journal in %s can be written again", self.journal.directory)
        self.journal_error, self.journal_down = None, False

    @property
    def has_no_room(self) -> bool:
        """No room for another row: the journal fails and memory is full."""
        return self.journal_error is not None and self.memory_bytes >= self.memory_limit

    # -- the writer's side -----------------------------------------------------------------

    def __len__(self) -> int:
        """Rows waiting in memory or only on disk (journals of earlier runs not counted)."""
        return len(self.memory) + self.on_disk_only

    def oldest(self) -> float | None:
        """When the oldest row waiting arrived (monotonic), None if none waits."""
        times = []
        if self.memory:
            times.append(self.memory[0][2])
        if self.spill is not None:
            times.append(self.spill_since)
        return min(times, default=None)

    async def take(self, limit: int) -> Batch | None:
        """The next batch to write, oldest first; None when nothing waits."""
        while self.orphans:
            orphan = self.orphans[0]
            try:
                lines, offset, torn = await asyncio.to_thread(orphan.read, limit)
            except OSError as exc:
                log.error("cannot read %s, left by an earlier run (%s): leaving it for a later start",
                          orphan.files[0], describe(exc))
                orphan.release()
                self.orphans.pop(0)
                continue
            batch = Batch("earlier", [], [], len(lines), offset, torn=b"" if lines else torn)  # torn: at the end
            batch.runs, batch.attempts = decode(lines, batch.bad, self.pricer)
            return batch
        if self.memory:
            records = [record for record, _, _, _ in islice(self.memory, limit)]
            batch = Batch("memory", [], [], len(records))
            for start in range(0, len(records), RENDER_SLICE):
                if start:
                    await asyncio.sleep(0)  # the calls in flight go on between two slices
                runs, attempt_rows = flatten(rows_of(record) for record in records[start:start + RENDER_SLICE])
                batch.runs += runs
                batch.attempts += attempt_rows
            return batch
        if self.spill is not None:
            return await self._read_back(limit)
        return None

    def done(self, batch: Batch) -> None:
        """The batch is in the database (or set aside): take it off the backlog."""
        if batch.source == "memory":
            settled: dict[Segment, int] = {}
            for _ in range(batch.taken):
                _, size, _, segment = self.memory.popleft()
                self.memory_bytes -= size
                if segment is not None:
                    settled[segment] = settled.get(segment, 0) + 1
            for segment, count in settled.items():
                self.journal.settle(segment, count)
        elif batch.source == "disk":
            segment, offset = batch.resume
            self.spill = (segment, offset)
            self.on_disk_only -= batch.taken
            if self.spill == self.journal.end():  # caught up: new rows go to memory again
                self.spill = None
            elif batch.taken:
                self.spill_since = time.monotonic()
            self.journal.settle(segment, batch.taken)
        else:
            orphan = self.orphans[0]
            if batch.taken:
                orphan.offset = batch.resume
                return
            orphan.next_file()  # read to its end
            if not orphan.files:
                orphan.finish()
                self.orphans.pop(0)

    async def _read_back(self, limit: int) -> Batch:
        segment, offset = self.spill  # type: ignore[misc]
        while True:
            current, end = self.journal.end()
            stop = end if segment is current else segment.size
            if offset < stop or segment is current:
                break
            segment, offset = self.journal.following(segment), 0  # a full file read: the next one
            assert segment is not None
        lines, offset, _ = await asyncio.to_thread(read_lines, segment.path, offset, stop, limit)
        batch = Batch("disk", [], [], len(lines), (segment, offset))
        batch.runs, batch.attempts = decode(lines, batch.bad, self.pricer)
        return batch

    # -- shutdown --------------------------------------------------------------------------

    def close(self) -> tuple[int, int]:
        """At shutdown: records in memory that are on no disk are appended to the journal, which
        then keeps what is not in the database. Returns (rows left on disk, rows lost)."""
        lines = [journal_line(record) for record, _, _, segment in self.memory if segment is None]
        self.memory.clear()
        self.memory_bytes = 0
        lost = self.append_now(lines)
        left = self.journal.close()
        for orphan in self.orphans:
            orphan.release()
        return left, lost

    def append_now(self, lines: list[bytes]) -> int:
        """Append lines at once, opening the journal if need be; returns how many were lost."""
        done = 0
        try:
            if lines and not self.journal.is_open:
                self.journal.open()
            for line in lines:
                self.journal.append(line)
                done += 1
        except OSError as exc:
            log.error("%d log rows LOST: neither the database nor the journal %s could take them (%s)",
                      len(lines) - done, self.journal.directory, describe(exc))
        return len(lines) - done


def _record_size(record: CallRecord) -> int:
    return (len(record.request_text or "") + len(record.response_body or b"")
            + len(record.response_text or "") + RECORD_OVERHEAD_BYTES)
