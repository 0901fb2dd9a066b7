"""Precise one-request-at-a-time clients on raw sockets (no HTTP library in the timing).

`Conn.call()` times one non-streaming request: from just before `sendall` to the last byte
of the body (`Content-Length` or chunked). `Conn.stream()` times one SSE stream: the
arrival of every token event (`recv` return time), so time to first token and the gaps
between chunks come from the socket, not from a parser's buffering. What a token event
is, and which event ends a stream, depends on the API: `CHAT_SSE` or `RESPONSES_SSE`.

A keep-alive connection is reused until the server closes it. A request that finds it closed
(uvicorn drops connections idle for 5 s) is sent again on a new one, and the clock restarts
after the reconnection: connecting is never timed.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fake_upstream import header_value  # bench/ is on sys.path: run.py puts it there

perf_ns = time.perf_counter_ns


class HTTPError(Exception):
    pass


def build_request(host: str, port: int, path: str, body: bytes, auth: str | None = None,
                  headers: dict[str, str] | None = None) -> bytes:
    """The bytes of one POST; `headers` come last, so a target without any sends what it always sent."""
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        "Accept: */*",
        f"Content-Length: {len(body)}",
    ]
    if auth:
        lines.append(f"Authorization: Bearer {auth}")
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass(frozen=True)
class SSEFormat:
    """How to read one API's stream, event by event (the bytes between blank lines)."""

    is_token: Callable[[bytes], bool]  # an event that carries a piece of the answer
    is_end: Callable[[bytes], bool]  # the event that ends a complete stream


def _chat_token(event: bytes) -> bool:
    return (b'"content":"' in event or b'"content": "' in event) and not (
        b'"content":""' in event or b'"content": ""' in event
    )


#: Chat Completions: `data:` chunks with non-empty `content`, then `data: [DONE]`.
CHAT_SSE = SSEFormat(_chat_token, lambda event: event.startswith(b"data: [DONE]") or event.startswith(b"data:[DONE]"))
#: The Responses API: `event:` + `data:` lines, text deltas, `response.completed` last (no [DONE]).
RESPONSES_SSE = SSEFormat(
    lambda event: event.startswith(b"event: response.output_text.delta\n"),
    lambda event: event.startswith(b"event: response.completed\n"),
)


@dataclass
class StreamTiming:
    status: int
    ttft_ns: int  # request sent → first token event
    event_ns: list[int] = field(default_factory=list)  # arrival of every token event, from the start
    done: bool = False  # saw the event that ends a complete stream


class Conn:
    def __init__(self, host: str, port: int, timeout: float = 60.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.sock: socket.socket | None = None
        self.buf = b""

    def open(self) -> None:
        self.close()
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock, self.buf = sock, b""

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None

    def _recv(self) -> bytes:
        assert self.sock is not None
        data = self.sock.recv(262144)
        if not data:
            raise ConnectionError("server closed the connection")
        return data

    def _head(self) -> tuple[int, bytes]:
        """Read up to the end of the response headers → (status, lower-cased head)."""
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                head, self.buf = self.buf[:end], self.buf[end + 4 :]
                status = int(head[9:12])
                return status, head.lower()
            self.buf += self._recv()

    def _send(self, request: bytes) -> tuple[int, int, bytes]:
        """Send a request and read the answer's head → (start time in ns, status, lower-cased head)."""
        if self.sock is None:
            self.open()
        assert self.sock is not None
        start = perf_ns()
        try:
            self.sock.sendall(request)
            status, head = self._head()
        except (ConnectionError, OSError):
            # a keep-alive connection the server had closed (uvicorn: after 5 s idle): retry once
            self.open()
            start = perf_ns()
            self.sock.sendall(request)
            status, head = self._head()
        return start, status, head

    def call(self, request: bytes) -> tuple[int, int, bytes]:
        """One non-streaming request → (status, latency in ns, body)."""
        start, status, head = self._send(request)
        body = self._body(head)
        elapsed = perf_ns() - start
        if b"\r\nconnection: close" in head:
            self.close()
        return status, elapsed, body

    def _body(self, head: bytes) -> bytes:
        length = header_value(head, b"\r\ncontent-length:")
        if length is not None:
            size = int(length)
            while len(self.buf) < size:
                self.buf += self._recv()
            body, self.buf = self.buf[:size], self.buf[size:]
            return body
        if b"chunked" in (header_value(head, b"\r\ntransfer-encoding:") or b""):
            parts = []
            for piece, _ in self._chunks():
                parts.append(piece)
            return b"".join(parts)
        # no length: read to close
        parts = [self.buf]
        self.buf = b""
        try:
            while True:
                parts.append(self._recv())
        except ConnectionError:
            pass
        self.close()
        return b"".join(parts)

    def _chunks(self):  # type: ignore[no-untyped-def]
        """Yield (chunk data, arrival ns) of a chunked body until the last chunk."""
        arrival = perf_ns()
        while True:
            while True:
                line_end = self.buf.find(b"\r\n")
                if line_end >= 0:
                    break
                self.buf += self._recv()
                arrival = perf_ns()
            size = int(self.buf[:line_end].split(b";")[0], 16)
            if size == 0:
                while (end := self.buf.find(b"\r\n\r\n", line_end)) < 0:  # the last chunk (and trailers)
                    self.buf += self._recv()
                self.buf = self.buf[end + 4 :]
                return
            need = line_end + 2 + size + 2
            while len(self.buf) < need:
                self.buf += self._recv()
                arrival = perf_ns()
            yield self.buf[line_end + 2 : line_end + 2 + size], arrival
            self.buf = self.buf[need:]

    def stream(self, request: bytes, sse: SSEFormat = CHAT_SSE) -> StreamTiming:
        """One streaming request: the arrival time of every token event."""
        start, status, head = self._send(request)
        timing = StreamTiming(status=status, ttft_ns=-1)
        if status != 200:
            self._body(head)
            return timing
        pending = b""
        chunked = b"chunked" in (header_value(head, b"\r\ntransfer-encoding:") or b"")
        source = self._chunks() if chunked else self._raw_until_close()
        for data, arrival in source:
            pending += data
            while True:
                cut = pending.find(b"\n\n")
                if cut < 0:
                    break
                event, pending = pending[:cut], pending[cut + 2 :]
                if sse.is_end(event):
                    timing.done = True
                    continue
                if sse.is_token(event):
                    if timing.ttft_ns < 0:
                        timing.ttft_ns = arrival - start
                    timing.event_ns.append(arrival - start)
        if not chunked:
            self.close()
        return timing

    def _raw_until_close(self):  # type: ignore[no-untyped-def]
        if self.buf:
            yield self.buf, perf_ns()
            self.buf = b""
        while True:
            try:
                data = self._recv()
            except ConnectionError:
                return
            yield data, perf_ns()

