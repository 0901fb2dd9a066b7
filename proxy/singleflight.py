"""Identical concurrent requests share one upstream call.

The call runs in a task of its own, so no client leaving early (leader or follower)
cancels it for the others. `Flights` is what the handlers use: this in-process
`SingleFlight`, or `proxy.shared.redis_flight.RedisFlights` across processes and hosts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar

T = TypeVar("T")


class Flights(Protocol[T]):
    async def run(self, key: bytes, call: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """(the result, True for the caller that made the call; False for those that joined it)."""
        ...


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._calls: dict[bytes, asyncio.Future[T]] = {}

    def __len__(self) -> int:
        return len(self._calls)

    async def run(self, key: bytes, call: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """(the result, True for the caller that made the call; False for those that joined it)."""
        running = self._calls.get(key)
        if running is not None:
            return await asyncio.shield(running), False
        task = asyncio.ensure_future(call())
        self._calls[key] = task
        task.add_done_callback(lambda _: self._calls.pop(key, None))
        return await asyncio.shield(task), True
