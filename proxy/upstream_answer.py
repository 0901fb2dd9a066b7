"""An upstream answer's body as the handler reads it: held back, decoded and bounded.

The connection (`proxy.upstream`) feeds each answer the bytes of its body as they arrive; the
handler reads them whole (`read`) or as they come (`iter_bytes`). Past `READ_HIGH_WATER`
unread bytes the connection stops reading until the handler catches up. An upstream is
input too: past `max_answer_bytes` (decoded) an answer is refused with `UpstreamUnreachable`
of kind `too_large` instead of taking the process's memory, and a compressed answer is
inflated `INFLATE_PIECE` at a time, so that a compression bomb costs one piece, not its size.
A relay that holds none of the bytes (proxy.body_relay) reads unbounded.
"""

from __future__ import annotations

import asyncio
import zlib
from collections import deque
from collections.abc import AsyncIterator
from typing import Protocol

from .timeouts import timeout

#: Past this many unread bytes, the connection stops reading until the consumer catches up.
READ_HIGH_WATER = 1 << 20
#: An answer read whole, or as events, is refused past this many bytes (decoded): the largest
#: answers OpenAI gives (2,048 embeddings of 3,072 floats as JSON, ~85 MB) fit three times.
DEFAULT_MAX_ANSWER_BYTES = 256 * 1024 * 1024
#: A compressed answer is inflated at most this much at a time: zlib turns 1 MB into 1 GB.
INFLATE_PIECE = 1 << 20


class UpstreamUnreachable(Exception):
    """The upstream could not be reached or did not answer in time; `kind` says which."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind  # "connect" | "timeout" | "protocol" | "too_large"

    @property
    def retryable(self) -> bool:
        """Whether asking again may help: an answer too large to take would be as large again."""
        return self.kind != "too_large"


class Feeder(Protocol):
    """What an answer needs of its connection."""

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def release(self, reusable: bool) -> None: ...


class UpstreamAnswer:
    """An answer whose head has arrived; the body is read (or streamed) as the connection feeds it."""

    __slots__ = ("status_code", "headers", "_conn", "_chunks", "_buffered", "_waiter", "done", "_error",
                 "_decoder", "_tail", "_received", "_max_bytes", "_read_timeout", "framed")

    def __init__(self, conn: Feeder, status_code: int, headers: dict[str, str], read_timeout: float,
                 max_bytes: int) -> None:
        self.status_code = status_code
        self.headers = headers
        self._conn: Feeder | None = conn
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self.done = False
        self._error: UpstreamUnreachable | None = None
        self._read_timeout = read_timeout
        self._max_bytes = max_bytes
        self._received = 0  # bytes handed over, decoded
        self._tail = b""  # compressed bytes not inflated yet (`INFLATE_PIECE`)
        self.framed = "content-length" in headers or "chunked" in headers.get("transfer-encoding", "").lower()
        encoding = headers.get("content-encoding", "").lower()
        self._decoder = zlib.decompressobj(zlib.MAX_WBITS | 32) if encoding in ("gzip", "deflate") else None

    # -- fed by the connection -------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > READ_HIGH_WATER and self._conn is not None:
            self._conn.pause()
        self._wake()

    def end(self, error: UpstreamUnreachable | None = None) -> None:
        self.done = True
        self._error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- read by the handler ---------------------------------------------------------------

    async def _next(self, limit: int | None) -> bytes | None:
        """The bytes that arrived since the last call (decoded, at most `INFLATE_PIECE` of them
        at a time when compressed), or None at the end; UpstreamUnreachable past `limit` in all."""
        if self._tail:
            data = self._inflate(self._tail)
        else:
            while not self._chunks:
                if self.done:
                    if self._error is not None:
                        raise self._error
                    return None
                self._waiter = asyncio.get_running_loop().create_future()
                try:
                    with timeout(self._read_timeout):
                        await self._waiter
                except TimeoutError:
                    self._release()  # half-read: the connection is closed, not reused
                    raise UpstreamUnreachable("timeout", f"upstream sent nothing for {self._read_timeout:g}s") from None
                finally:
                    self._waiter = None
            # Everything that came in since the last read, as one piece: httptools hands a chunked
            # body over chunk by chunk, and a burst of stream events relayed one by one cost a
            # write (and a turn of the relay) each.
            chunks = self._chunks
            data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
            chunks.clear()
            self._buffered -= len(data)
            if self._conn is not None and self._buffered <= READ_HIGH_WATER // 2:
                self._conn.resume()
            if self._decoder is not None:
                data = self._inflate(data)
        self._received += len(data)
        if limit is not None and self._received > limit:
            self._release()  # not read to its end: the connection is closed
            raise UpstreamUnreachable("too_large", f"the answer passed {limit:,} bytes ([server] max_answer_bytes)")
        return data

    def _inflate(self, data: bytes) -> bytes:
        assert self._decoder is not None
        try:
            piece = self._decoder.decompress(data, INFLATE_PIECE)
        except zlib.error as exc:
            self._release()
            raise UpstreamUnreachable("protocol", f"the answer's compressed body is damaged: {exc}") from None
        self._tail = self._decoder.unconsumed_tail
        return piece

    async def read(self) -> bytes:
        parts = []
        try:
            while (data := await self._next(self._max_bytes)) is not None:
                parts.append(data)
        finally:
            await self.close()
        return b"".join(parts)

    async def iter_bytes(self, bounded: bool = True) -> AsyncIterator[bytes]:
        limit = self._max_bytes if bounded else None
        while (data := await self._next(limit)) is not None:
            if data:
                yield data

    async def close(self) -> None:
        self._release()

    def _release(self) -> None:
        """Back to the pool when the body was read whole; a half-read connection is closed."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.release(reusable=self.done and self._error is None and not self._chunks and not self._tail)
