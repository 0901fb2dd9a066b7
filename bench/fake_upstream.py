"""A fake OpenAI-compatible upstream built for speed: raw asyncio (uvloop when installed).

    python bench/fake_upstream.py --port 9100 [--latency-ms 0] [--chunks 50] [--gap-ms 0]

HTTP/1.1 keep-alive, just enough of it: request line, headers, a `Content-Length` (or
chunked) body. Every `POST …/chat/completions` gets a canned chat completion with `usage`;
a body containing `"stream": true` (or `"stream":true`) gets an SSE stream of N chunks,
plus a usage chunk when it contains `"include_usage": true`, then `data: [DONE]`. The
body is never parsed as JSON: a byte search is all it takes.

Per-request options, from (in order of precedence):

* headers `x-bench-latency-ms`, `x-bench-chunks`, `x-bench-gap-ms`;
* path segments before `/v1/`, `key-value` each: `/t-ours/lat-50/chunks-50/gap-2/v1/chat/completions`
  (a proxy forwards no client header, but its base URL can carry these);
* the command-line defaults.

`lat` is the time before the answer (before the first chunk of a stream), `gap` the time
between stream chunks. `t-NAME` only tags the request: `GET /__bench/stats` returns the
number of completions served per tag, `{"total": N, "by_tag": {"ours": N, …}}`, so a
harness can tell which caller reached the upstream how often.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys

try:
    import orjson

    def _dumps(obj: object) -> bytes:
        return orjson.dumps(obj)
except ImportError:  # pragma: no cover - the bench venvs have orjson
    import json

    def _dumps(obj: object) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()


USAGE = {"prompt_tokens": 14, "completion_tokens": 9, "total_tokens": 23}
CREATED = 1_764_000_000

COMPLETION = _dumps(
    {
        "id": "chatcmpl-bench0000000000000000000000",
        "object": "chat.completion",
        "created": CREATED,
        "model": "bench-model",
        "system_fingerprint": "fp_bench",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "This is a canned answer from the benchmark's fake upstream.",
                    "refusal": None,
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": USAGE,
    }
)


def _chunk(index: int, last: bool) -> bytes:
    delta: dict[str, object] = {"content": f"tok{index} "}
    if index == 0:
        delta["role"] = "assistant"
    event = {
        "id": "chatcmpl-bench-stream",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": "bench-model",
        "system_fingerprint": "fp_bench",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": "stop" if last else None}],
    }
    return b"data: " + _dumps(event) + b"\n\n"


USAGE_EVENT = b"data: " + _dumps(
    {
        "id": "chatcmpl-bench-stream",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": "bench-model",
        "choices": [],
        "usage": USAGE,
    }
) + b"\n\n"
DONE_EVENT = b"data: [DONE]\n\n"

_JSON_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-request-id: req_bench\r\n"
    b"openai-processing-ms: 1\r\ncontent-length: %d\r\n\r\n"
)
COMPLETION_RESPONSE = _JSON_HEAD % len(COMPLETION) + COMPLETION
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\n"
    b"x-request-id: req_bench\r\ntransfer-encoding: chunked\r\n\r\n"
)


def _http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


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
        self.stream_events: dict[int, list[bytes]] = {}

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

    def events(self, chunks: int) -> list[bytes]:
        events = self.stream_events.get(chunks)
        if events is None:
            events = [_http_chunk(_chunk(i, i == chunks - 1)) for i in range(chunks)]
            self.stream_events[chunks] = events
        return events

    def count(self, tag: str) -> None:
        self.total += 1
        self.by_tag[tag] = self.by_tag.get(tag, 0) + 1

    def stats(self) -> bytes:
        return _plain(b"200 OK", _dumps({"total": self.total, "by_tag": self.by_tag}))


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
        if method == b"POST" and path.endswith(b"/chat/completions"):
            server = self.server
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
            server.count(opts.tag)
            stream = b'"stream":true' in body or b'"stream": true' in body
            if not stream:
                if latency > 0:
                    self.busy = True
                    self.loop.call_later(latency, self._later, COMPLETION_RESPONSE, keep_alive)
                    return
                transport.write(COMPLETION_RESPONSE)
                if not keep_alive:
                    transport.close()
                    self.closed = True
                return
            usage = b'"include_usage":true' in body or b'"include_usage": true' in body
            events = server.events(chunks)
            tail = (_http_chunk(USAGE_EVENT) if usage else b"") + _http_chunk(DONE_EVENT) + b"0\r\n\r\n"
            if latency <= 0 and gap <= 0:
                transport.write(STREAM_HEAD + b"".join(events) + tail)
                if not keep_alive:
                    transport.close()
                    self.closed = True
                return
            self.busy = True
            self.loop.create_task(self._stream(events, tail, latency, gap, keep_alive))
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

    async def _stream(self, events: list[bytes], tail: bytes, latency: float, gap: float, keep_alive: bool) -> None:
        transport = self.transport
        assert transport is not None
        if latency > 0:
            await asyncio.sleep(latency)
        if self.closed:
            return
        transport.write(STREAM_HEAD + events[0])
        for event in events[1:]:
            if gap > 0:
                await asyncio.sleep(gap)
            if self.closed:
                return
            transport.write(event)
        if gap > 0:
            await asyncio.sleep(gap)
        if self.closed:
            return
        transport.write(tail)
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
