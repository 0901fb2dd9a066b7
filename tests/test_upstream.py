"""The upstream HTTP client against raw asyncio servers on loopback: framing, reuse, failures."""

from __future__ import annotations

import asyncio
import gzip
import shutil
import ssl
import subprocess
from collections.abc import Awaitable, Callable

import pytest

from proxy.upstream import MAX_HEAD_BYTES, UpstreamClient, UpstreamRequest, UpstreamUnreachable
from proxy.upstream_answer import INFLATE_PIECE, READ_HIGH_WATER

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """(head, body) of one request sent with a Content-Length."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:"))
    return head, await reader.readexactly(length)


def answer(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    extra = "".join(f"{h}\r\n" for h in headers)
    return f"HTTP/1.1 {status}\r\ncontent-length: {len(body)}\r\n{extra}\r\n".encode() + body


async def serve(handler: Handler, tls: ssl.SSLContext | None = None) -> tuple[asyncio.Server, str, list[int]]:
    """A server on a free loopback port (https with `tls`); the list counts the connections it accepted."""
    accepted: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        try:
            await handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    return server, f"{'https' if tls else 'http'}://127.0.0.1:{port}/v1/chat/completions", accepted


def answering(data: bytes, then_wait: float = 0.0) -> Handler:
    """A handler that reads one request, sends `data`, and keeps the connection `then_wait` seconds."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(data)
        await writer.drain()
        await asyncio.sleep(then_wait)

    return handler


def post(url: str, body: bytes = b'{"x":1}', **headers: str) -> UpstreamRequest:
    return UpstreamRequest("POST", url, {"content-type": "application/json", **headers}, body)


def run(coro: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 20))  # type: ignore[arg-type]


def test_sends_one_request_and_reads_a_content_length_answer_on_a_reused_connection() -> None:
    seen: list[tuple[bytes, bytes]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, body = await read_request(reader)
            seen.append((head, body))
            writer.write(answer(b'{"ok":' + str(len(seen)).encode() + b"}", "content-type: application/json", "x-request-id: r1"))
            await writer.drain()

    async def main() -> None:
        server, url, accepted = await serve(handler)
        client = UpstreamClient()
        for i in range(3):
            response = await client.send(post(url, authorization="Bearer op"))
            assert response.status_code == 200
            assert response.headers["x-request-id"] == "r1" and response.headers["content-type"] == "application/json"
            assert await response.read() == b'{"ok":%d}' % (i + 1)
        assert len(accepted) == 1  # keep-alive: one connection for the three
        head, body = seen[0]
        assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
        assert b"\r\nhost: 127.0.0.1:" in head and b"\r\nauthorization: Bearer op\r\n" in head
        assert body == b'{"x":1}'
        await client.aclose()
        server.close()

    run(main())


def test_streams_a_chunked_answer_piece_by_piece() -> None:
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        writer.write(b"7\r\ndata: 1\r\n")
        await writer.drain()
        await release.wait()
        writer.write(b"7\r\ndata: 2\r\n0\r\n\r\n")
        await writer.drain()

    async def main() -> None:
        server, url, _ = await serve(handler)
        client = UpstreamClient()
        response = await client.send(post(url))
        chunks = response.iter_bytes()
        assert await anext(chunks) == b"data: 1"  # before the rest exists: nothing is buffered
        release.set()
        assert [c async for c in chunks] == [b"data: 2"]
        await response.close()
        await client.aclose()
        server.close()

    run(main())


def test_chunks_that_arrived_together_are_read_as_one_piece() -> None:
    """A burst of stream events (many HTTP chunks in one segment) reaches the relay in one read,
    so that it leaves in one write to the client rather than one per event."""
    events = [b"data: %d\n\n" % i for i in range(20)]
    burst = b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)  # the head alone first: the burst comes after it was handed over
        writer.write(burst + b"0\r\n\r\n")
        await writer.drain()

    async def main() -> None:
        server, url, _ = await serve(handler)
        client = UpstreamClient()
        response = await client.send(post(url))
        pieces = [c async for c in response.iter_bytes()]
        assert b"".join(pieces) == b"".join(events)
        assert len(pieces) == 1
        await client.aclose()
        server.close()

    run(main())


def test_an_answer_ended_by_closing_the_connection_is_read_whole_and_not_reused() -> None:
    async def main() -> None:
        server, url, accepted = await serve(answering(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it"))
        client = UpstreamClient()
        for _ in range(2):
            response = await client.send(post(url))
            assert await response.read() == b"all of it"
        assert len(accepted) == 2
        server.close()

    run(main())


def test_gzip_answers_are_decoded() -> None:
    async def main() -> None:
        server, url, _ = await serve(answering(answer(gzip.compress(b'{"zipped":true}'), "content-encoding: gzip")))
        response = await UpstreamClient().send(post(url))
        assert await response.read() == b'{"zipped":true}'
        server.close()

    run(main())


def test_a_compression_bomb_is_inflated_a_piece_at_a_time_and_refused_past_the_answer_limit() -> None:
    bomb = gzip.compress(b"\0" * (64 * INFLATE_PIECE), 9)  # 64 MiB of zeros in ~64 KB

    async def main() -> None:
        server, url, _ = await serve(answering(answer(bomb, "content-encoding: gzip"), then_wait=1))
        streamed = await UpstreamClient(max_answer_bytes=3 * INFLATE_PIECE).send(post(url))
        pieces = []
        with pytest.raises(UpstreamUnreachable) as cut:
            async for piece in streamed.iter_bytes():
                pieces.append(len(piece))
        assert cut.value.kind == "too_large" and not cut.value.retryable and "3,145,728 bytes" in str(cut.value)
        assert max(pieces) <= INFLATE_PIECE and sum(pieces) <= 3 * INFLATE_PIECE
        whole = await UpstreamClient(max_answer_bytes=3 * INFLATE_PIECE).send(post(url))
        with pytest.raises(UpstreamUnreachable, match="max_answer_bytes"):
            await whole.read()
        relayed = await UpstreamClient(max_answer_bytes=3 * INFLATE_PIECE).send(post(url))
        sizes = [len(piece) async for piece in relayed.iter_bytes(bounded=False)]  # a relay holds none of it
        assert sum(sizes) == 64 * INFLATE_PIECE and max(sizes) <= INFLATE_PIECE
        server.close()

    run(main())


def test_an_answer_within_the_limit_is_read_and_one_past_it_is_refused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            _, body = await read_request(reader)
            writer.write(answer(b"y" * int(body)))
            await writer.drain()

    async def main() -> None:
        server, url, _ = await serve(handler)
        client = UpstreamClient(max_answer_bytes=1000)
        assert await (await client.send(post(url, b"1000"))).read() == b"y" * 1000
        with pytest.raises(UpstreamUnreachable) as refused:
            await (await client.send(post(url, b"1001"))).read()
        assert refused.value.kind == "too_large"
        assert await (await client.send(post(url, b"10"))).read() == b"y" * 10  # the client goes on
        server.close()

    run(main())


def test_a_damaged_compressed_answer_is_a_protocol_error() -> None:
    async def main() -> None:
        damaged = gzip.compress(b'{"zipped":true}')[:12] + b"not deflate at all"
        server, url, _ = await serve(answering(answer(damaged, "content-encoding: gzip")))
        with pytest.raises(UpstreamUnreachable) as failed:
            await (await UpstreamClient().send(post(url))).read()
        assert failed.value.kind == "protocol" and "damaged" in str(failed.value)
        server.close()

    run(main())


def test_an_answer_head_past_its_limit_is_refused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for _ in range(MAX_HEAD_BYTES // 1000 + 10):
            writer.write(b"x-filler: " + b"f" * 988 + b"\r\n")
            await writer.drain()
        await asyncio.sleep(1)

    async def main() -> None:
        server, url, _ = await serve(handler)
        with pytest.raises(UpstreamUnreachable) as refused:
            await UpstreamClient().send(post(url))
        assert refused.value.kind == "too_large" and "head" in str(refused.value)
        server.close()

    run(main())


def test_a_reused_connection_the_server_closed_is_replaced_transparently() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(b"one"))  # keep-alive promised...
        await writer.drain()
        await read_request(reader)  # ...but the next request on it finds the server closing

    async def main() -> None:
        server, url, accepted = await serve(handler)
        client = UpstreamClient()
        assert await (await client.send(post(url))).read() == b"one"
        assert await (await client.send(post(url))).read() == b"one"
        assert len(accepted) == 2
        server.close()

    run(main())


def test_an_error_status_is_an_answer_not_an_exception() -> None:
    async def main() -> None:
        server, url, _ = await serve(answering(answer(b'{"error":{"message":"slow down"}}', "retry-after-ms: 250", status="429 Too Many Requests")))
        response = await UpstreamClient().send(post(url))
        assert response.status_code == 429 and response.headers["retry-after-ms"] == "250"
        assert b"slow down" in await response.read()
        server.close()

    run(main())


HALF_A_BODY = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhalf"


@pytest.mark.parametrize(
    "sent, then_wait, fails_in, kind",
    [
        (b"", 5, "send", "timeout"),  # no answer within the first-byte timeout
        (HALF_A_BODY, 5, "read", "timeout"),  # the body stalls midway
        (HALF_A_BODY, 0, "read", "protocol"),  # the connection is cut mid-answer
        (b"SSH-2.0-OpenSSH\r\n\r\n", 1, "send", "protocol"),  # not HTTP at all
    ],
    ids=["no-answer", "stalled-body", "cut-body", "not-http"],
)
def test_upstream_failures_are_told_apart(sent: bytes, then_wait: float, fails_in: str, kind: str) -> None:
    async def main() -> None:
        server, url, _ = await serve(answering(sent, then_wait))
        client = UpstreamClient(first_byte_timeout=0.2)
        with pytest.raises(UpstreamUnreachable) as caught:
            response = await client.send(post(url))
            assert fails_in == "read", "the answer's head should not have come through"
            await response.read()
        assert caught.value.kind == kind
        server.close()

    run(main())


def test_nothing_listening_is_a_connect_error() -> None:
    async def main() -> None:
        server, url, _ = await serve(lambda r, w: asyncio.sleep(0))
        server.close()
        await server.wait_closed()
        with pytest.raises(UpstreamUnreachable) as caught:
            await UpstreamClient().send(post(url))
        assert caught.value.kind == "connect"

    run(main())


def test_a_header_value_with_a_line_break_is_never_sent() -> None:
    async def main() -> None:
        with pytest.raises(UpstreamUnreachable, match="line break"):
            await UpstreamClient().send(post("http://127.0.0.1:9/x", authorization="Bearer a\r\nx-evil: 1"))

    run(main())


def test_a_large_answer_is_read_whole_with_reading_paused_and_resumed() -> None:
    big = b"x" * (READ_HIGH_WATER * 3)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(answer(big))
            await writer.drain()

    async def main() -> None:
        server, url, accepted = await serve(handler)
        client = UpstreamClient()
        response = await client.send(post(url))
        await asyncio.sleep(0.2)  # let the server fill the buffers while nobody reads
        assert await response.read() == big
        assert await (await client.send(post(url))).read() == big  # the connection went back to the pool
        assert len(accepted) == 1
        server.close()

    run(main())


@pytest.fixture
def certificate(tmp_path):
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make a test certificate (apt-get install openssl)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    return cert, server


def test_https_upstreams_are_verified_and_reused(certificate) -> None:
    cert, server_tls = certificate

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(answer(b"over tls"))
            await writer.drain()

    async def main() -> None:
        server, url, accepted = await serve(handler, tls=server_tls)
        trusting = UpstreamClient(tls=ssl.create_default_context(cafile=str(cert)))
        for _ in range(2):
            assert await (await trusting.send(post(url))).read() == b"over tls"
        assert len(accepted) == 1
        await trusting.aclose()
        with pytest.raises(UpstreamUnreachable, match="certificate verify failed") as caught:
            await UpstreamClient().send(post(url))  # certifi's roots do not know this certificate
        assert caught.value.kind == "connect"
        server.close()

    run(main())
