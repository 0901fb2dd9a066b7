"""The HTTP/1.1 connection: uvicorn's httptools protocol, with the limits a public server needs.

uvicorn holds a request head of any size and waits for it, and for a body, forever. Here:

- the head (request line and headers) is counted as its bytes arrive, before the parser has
  assembled a header, so a 200 MB header is refused once the limit is passed (431), with at
  most one read's worth (256 KiB) beyond it in memory;
- a head must be complete `header_timeout` seconds after it began (or after the connection
  opened): 408 and the connection closed;
- a body that stops arriving for `body_timeout` seconds ends the request: the handler gets
  what came, sees the mark in the scope, and records a 408 (proxy/validation.py);
- past `max_connections` open connections a request is answered 503 at once;
- every answer made here is in OpenAI's error shape, uvicorn's own 400 for a malformed
  request included, and is followed by a lingering close (the rest of what the client sends
  is read and dropped for a moment), so that the client reads it rather than a reset.

Nothing here runs per header: a request that arrives in one read costs three attribute
checks more than with uvicorn alone.

uvicorn writes an answer's head and its body with two `write` calls: two syscalls, two TCP
segments, and a client that wakes for the head and again for the body. `CoalescingTransport`
holds the head back until the body's first bytes (or the next turn of the loop, for a stream
whose first event is not there yet), so that a whole answer leaves in one write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from .errors import ProxyError
from .limits import BODY_MALFORMED, BODY_TIMED_OUT, CUT_ANSWER, ClientLimits
from .timeouts import Watchdog, watchdog

#: How long a refused connection's further bytes are read and dropped before it is closed.
LINGER_SECONDS = 2.0
#: The head timeout of a connection that opened past the cap: it gets its 503 only if it is quick.
OVER_CAPACITY_HEAD_TIMEOUT = 1.0
#: Per header in the exact count of a head: ": " and CRLF.
HEADER_OVERHEAD = 4


def error_body(status: int, message: str, code: str, type: str = "invalid_request_error") -> bytes:
    return ProxyError(status, message, type=type, code=code).json()


def refusal_app(status: int, body: bytes) -> ASGIApp:
    """An ASGI app answering every request with `body` and closing the connection."""
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


class CoalescingTransport:
    """The transport one request's cycle writes through: its first write (the head) waits for
    the second, or for the next turn of the event loop, whichever comes first."""

    __slots__ = ("transport", "loop", "held", "flush_handle")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self.loop = loop
        self.held: bytes | None = None
        self.flush_handle: asyncio.Handle | None = None

    def write(self, data: bytes) -> None:
        if self.flush_handle is None:  # the cycle's first write
            self.held = data
            self.flush_handle = self.loop.call_soon(self.flush)
        elif self.held is not None:
            self.flush_handle.cancel()
            head, self.held = self.held, None
            self.transport.writelines((head, data))
        else:
            self.transport.write(data)

    def flush(self) -> None:
        if self.held is not None:
            head, self.held = self.held, None
            if not self.transport.is_closing():
                self.transport.write(head)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class GuardedProtocol(HttpToolsProtocol):
    """One client connection. `limits` and `capacity` are set on the subclass `protocol_class` makes."""

    limits: ClientLimits = ClientLimits()
    capacity: int = 1 << 30

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_done = False  # True from a head's last header until the next request's first byte
        self.head_bytes = 0  # bytes of the current head read before the current read
        self.read_size = 0  # bytes of the current read
        self.last_read = 0.0  # when body bytes last came
        self.watchdog: Watchdog | None = None
        self.head_timer: int | None = None  # the watchdog's keys
        self.body_timer: int | None = None
        self.discarding = False
        self.max_head = self.limits.max_header_bytes  # read on every request: an instance attribute is quicker

    # The connection ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.watchdog = watchdog()
        timeout = self.limits.header_timeout
        if len(self.connections) > self.capacity:
            timeout = min(timeout, OVER_CAPACITY_HEAD_TIMEOUT)
        self.head_timer = self._after(timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.discarding:
            return
        self.read_size = len(data)
        super().data_received(data)
        if self.discarding or self.transport.is_closing():  # refused (uvicorn's 400 included)
            return
        if not self.head_done:
            self.head_bytes += self.read_size
            if self.head_bytes > self.max_head:
                self._refuse_head()
            elif self.head_timer is None:
                self.head_timer = self._after(self.limits.header_timeout, self._head_timed_out)
        elif (cycle := self.cycle) is not None and cycle.more_body and not cycle.response_complete:
            self.last_read = self.loop.time()
            if self.body_timer is None:
                self.body_timer = self._after(self.limits.body_timeout, self._body_timed_out)

    # Parser callbacks -------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.head_done = False
        self.head_bytes = 0
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self.head_done = True
        if self.head_timer is not None:
            self._cancel(self.head_timer)
            self.head_timer = None
        if self.head_bytes + self.read_size > self.max_head and self._head_size() > self.max_head:
            self._answer_with(refusal_app(431, self._head_too_large()))
        elif len(self.connections) > self.capacity or len(self.tasks) >= self.capacity:
            self.logger.warning(
                "%d connections open, the most allowed is %d: answering 503", len(self.connections), self.capacity
            )
            self._answer_with(refusal_app(503, error_body(
                503, "The proxy has as many connections open as it may: try again shortly.",
                "too_many_connections", "server_error",
            )))
        else:
            super().on_headers_complete()
            if self.cycle is not None:
                self.cycle.transport = CoalescingTransport(self.transport, self.loop)  # type: ignore[assignment]
                self.cycle.scope[CUT_ANSWER] = self._cut_answer  # type: ignore[literal-required]

    def _cut_answer(self) -> None:
        """Close the connection mid-answer, on purpose: uvicorn, which sees the connection gone,
        does not log the unfinished answer as an error of the app."""
        cycle = self.cycle
        if cycle is not None:
            cycle.disconnected = True
            cycle.transport.close()  # the coalescing transport: what it holds goes first

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request the parser cannot read, in OpenAI's shape. When the
        head was read and only the body's framing is broken (a bad chunk), the request's
        handler answers it, so that the call has its row: the body ends where it broke."""
        cycle = self.cycle
        if cycle is not None and cycle.more_body and not cycle.response_started and not self.discarding:
            self.discarding = True  # the parser cannot go on: what else comes is dropped
            self._cancel_timers()
            cycle.scope[BODY_MALFORMED] = True  # type: ignore[literal-required]
            self._end_body(cycle)
            return
        self._refuse(400, error_body(400, msg, "invalid_http_request"))

    # Refusals -----------------------------------------------------------------------------------

    def _answer_with(self, app: ASGIApp) -> None:
        """Let uvicorn run the request through `app` instead of the proxy."""
        own, self.app = self.app, app
        try:
            super().on_headers_complete()
        finally:
            self.app = own

    def _head_size(self) -> int:
        """The head's size as parsed: request target and headers."""
        return len(self.url) + sum(len(name) + len(value) + HEADER_OVERHEAD for name, value in self.headers)

    def _head_too_large(self) -> bytes:
        limit = self.limits.max_header_bytes
        message = f"The request's headers are larger than the limit of {limit} bytes."
        return error_body(431, message, "headers_too_large")

    def _refuse_head(self) -> None:
        self._refuse(431, self._head_too_large())

    def _head_timed_out(self) -> None:
        self.head_timer = None
        if self.head_done or self.transport.is_closing():
            return
        if not self.head_bytes:  # opened and never used: nothing to answer
            self.transport.close()
            return
        timeout = self.limits.header_timeout
        message = f"The request's headers did not arrive within {timeout:g} s."
        self._refuse(408, error_body(408, message, "request_timeout"))

    def _body_timed_out(self) -> None:
        """The body went quiet: hand the request to its handler as it is, marked (or close the
        connection when the request was answered already). The timer is not cancelled when a
        body completes (that would cost every request): it finds the body complete and stops."""
        self.body_timer = None
        cycle = self.cycle
        if cycle is None or not cycle.more_body or self.transport.is_closing():
            return
        quiet = self.loop.time() - self.last_read
        if quiet < self.limits.body_timeout or self.flow.read_paused:  # not quiet long enough, or the server is behind
            self.body_timer = self._after(max(self.limits.body_timeout - quiet, 0.1), self._body_timed_out)
            return
        if cycle.response_started:
            self.transport.close()
            return
        cycle.scope[BODY_TIMED_OUT] = self.limits.body_timeout  # type: ignore[literal-required]
        self._end_body(cycle)

    @staticmethod
    def _end_body(cycle: Any) -> None:
        """The handler gets the body as far as it came, and the connection closes after its answer."""
        cycle.more_body = False
        cycle.keep_alive = False
        cycle.message_event.set()

    def _refuse(self, status: int, body: bytes) -> None:
        """Answer `status` on the raw connection, then read and drop what still comes for a moment."""
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body))
        self._cancel_timers()
        self.discarding = True
        self.transport.write(b"".join(head) + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.flow.resume_reading()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)

    # Timers: on the loop's watchdog (proxy/timeouts.py), a fraction of a `call_later`'s cost. --

    def _after(self, delay: float, callback: Callable[[], None]) -> int:
        assert self.watchdog is not None, "a timer before the connection was made"
        return self.watchdog.call_at(self.loop.time() + delay, callback)

    def _cancel(self, timer: int) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel(timer)

    def _cancel_timers(self) -> None:
        for timer in (self.head_timer, self.body_timer):
            if timer is not None:
                self._cancel(timer)
        self.head_timer = self.body_timer = None


def protocol_class(limits: ClientLimits, capacity: int) -> type[GuardedProtocol]:
    """The protocol class for uvicorn's `http` option, with these limits."""
    return type("GuardedProtocol", (GuardedProtocol,), {"limits": limits, "capacity": capacity})
