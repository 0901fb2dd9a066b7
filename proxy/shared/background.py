"""Redis writes that no client waits for (a flight's answer, a cache entry), kept track of.

A task that nobody references may be collected before it finishes, and at shutdown the
writes still under way deserve a moment to land: `aclose` gives them `grace` seconds.
The number in flight is bounded: past `limit`, a new write is skipped (a cache entry or
a flight's notice is worth less than memory; followers fall back to polling).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("proxy.redis")


class Background:
    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self.skipped = 0
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def run(self, work: Coroutine[Any, Any, Any]) -> None:
        if len(self._tasks) >= self.limit:
            work.close()
            self.skipped += 1
            return
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self, grace: float = 1.0) -> None:
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
