"""The one HTTP client the process uses to reach upstreams: HTTP/1.1 keep-alive on asyncio.

Handlers and providers only see `UpstreamClient.send()` and `UpstreamResponse`. The client
is an `asyncio.Protocol` per connection with httptools (the C parser uvicorn uses) reading
the answers: a request is one `writelines` call, its answer is parsed as the bytes arrive,
and a stream's events are handed over as soon as they are in. It costs the proxy less CPU
per request than aiohttp did, and aiohttp less than httpx (bench/README.md, "What each
optimisation bought").

It does what an upstream of this proxy needs and no more: POST and GET with a body of
known length, answers framed by Content-Length, chunked encoding or the connection's end,
gzip/deflate answers decoded, TLS with certifi's roots, idle connections reused LIFO per
origin and closed after `keepalive_s`. A reused connection that the server had already
closed (the keep-alive race) is replaced once, transparently, before any byte came back.

An upstream is input too: an answer's head past `MAX_HEAD_BYTES` is refused; its body is
bounded, decoded and held back by `proxy.upstream_answer`.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import httptools

from .timeouts import timeout
from .upstream_answer import DEFAULT_MAX_ANSWER_BYTES, UpstreamAnswer, UpstreamUnreachable

#: An answer's status line and headers are refused past this.
MAX_HEAD_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes = b""


class UpstreamResponse(Protocol):
    status_code: int
    headers: Mapping[str, str]

    async def read(self) -> bytes: ...

    def iter_bytes(self, bounded: bool = True) -> AsyncIterator[bytes]:
        """The answer's bytes as they come; `bounded=False` lifts `max_answer_bytes`, for a
        relay that holds none of them (proxy.body_relay)."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Origin:
    scheme: str
    host: str
    port: int

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


class _Connection(asyncio.Protocol):
    """One keep-alive connection to an origin, answering one request at a time."""

    def __init__(self, client: UpstreamClient, origin: _Origin) -> None:
        self.client = client
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._headers: dict[str, str] = {}
        self._head: asyncio.Future[UpstreamAnswer] | None = None
        self._response: UpstreamAnswer | None = None
        self._read_timeout = client.first_byte_timeout
        self._head_bytes = 0  # of the answer whose head is arriving
        self._got_bytes = False
        self._keep_alive = False
        self._paused = False

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._got_bytes = True
        if self._response is None:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._fail(UpstreamUnreachable("too_large", f"the answer's head passed {MAX_HEAD_BYTES:,} bytes"))
                return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamUnreachable("protocol", f"invalid HTTP answer from upstream: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        response = self._response
        if response is not None and not response.done:
            if response.framed:
                response.end(UpstreamUnreachable("protocol", "upstream closed the connection mid-answer"))
            else:
                response.end()  # an answer delimited by the connection's end
        elif self._head is not None and not self._head.done():
            detail = f": {exc}" if exc else ""
            self._head.set_exception(_Closed(self._got_bytes, f"upstream closed the connection before answering{detail}"))

    # -- httptools callbacks ---------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self._headers.get(key)
        self._headers[key] = text if previous is None else f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim answer: the real one follows
            self._headers = {}
            return
        self._response = UpstreamAnswer(self, status, self._headers, self._read_timeout, self.client.max_answer_bytes)
        self._headers = {}
        if self._head is not None and not self._head.done():
            self._head.set_result(self._response)

    def on_body(self, body: bytes) -> None:
        if self._response is not None:
            self._response.feed(body)

    def on_message_complete(self) -> None:
        if self._response is not None:
            self._keep_alive = self._parser.should_keep_alive()
            self._response.end()

    # -- used by the client ----------------------------------------------------------------

    async def request(self, head: bytes, body: bytes) -> UpstreamAnswer:
        """Send one request; return once the answer's head has arrived."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self._head = loop.create_future()
        self._response = None
        self._head_bytes = 0
        self._got_bytes = False
        self._keep_alive = False
        self.transport.writelines((head, body))  # one system call (writev) for head and body
        try:
            with timeout(self._read_timeout):
                return await self._head
        except TimeoutError:
            self.release(reusable=False)
            raise UpstreamUnreachable("timeout", f"upstream did not answer within {self._read_timeout:g}s") from None
        except BaseException:
            self.release(reusable=False)
            raise

    def release(self, reusable: bool) -> None:
        self._response = None
        if self._paused:
            self.resume()
        if reusable and self._keep_alive and not self.closed:
            self.client._checkin(self)
        else:
            self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def _fail(self, error: UpstreamUnreachable) -> None:
        response = self._response
        if response is not None and not response.done:
            response.end(error)
        elif self._head is not None and not self._head.done():
            self._head.set_exception(error)
        self.close()


class _Closed(Exception):
    """The connection ended before an answer's head; `got_bytes` tells whether any byte came back."""

    def __init__(self, got_bytes: bool, detail: str) -> None:
        super().__init__(detail)
        self.got_bytes = got_bytes


class UpstreamClient:
    """A keep-alive connection pool shared by every request of the process."""

    def __init__(
        self,
        connect_timeout: float = 10.0,
        first_byte_timeout: float = 600.0,
        keepalive_s: float = 30.0,
        tls: ssl.SSLContext | None = None,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
    ) -> None:
        """`tls` verifies https upstreams; by default against certifi's roots."""
        self.connect_timeout = connect_timeout
        self.max_answer_bytes = max_answer_bytes
        self.first_byte_timeout = first_byte_timeout
        self.keepalive_s = keepalive_s
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._targets: dict[str, tuple[_Origin, str]] = {}
        self._ssl = tls

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        """Send and return once the status line and headers arrived; the body is read later."""
        origin, target = self._target(request.url)
        head = _request_head(request, origin, target)
        conn = self._checkout(origin)
        if conn is not None:
            try:
                return await conn.request(head, request.body)
            except _Closed as exc:
                if exc.got_bytes:
                    raise UpstreamUnreachable("protocol", str(exc)) from None
                # the server closed this idle connection as we reused it: once more, on a new one
        conn = await self._connect(origin)
        try:
            return await conn.request(head, request.body)
        except _Closed as exc:
            raise UpstreamUnreachable("protocol", str(exc)) from None

    async def aclose(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()

    # -- the pool --------------------------------------------------------------------------

    def _checkout(self, origin: _Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self.keepalive_s:
                return conn
            conn.close()
        return None

    def _checkin(self, conn: _Connection) -> None:
        conn.idle_since = time.monotonic()
        self._idle.setdefault(conn.origin, []).append(conn)

    async def _connect(self, origin: _Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = self._tls() if origin.scheme == "https" else None
        try:
            with timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self, origin), origin.host, origin.port,
                    ssl=tls, server_hostname=origin.host if tls else None,
                )
        except TimeoutError:
            raise UpstreamUnreachable("timeout", f"connecting to {origin.host_header} took over {self.connect_timeout:g}s") from None
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamUnreachable("connect", f"cannot connect to {origin.host_header}: {exc}") from None
        return conn

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            import certifi

            self._ssl = ssl.create_default_context(cafile=certifi.where())
        return self._ssl

    def _target(self, url: str) -> tuple[_Origin, str]:
        """(origin, request target) of a URL, remembered: a proxy sends to few distinct URLs."""
        found = self._targets.get(url)
        if found is None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise UpstreamUnreachable("connect", f"not an http(s) URL: {parts.scheme}://{parts.hostname or ''}")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            found = (_Origin(parts.scheme, parts.hostname, port), target)
            if len(self._targets) < 10_000:
                self._targets[url] = found
        return found


def _request_head(request: UpstreamRequest, origin: _Origin, target: str) -> bytes:
    lines = [f"{request.method} {target} HTTP/1.1", f"host: {origin.host_header}", f"content-length: {len(request.body)}"]
    for name, value in request.headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise UpstreamUnreachable("protocol", f"header {name.strip()!r} holds a line break: not sent")
        if name.lower() not in ("host", "content-length"):
            lines.append(f"{name}: {value}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1")
