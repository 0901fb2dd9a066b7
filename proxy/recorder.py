"""One writer task between the handlers and the database: handlers hand over, never wait.

Records wait in memory; the writer takes whatever is waiting (up to `max_batch`) and
writes it in one transaction, so batches grow by themselves under load and a lone
request is written at once. On shutdown everything waiting is written before exit.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from .record import CallRecord
from .store import Store

log = logging.getLogger("proxy.recorder")


class Recorder:
    def __init__(self, store: Store, max_batch: int = 500, high_water: int = 50_000) -> None:
        self.store = store
        self.max_batch = max_batch
        self.high_water = high_water
        self._pending: deque[CallRecord] = deque()
        self._wakeup = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self.written = 0
        self.failed_batches = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def start(self) -> None:
        self._closing = False
        self._task = asyncio.create_task(self._run(), name="recorder")

    def submit(self, record: CallRecord) -> None:
        """Hand a finished record over; returns at once, whatever the database is doing."""
        self._pending.append(record)
        if len(self._pending) == self.high_water:
            log.warning("%d log rows waiting: the database is not keeping up", self.high_water)
        self._wakeup.set()

    async def stop(self) -> None:
        """Write everything still waiting, then end the writer task."""
        if self._task is None:
            return
        self._closing = True
        self._wakeup.set()
        await self._task
        self._task = None

    async def _run(self) -> None:
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = [self._pending.popleft() for _ in range(min(self.max_batch, len(self._pending)))]
            await self._write(batch)

    async def _write(self, records: list[CallRecord]) -> None:
        runs, attempt_rows = [], []
        for record in records:
            run, attempts = record.rows()
            runs.append(run)
            attempt_rows.extend(attempts)
        for delay in (0.1, 0.5, 2.0, None):
            try:
                await self.store.write(runs, attempt_rows)
                self.written += len(runs)
                return
            except Exception as exc:  # locked, missing or full database: try again, then say so
                self.failed_batches += 1
                if delay is None:
                    log.error("could not write %d log rows: %s: %s", len(runs), type(exc).__name__, exc)
                    return
                log.warning("log write failed (%s); retrying in %.1fs", type(exc).__name__, delay)
                await asyncio.sleep(delay)
