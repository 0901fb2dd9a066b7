"""Group commit: the rows of one turn of the event loop reach the journal together, and the
answers wait for it (durabilities `process` and `power`).

`submitted()` hands each row a ticket (a running count) and schedules one `flush` for the
next turn of the loop; the flush appends the journal lines of every row submitted meanwhile
with one write (the recorder's `write`). An answer's `send` goes through `durable_send`, which
waits until its row's ticket is written, and with `power` also synced: one fdatasync at a
time, in a thread of its own, covering every row written before it started. Under load one
write and one sync carry the rows of many calls; with few calls in progress an answer writes
its row at once instead of waiting for company (`active`, counted by the app). Writing each
row with a write of its own between network events cost the proxy several times more
(bench/README.md, "Durability").

A failed sync is logged and the answers still go (holding them forever would not make the
rows safer); `failed` tells `/healthz`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar

from starlette.types import Message, Send

log = logging.getLogger("proxy.journal")

#: The ticket of the last row this task (one request) submitted; its answer waits for it.
LAST_TICKET: ContextVar[int] = ContextVar("journal_ticket", default=0)

_fdatasync = getattr(os, "fdatasync", os.fsync)
#: With at most this many calls in progress, an answer writes its row itself rather than wait
#: for company (bench/README.md, "Durability").
GROUP_BELOW = 4


class GroupCommit:
    def __init__(self, write: Callable[[], None], unsynced: Callable[[], list[int]] | None = None) -> None:
        """`write` appends every row submitted so far; `unsynced` (power only) gives the
        descriptors written since it was last called, for the sync."""
        self._write = write
        self._unsynced = unsynced
        self.queued = 0  # tickets handed out
        self.written = 0  # tickets in the journal
        self.synced = 0  # tickets synced to disk (power)
        self.failed: str | None = None  # the last sync error, until a sync succeeds
        self.active = 0  # calls in progress (the app counts them)
        self._scheduled = False
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()  # (ticket, future), tickets rising
        self._sync_task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="journal-fsync") if unsynced else None

    @property
    def durable(self) -> int:
        """Tickets whose rows are as safe as the durability promises."""
        return self.synced if self._unsynced else self.written

    def submitted(self) -> None:
        """A row was submitted by this task: the next turn of the loop writes it."""
        self.queued += 1
        LAST_TICKET.set(self.queued)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._scheduled_flush)

    def flush(self) -> None:
        """Write every row submitted so far, then let their answers go (or sync them first)."""
        target = self.queued
        if target == self.written:
            return
        try:
            self._write()
        finally:
            self.written = target  # `process`: its answers see it when they resume
            if self._unsynced is not None and self._sync_task is None:
                self._sync_task = asyncio.get_running_loop().create_task(self._sync_all(), name="journal-fsync")

    def _scheduled_flush(self) -> None:
        self._scheduled = False
        self.flush()

    def durable_send(self, send: Send) -> Send:
        """`send`, made to wait until the last row this task submitted is durable.

        With at most `GROUP_BELOW` calls in progress (`active`, counted by the app) an answer
        writes its row (with any other queued) at once: there is little company to wait for,
        and at moderate load a wait costs milliseconds. Otherwise it waits one turn of the
        loop, in which the flush scheduled with the rows runs first. (Waiting for a future
        took two turns: at 1,400 req/s with 32 connections the p50 was 6 ms against 2 ms
        without a journal.)
        """

        async def wait_then_send(message: Message) -> None:
            ticket = LAST_TICKET.get()
            if ticket > self.durable:
                if ticket > self.written and self.active <= GROUP_BELOW:
                    self.flush()
                if self._unsynced is None:
                    while ticket > self.written:  # a flush is scheduled until then (`submitted`)
                        await asyncio.sleep(0)
                elif ticket > self.durable:
                    future = asyncio.get_running_loop().create_future()
                    self._waiters.append((self.queued, future))  # queued only grows: the deque stays sorted
                    await future
            await send(message)

        return wait_then_send

    async def close(self) -> None:
        """Write what is queued, finish the syncs, end the thread."""
        self.flush()
        if self._sync_task is not None:
            await asyncio.gather(self._sync_task, return_exceptions=True)
        if self._executor is not None:
            self._executor.shutdown(wait=False)

    def _release(self, upto: int) -> None:
        waiters = self._waiters
        while waiters and waiters[0][0] <= upto:
            _, future = waiters.popleft()
            if not future.done():
                future.set_result(None)

    async def _sync_all(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.synced < self.written:
                target = self.written
                assert self._unsynced is not None
                error = await loop.run_in_executor(self._executor, sync_all, self._unsynced())
                if error and error != self.failed:
                    log.error("cannot sync the journal to disk (%s): rows may not survive a power cut", error)
                self.failed = error
                self.synced = target
                self._release(target)
        finally:
            self._sync_task = None
            if self.synced < self.written:  # only after an unexpected error: never strand an answer
                self.synced = self.written
                self._release(self.synced)


def sync_all(fds: list[int]) -> str | None:
    """fdatasync each descriptor; the last error, if any."""
    error = None
    for fd in fds:
        try:
            _fdatasync(fd)
        except OSError as exc:  # a file settled and closed meanwhile (its rows are in the database)
            if exc.errno not in (errno.EBADF, errno.EINVAL):
                error = f"{type(exc).__name__}: {exc}"
    return error
