"""A fake OpenAI-compatible upstream built for speed: raw asyncio (uvloop when installed).

    python bench/fake_upstream.py --port 9100 [--latency-ms 0] [--chunks 50] [--gap-ms 0]

HTTP/1.1 keep-alive, just enough of it: request line, headers, a `Content-Length` (or
chunked) body. Every `POST …/chat/completions` gets a canned chat completion with `usage`;
a body containing `"stream": true` (or `"stream":true`) gets an SSE stream of N chunks,
plus a usage chunk when it contains `"include_usage": true`, then `data: [DONE]`.
`POST …/responses` is the Responses API: a canned response object, or its event stream
(`response.created` … N `response.output_text.delta` events … `response.completed`).
The body is never parsed as JSON: a byte search is all it takes. Every answer is prebuilt
bytes; a Responses answer only gets its own `resp_…` id stamped in, as a real upstream's
ids are unique (the proxy keeps recent responses by id).

Per-request options, from (in order of precedence):

* headers `x-bench-latency-ms`, `x-bench-chunks`, `x-bench-gap-ms`;
* path segments before `/v1/`, `key-value` each: `/t-ours/lat-50/chunks-50/gap-2/v1/chat/completions`
  (a proxy forwards no client header, but its base URL can carry these);
* the command-line defaults.

`lat` is the time before the answer (before the first chunk of a stream), `gap` the time
between stream chunks (token events, for the Responses API). `t-NAME` only tags the
request: `GET /__bench/stats` returns the answers served per tag, and per tag and endpoint,
`{"total": N, "by_tag": {"ours": N, …}, "by_endpoint": {"ours": {"responses": N, …}, …}}`,
so a harness can tell which caller reached the upstream how often, and on which API.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys

from canned import ChatAnswers, ResponsesAnswers, dumps


def _plain(status: bytes, body: bytes, content_type: bytes = b"application/json") -> bytes:
    return b"HTTP/1.1 %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n%s" % (status, content_type, len(body), body)


class Options:
    __slots__ = ("latency", "chunks", "gap", "tag")

    def __init__(self, latency: float, chunks: int, gap: float, tag: str) -> None:
        self.latency, self.chunks, self.gap, self.tag = latency, chunks, gap, tag


class Server:
    def __init__(self, latency_ms: float, chunks: int, gap_ms: float) -> None:
        self.default = Options(latency_ms / 1000, chunks, gap_ms / 1000, "")
        self._by_prefix: dict[bytes, Options] = {}
        self.total = 0
        self.by_tag: dict[str, int] = {}
        self.by_endpoint: dict[str, dict[str, int]] = {}
        self.chat, self.responses = ChatAnswers(), ResponsesAnswers()

    def options(self, path: bytes) -> Options:
        cut = path.find(b"/v1/")
        if cut <= 0:
            return self.default
        prefix = path[:cut]
        found = self._by_prefix.get(prefix)
        if found is None:
            found = Options(self.default.latency, self.default.chunks, self.default.gap, self.default.tag)
            for segment in prefix.decode("latin-1").split("/"):
                key, _, value = segment.partition("-")
                if key == "lat":
                    found.latency = float(value) / 1000
                elif key == "chunks":
                    found.chunks = int(value)
                elif key == "gap":
                    found.gap = float(value) / 1000
                elif key == "t":
                    found.tag = value
            if len(self._by_prefix) < 1000:
                self._by_prefix[prefix] = found
        return found

    def count(self, tag: str, endpoint: str) -> int:
        """Count one answer; its serial number."""
        self.total += 1
        self.by_tag[tag] = self.by_tag.get(tag, 0) + 1
        endpoints = self.by_endpoint.setdefault(tag, {})
        endpoints[endpoint] = endpoints.get(endpoint, 0) + 1
        return self.total

    def stats(self) -> bytes:
        return _plain(b"200 OK", dumps({"total": self.total, "by_tag": self.by_tag, "by_endpoint": self.by_endpoint}))


class Connection(asyncio.Protocol):
    """One keep-alive connection; requests on it are answered strictly in order."""

    __slots__ = ("server", "transport", "buffer", "busy", "closed", "loop")

    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.busy = False
        self.closed = False
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True

    def data_received(self, data: bytes) -> None:
        self.buffer = self.buffer + data if self.buffer else data
        if not self.busy:
            self.process()

    def process(self) -> None:
        """Answer every complete request in the buffer, stopping at one that answers later."""
        while not self.busy and not self.closed:
            buffer = self.buffer
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > 65536:
                    self.fail(b"431 Request Header Fields Too Large")
                return
            head = buffer[:end]
            lower = head.lower()
            line_end = head.find(b"\r\n")
            request_line = head[:line_end] if line_end >= 0 else head
            parts = request_line.split(b" ")
            if len(parts) != 3:
                self.fail(b"400 Bad Request")
                return
            method, path = parts[0], parts[1]
            body_start = end + 4
            length = header_value(lower, b"\r\ncontent-length:")
            if length is not None:
                try:
                    size = int(length)
                except ValueError:
                    self.fail(b"400 Bad Request")
                    return
                if len(buffer) < body_start + size:
                    return
                body = buffer[body_start : body_start + size]
                self.buffer = buffer[body_start + size :]
            elif b"\r\ntransfer-encoding:" in lower and b"chunked" in (header_value(lower, b"\r\ntransfer-encoding:") or b""):
                decoded = _dechunk(buffer, body_start)
                if decoded is None:
                    return
                body, consumed = decoded
                self.buffer = buffer[consumed:]
            else:
                body = b""
                self.buffer = buffer[body_start:]
            keep_alive = b"\r\nconnection: close" not in lower and not request_line.endswith(b"HTTP/1.0")
            self.handle(method, path, lower, body, keep_alive)

    def handle(self, method: bytes, path: bytes, lower_head: bytes, body: bytes, keep_alive: bool) -> None:
        transport = self.transport
        assert transport is not None
        query = path.find(b"?")
        if query >= 0:
            path = path[:query]
        server = self.server
        answers = server.chat if path.endswith(b"/chat/completions") else server.responses if path.endswith(b"/responses") else None
        if method == b"POST" and answers is not None:
            opts = server.options(path)
            latency, chunks, gap = opts.latency, opts.chunks, opts.gap
            if b"x-bench-" in lower_head:
                value = header_value(lower_head, b"\r\nx-bench-latency-ms:")
                if value is not None:
                    latency = float(value) / 1000
                value = header_value(lower_head, b"\r\nx-bench-chunks:")
                if value is not None:
                    chunks = int(value)
                value = header_value(lower_head, b"\r\nx-bench-gap-ms:")
                if value is not None:
                    gap = float(value) / 1000
            serial = server.count(opts.tag, answers.endpoint)
            stream = b'"stream":true' in body or b'"stream": true' in body
            if not stream:
                whole = answers.whole(serial)
                if latency > 0:
                    self.busy = True
                    self.loop.call_later(latency, self._later, whole, keep_alive)
                    return
                transport.write(whole)
                if not keep_alive:
                    transport.close()
                    self.closed = True
                return
            usage = b'"include_usage":true' in body or b'"include_usage": true' in body
            first, events, tail = answers.stream(max(1, chunks), usage, serial)
            if latency <= 0 and gap <= 0:
                transport.write(first + b"".join(events) + tail)
                if not keep_alive:
                    transport.close()
                    self.closed = True
                return
            self.busy = True
            self.loop.create_task(self._stream(first, events, tail, latency, gap, keep_alive))
            return
        if method == b"GET" and path == b"/__bench/stats":
            transport.write(self.server.stats())
        elif method == b"GET" and path.endswith(b"/models"):
            transport.write(_plain(b"200 OK", b'{"object":"list","data":[{"id":"bench-model","object":"model","created":0,"owned_by":"bench"}]}'))
        else:
            transport.write(_plain(b"404 Not Found", b'{"error":{"message":"not found","type":"invalid_request_error"}}'))
        if not keep_alive:
            transport.close()
            self.closed = True

    def _later(self, response: bytes, keep_alive: bool) -> None:
        if self.closed or self.transport is None:
            return
        self.transport.write(response)
        self._done(keep_alive)

    def _done(self, keep_alive: bool) -> None:
        self.busy = False
        if not keep_alive:
            assert self.transport is not None
            self.transport.close()
            self.closed = True
            return
        if self.buffer:
            self.process()

    async def _stream(self, first: bytes, events: list[bytes], tail: bytes, latency: float, gap: float, keep_alive: bool) -> None:
        """The head and first token event after `latency`, then one event every `gap`, then the tail.

        The pace is kept against the clock, not slept afresh after each write: when the client
        shares this core (the direct calls), its reading each event would otherwise stretch every
        gap by its own work, and direct streams would last longer than proxied ones.
        """
        transport = self.transport
        assert transport is not None
        due = self.loop.time() + latency
        if latency > 0:
            await asyncio.sleep(latency)
        if self.closed:
            return
        transport.write(first)
        for event in (*events, tail):
            due += gap
            wait = due - self.loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if self.closed:
                return
            transport.write(event)
        self._done(keep_alive)

    def fail(self, status: bytes) -> None:
        if self.transport is not None:
            self.transport.write(_plain(status, b""))
            self.transport.close()
        self.closed = True


def header_value(lower_head: bytes, name: bytes) -> bytes | None:
    """The value of a header (`name` given as `\\r\\nname:` in lower case), or None."""
    start = lower_head.find(name)
    if start < 0:
        return None
    start += len(name)
    end = lower_head.find(b"\r\n", start)
    return (lower_head[start:] if end < 0 else lower_head[start:end]).strip()


def _dechunk(buffer: bytes, start: int) -> tuple[bytes, int] | None:
    """A complete chunked body from buffer[start:] → (body, end offset), or None if incomplete."""
    body = []
    pos = start
    while True:
        line_end = buffer.find(b"\r\n", pos)
        if line_end < 0:
            return None
        size = int(buffer[pos:line_end].split(b";")[0], 16)
        pos = line_end + 2
        if size == 0:
            trailer_end = buffer.find(b"\r\n", pos)
            if trailer_end < 0:
                return None
            while trailer_end != pos:  # skip trailers
                pos = trailer_end + 2
                trailer_end = buffer.find(b"\r\n", pos)
                if trailer_end < 0:
                    return None
            return b"".join(body), pos + 2
        if len(buffer) < pos + size + 2:
            return None
        body.append(buffer[pos : pos + size])
        pos += size + 2


async def serve(host: str, port: int, server: Server, ready_file: str | None = None) -> None:
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(lambda: Connection(server), host, port, backlog=4096, reuse_address=True)
    bound = listener.sockets[0].getsockname()[1]
    if ready_file:
        with open(ready_file + ".part", "w") as fh:
            fh.write(str(bound))
        os.replace(ready_file + ".part", ready_file)
    print(f"fake upstream on http://{host}:{bound}/v1 (pid {os.getpid()})", flush=True)
    async with listener:
        await listener.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100, help="0: any free port (see --ready-file)")
    parser.add_argument("--latency-ms", type=float, default=float(os.environ.get("BENCH_LATENCY_MS", 0)))
    parser.add_argument("--chunks", type=int, default=int(os.environ.get("BENCH_CHUNKS", 50)))
    parser.add_argument("--gap-ms", type=float, default=float(os.environ.get("BENCH_GAP_MS", 0)))
    parser.add_argument("--ready-file", help="write the bound port to this file once listening")
    args = parser.parse_args(argv)
    server = Server(args.latency_ms, args.chunks, args.gap_ms)
    try:
        import uvloop  # type: ignore[import-not-found]

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        runner(serve(args.host, args.port, server, args.ready_file))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
