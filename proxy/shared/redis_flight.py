"""Single-flight across processes and hosts: one upstream call for identical concurrent requests anywhere.

Within a process, identical requests first join one local flight (`SingleFlight`); only its
leader speaks to Redis. There:

* it tries to take the lease `{prefix}flight:{<key>}` with `SET NX PX` (a random token, a
  short TTL that the leader renews while its call runs). Taking it makes this process the
  leader everywhere: it calls upstream, stores the answer under
  `{prefix}flight:{<key>}:answer:<token>` (briefly), frees the lease and publishes the key
  on `{prefix}flight-done`, in one script, in the background (its own client does not wait);
* a process that finds the lease taken follows that token: it waits for the notice on the
  channel (one subscription per process, `FlightListener`), or polls every `poll` seconds
  in case a notice was missed, and reads the answer. If the lease disappears or changes
  hands without an answer (the leader died, or its lease ran out), the follower tries to take
  the lease itself, and after a few such turns, or past the longest a call may take, it calls
  upstream on its own;
* an answer too large to share (`max_entry_bytes`) is replaced by a note that tells the
  followers to call upstream themselves;
* when Redis fails (`RedisHealth`), the flight works within the process, as without Redis.

Keys are hex digests of `proxy.cache.request_key` (no request content, no key material); the
`{…}` hash tag keeps a flight's keys in one slot of a Redis Cluster.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from redis.asyncio import Redis

from ..singleflight import SingleFlight
from .background import Background
from .health import REDIS_ERRORS, RedisHealth

log = logging.getLogger("proxy.redis")

T = TypeVar("T")

#: Stored instead of an answer too large to share: the followers call upstream themselves.
CALL_YOURSELF = b"call-yourself"
#: How many times a follower takes over from a vanished leader before it just calls upstream.
MAX_TAKEOVERS = 3
#: How long followers can still read a finished flight's answer.
ANSWER_TTL_MS = 30_000

# KEYS: lease, answer; ARGV: token, answer bytes, answer TTL (ms), channel, notice
FINISH = """
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
"""
# KEYS: lease; ARGV: token, channel, notice
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
"""
# KEYS: lease; ARGV: token, TTL (ms)
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

_TAKE_OVER = object()
_ON_OUR_OWN = object()


class FlightListener:
    """One subscription per process to the flights' channel; wakes the local follower of a key."""

    def __init__(self, redis: Redis, channel: str, retry_interval: float) -> None:
        self.redis = redis
        self.channel = channel
        self.retry_interval = retry_interval
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._listen(), name="redis-flight-listener")

    def waiter(self, notice: str) -> asyncio.Future[None]:
        self.start()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(notice, set()).add(future)
        return future

    def forget(self, notice: str, future: asyncio.Future[None]) -> None:
        waiting = self._waiters.get(notice)
        if waiting is not None:
            waiting.discard(future)
            if not waiting:
                del self._waiters[notice]

    async def _listen(self) -> None:
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        self._wake(message["data"])
            except REDIS_ERRORS as exc:  # followers poll meanwhile
                log.debug("the flights' subscription failed (%s); again in %gs", type(exc).__name__, self.retry_interval)
            finally:
                try:
                    await pubsub.aclose()
                except REDIS_ERRORS:
                    pass
            await asyncio.sleep(self.retry_interval)

    def _wake(self, data: bytes | str) -> None:
        notice = data.decode("ascii", "replace") if isinstance(data, bytes) else data
        for future in self._waiters.pop(notice, ()):
            if not future.done():
                future.set_result(None)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


class RedisFlights(Generic[T]):
    """`Flights` shared through Redis; `encode`/`decode` turn a result into bytes and back."""

    def __init__(
        self,
        redis: Redis,
        health: RedisHealth,
        background: Background,
        *,
        prefix: str,
        encode: Callable[[T], bytes],
        decode: Callable[[bytes], T | None],
        lease: float,
        poll: float,
        max_wait: float,
        max_entry_bytes: int,
    ) -> None:
        self.redis = redis
        self.health = health
        self.background = background
        self.prefix = prefix
        self.encode = encode
        self.decode = decode
        self.lease_ms = max(1, int(lease * 1000))
        self.poll = poll
        self.max_wait = max_wait
        self.max_entry_bytes = max_entry_bytes
        self.channel = f"{prefix}flight-done"
        self.listener = FlightListener(redis, self.channel, health.retry_interval)
        self.local: SingleFlight[tuple[T, bool]] = SingleFlight()
        self._finish = redis.register_script(FINISH)
        self._release = redis.register_script(RELEASE)
        self._renew = redis.register_script(RENEW)

    async def run(self, key: bytes, call: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        (result, made_the_call), first_here = await self.local.run(key, lambda: self._across(key, call))
        return result, made_the_call and first_here

    def lease_key(self, key: bytes) -> str:
        return f"{self.prefix}flight:{{{key.hex()}}}"

    async def _across(self, key: bytes, call: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """The local leader's part: lead the flight everywhere, or follow the one under way."""
        lease = self.lease_key(key)
        deadline = time.monotonic() + self.max_wait
        for _ in range(MAX_TAKEOVERS) if self.health.usable() else ():
            token = secrets.token_hex(16)
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    taken, holder = await pipe.set(lease, token, nx=True, px=self.lease_ms).get(lease).execute()
                if taken:
                    break
                shared = _TAKE_OVER if holder is None else await self._follow(key, lease, holder, deadline)
            except REDIS_ERRORS as exc:
                self.health.failed(exc)
                return await call(), True
            if shared is _ON_OUR_OWN:
                return await call(), True
            if shared is not _TAKE_OVER:
                return shared, False  # type: ignore[return-value]
        else:  # Redis is down, or the flight changed hands too often
            return await call(), True
        return await self._lead(key, lease, token, call), True

    async def _lead(self, key: bytes, lease: str, token: str, call: Callable[[], Awaitable[T]]) -> T:
        renewing = asyncio.get_running_loop().create_task(self._keep_lease(lease, token))
        try:
            result = await call()
        except BaseException:
            self.background.run(self._script(self._release, [lease], [token, self.channel, key.hex()]))
            raise
        finally:
            renewing.cancel()
        data = self.encode(result)
        if len(data) > self.max_entry_bytes:
            data = CALL_YOURSELF
        answer = f"{lease}:answer:{token}"
        self.background.run(self._script(self._finish, [lease, answer], [token, data, ANSWER_TTL_MS, self.channel, key.hex()]))
        return result

    async def _follow(self, key: bytes, lease: str, token: bytes, deadline: float) -> Any:
        """The leader's answer, `_TAKE_OVER` when the lease is no longer its, `_ON_OUR_OWN` when
        its answer cannot be had (too large, unreadable, or later than any call may take)."""
        notice = key.hex()
        answer = f"{lease}:answer:{token.decode('ascii', 'replace')}"
        waiter = self.listener.waiter(notice)
        try:
            while True:
                async with self.redis.pipeline(transaction=False) as pipe:
                    data, holder = await pipe.get(answer).get(lease).execute()
                if data is not None:
                    result = None if data == CALL_YOURSELF else self.decode(data)
                    return _ON_OUR_OWN if result is None else result
                if holder != token:
                    return _TAKE_OVER
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return _ON_OUR_OWN
                try:
                    await asyncio.wait_for(asyncio.shield(waiter), min(self.poll, remaining))
                except TimeoutError:
                    pass
                if waiter.done():  # a notice for this key (maybe another flight's): look again
                    self.listener.forget(notice, waiter)
                    waiter = self.listener.waiter(notice)
        finally:
            self.listener.forget(notice, waiter)

    async def _keep_lease(self, lease: str, token: str) -> None:
        """Renew the lease while the call runs, so that a slow upstream does not lose it."""
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            try:
                if not await self._renew(keys=[lease], args=[token, self.lease_ms]):
                    return  # it ran out (a stalled process): followers have moved on
            except REDIS_ERRORS as exc:
                self.health.failed(exc)
                return

    async def _script(self, script: Any, keys: list[str], args: list[Any]) -> None:
        try:
            await script(keys=keys, args=args)
        except REDIS_ERRORS as exc:
            self.health.failed(exc)

    async def aclose(self) -> None:
        await self.listener.aclose()
