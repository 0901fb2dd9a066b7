"""Identical concurrent requests share one upstream call.

The first caller (the leader) makes the call itself, in its request's task, as it would
alone; followers wait for its result. Running the call in a new task would cost every call
two more turns of the event loop (tens of microseconds on a request's path), and would only
protect the followers from the leader being cancelled: nothing but the server's shutdown
cancels a request's task (a client leaving does not), and that ends the followers' calls
too. `Flights` is what the handlers use: this in-process `SingleFlight`, or
`proxy.shared.redis_flight.RedisFlights` across processes and hosts.
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
        shared: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._calls[key] = shared
        try:
            result = await call()
        except Exception as exc:
            shared.set_exception(exc)
            shared.exception()  # retrieved here: no "never retrieved" warning when nobody joined
            raise
        except BaseException:  # cancelled: the server is shutting down, the followers are cut too
            shared.cancel()
            raise
        finally:
            del self._calls[key]
        shared.set_result(result)
        return result, True
