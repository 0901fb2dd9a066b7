"""`/ui/` for a PostgreSQL log: Datasette over a SQLite copy that `serve` keeps up to date.

Datasette reads SQLite only. With a PostgreSQL `DATABASE_URL`, `serve` makes a copy
(`analytics.export`) at `[ui] copy_path` (default `./study_query_llm.ui-copy.db`) and
refreshes it every `[ui] refresh` seconds (default 60) in the background; each refresh copies
only the new rows. The start page shows how old the copy is.

Several processes may serve the same copy: a refresh takes an exclusive lock on
`<copy>.lock` first, and a process that finds it taken skips that round (another one is
refreshing). A refresh that fails (PostgreSQL away) logs one warning, keeps the copy as it
is and tries again at the next round; its success after failures is logged too.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import threading
from pathlib import Path

from proxy.config_sections import UICopyPolicy
from proxy.store.engine import display_url

from .export import export, prepare

log = logging.getLogger("analytics.ui_copy")

DEFAULT_COPY = "study_query_llm.ui-copy.db"


class UICopy:
    def __init__(self, source: str, policy: UICopyPolicy) -> None:
        self.source = source
        self.path = Path(policy.copy_path or Path.cwd() / DEFAULT_COPY).resolve()
        self.refresh = policy.refresh
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.refreshes = 0
        self._failing = False
        self._stopping = threading.Event()  # asked by a refresh between batches
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Make sure the copy exists (so that Datasette opens it at once), then refresh it in the
        background. A copy that cannot be made does not stop the proxy: the refreshes say why."""
        try:
            await prepare(self.path)
        except Exception as exc:  # an unwritable directory, say: /ui/ fails, the proxy serves
            log.warning("cannot make the /ui/ copy %s (%s)", self.path, _describe(exc))
        self._task = asyncio.get_running_loop().create_task(self._refresh_forever(), name="ui-copy")

    async def refresh_once(self) -> bool:
        """One refresh, unless another process holds the lock; True when this one copied.

        It runs in a thread with an event loop of its own: the copy's SQLite writes, and its
        first run over a large log, must not hold up the proxy's requests."""
        copied = await asyncio.to_thread(self._refresh_blocking)
        self.refreshes += copied
        return copied

    def _refresh_blocking(self) -> bool:
        fd = os.open(self.lock_path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            try:
                asyncio.run(export(self.source, self.path, refresh_seconds=self.refresh, stopping=self._stopping.is_set))
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        return True

    async def _refresh_forever(self) -> None:
        while True:
            try:
                await self.refresh_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self._failing:
                    self._failing = True
                    log.warning(
                        "cannot refresh the /ui/ copy %s of %s (%s): it stays as it is; trying again every %gs",
                        self.path, display_url(self.source), _describe(exc), self.refresh,
                    )
            else:
                if self._failing:
                    self._failing = False
                    log.warning("the /ui/ copy %s is being refreshed again", self.path)
            await asyncio.sleep(self.refresh)

    async def aclose(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


def _describe(exc: BaseException) -> str:
    message = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
