"""Whether Redis is usable right now: one warning when it goes away, one note when it is back.

While Redis is down, callers do not try it at all (no request waits for a dead server's
timeout); a background probe pings it every `retry_interval` seconds and lets callers back
in once it answers. Everything shared then works per process, as without `REDIS_URL`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

from redis.exceptions import RedisError

log = logging.getLogger("proxy.redis")

#: What a Redis command can raise when the server is away or slow.
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)


def display_redis_url(url: str) -> str:
    """The URL as it may be printed: any password replaced by `***`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


class RedisHealth:
    """Shared by the single-flight and the cache of one process."""

    def __init__(self, display: str, ping: Callable[[], Awaitable[object]], retry_interval: float) -> None:
        self.display = display
        self.ping = ping
        self.retry_interval = retry_interval
        self.down = False
        self.failures = 0  # times Redis went away in this process
        self._probe: asyncio.Task[None] | None = None

    def usable(self) -> bool:
        return not self.down

    def failed(self, exc: BaseException) -> None:
        """A command failed: warn once, stop using Redis, probe it in the background."""
        if self.down:
            return
        self.down = True
        self.failures += 1
        log.warning(
            "Redis at %s cannot be used (%s): de-duplication and the answer cache now work within "
            "this process only; trying Redis again every %gs",
            self.display, _describe(exc), self.retry_interval,
        )
        try:
            self._probe = asyncio.get_running_loop().create_task(self._wait_for_redis(), name="redis-probe")
        except RuntimeError:  # no loop (closing): the next start probes again
            self._probe = None

    async def _wait_for_redis(self) -> None:
        while self.down:
            await asyncio.sleep(self.retry_interval)
            try:
                await self.ping()
            except REDIS_ERRORS:
                continue
            self.down = False
            log.warning("Redis at %s answers again: de-duplication and the cache are shared again", self.display)

    async def aclose(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            await asyncio.gather(self._probe, return_exceptions=True)
            self._probe = None


def _describe(exc: BaseException) -> str:
    message = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
