"""Timeouts that cost a fraction of asyncio's: one timer per event loop, armed for the earliest.

A proxied call waits on several timeouts (its deadline, the upstream's first byte, each read of
its body) and a relayed stream on one or two per event. `asyncio.timeout` costs 7-10 µs to enter
and leave here (a `Timeout` object, a `TimerHandle` armed and cancelled in the loop), which was
~7 % of what one core serves. Almost none of these timeouts ever fires, so here entering one
only files its expiry in a heap and leaving it drops its entry: one real timer per loop, armed
for the earliest expiry filed, wakes to fire what is due.

`with timeout(delay):` keeps `asyncio.timeout`'s contract: the task is cancelled when the delay
passes, and the block raises `TimeoutError` instead of `CancelledError`. It is a plain `with`:
no coroutine to create on the way in and out. `Watchdog.call_at` serves callbacks that are not
a task's wait (a connection's head timeout).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from types import TracebackType
from weakref import WeakKeyDictionary

#: Expiries this close to now fire with those that are due (the loop's clock is coarse).
SLACK = 0.001


class Watchdog:
    """The expiries filed on one event loop, and the one timer that fires them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._heap: list[tuple[float, int]] = []  # (when, key); entries of dropped keys linger
        self._live: dict[int, Callable[[], object]] = {}
        self._keys = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for = float("inf")

    def __len__(self) -> int:
        return len(self._live)

    def call_at(self, when: float, callback: Callable[[], object]) -> int:
        """Call `callback` at loop time `when` unless `cancel(key)` comes first; return the key."""
        key = next(self._keys)
        self._live[key] = callback
        heap = self._heap
        heapq.heappush(heap, (when, key))
        if when < self._armed_for:
            self._arm(when)
        elif len(heap) > 2 * len(self._live) + 1024:  # mostly dropped entries: keep memory flat
            self._heap = [entry for entry in heap if entry[1] in self._live]
            heapq.heapify(self._heap)
        return key

    def cancel(self, key: int) -> None:
        self._live.pop(key, None)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed_for = when
        self._timer = self.loop.call_at(when, self._fire_due)

    def _fire_due(self) -> None:
        self._timer, self._armed_for = None, float("inf")
        heap, live = self._heap, self._live
        now = self.loop.time() + SLACK
        while heap and heap[0][0] <= now:
            callback = live.pop(heapq.heappop(heap)[1], None)
            if callback is not None:
                callback()
        while heap and heap[0][1] not in live:
            heapq.heappop(heap)
        if heap:
            self._arm(heap[0][0])


_watchdogs: WeakKeyDictionary[asyncio.AbstractEventLoop, Watchdog] = WeakKeyDictionary()
_last: tuple[asyncio.AbstractEventLoop | None, Watchdog | None] = (None, None)


def watchdog() -> Watchdog:
    """The running loop's watchdog."""
    global _last
    loop = asyncio.get_running_loop()
    cached_loop, found = _last
    if cached_loop is not loop or found is None:
        found = _watchdogs.get(loop)
        if found is None:
            found = _watchdogs[loop] = Watchdog(loop)
        _last = (loop, found)
    return found


class timeout:  # noqa: N801 (named after asyncio.timeout, whose contract it keeps)
    """`with timeout(seconds):` cancels the block when the delay passes; TimeoutError."""

    __slots__ = ("delay", "_task", "_watchdog", "_key", "_expired")

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def __enter__(self) -> timeout:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("timeout() must be used inside a task")
        self._task, self._expired = task, False
        self._watchdog = dog = watchdog()
        self._key = dog.call_at(dog.loop.time() + self.delay, self._expire)
        return self

    def _expire(self) -> None:
        self._expired = True
        self._task.cancel()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None,
    ) -> None:
        self._watchdog.cancel(self._key)
        if self._expired and self._task.uncancel() == 0 and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc
