"""Compressed request bodies: `validation.read_body` with `Content-Encoding`."""

import asyncio
import gzip
import tracemalloc
import zlib

import pytest
from starlette.requests import Request

from proxy.errors import ProxyError
from proxy.validation import read_body

BODY = b'{"model": "m", "messages": [{"role": "user", "content": "' + b"squeeze me " * 200 + b'"}]}'


def read(raw: bytes, encoding: str | None, limit: int = 1 << 20, piece: int = 1000) -> bytes:
    """`read_body` on `raw` arriving in pieces of `piece` bytes."""
    chunks = [raw[i : i + piece] for i in range(0, len(raw), piece)] or [b""]
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]

    async def receive():
        return messages.pop(0)

    headers = {"content-encoding": encoding} if encoding is not None else {}
    scope = {"type": "http", "method": "POST", "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}
    return asyncio.run(read_body(Request(scope, receive), headers, limit))


def refused(raw: bytes, encoding: str, **kwargs) -> ProxyError:
    with pytest.raises(ProxyError) as info:
        read(raw, encoding, **kwargs)
    assert set(info.value.body()["error"]) == {"message", "type", "param", "code"}
    return info.value


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize(
    "encoding, raw",
    [
        ("gzip", gzip.compress(BODY)),
        ("x-gzip", gzip.compress(BODY)),
        ("GZIP", gzip.compress(BODY)),
        ("deflate", zlib.compress(BODY)),  # the zlib format, as RFC 9110 means it
        ("deflate", raw_deflate(BODY)),  # raw deflate, as .NET's DeflateStream sends it
        ("identity", BODY),
        ("gzip, identity", gzip.compress(BODY)),
        ("deflate, gzip", gzip.compress(zlib.compress(BODY))),  # deflate applied first, gzip last
    ],
)
def test_compressed_bodies_are_inflated(encoding, raw):
    assert read(raw, encoding) == BODY
    assert read(raw, encoding, piece=1) == BODY  # one byte at a time: deflate's sniffing waits for two


def test_plain_body_is_unchanged():
    assert read(BODY, None) == BODY


def test_the_limit_counts_inflated_bytes():
    raw = gzip.compress(BODY)
    assert len(raw) < 200 < len(BODY)
    assert read(raw, "gzip", limit=len(BODY)) == BODY
    error = refused(raw, "gzip", limit=len(BODY) - 1)
    assert (error.status_code, error.code) == (413, "request_too_large")


def test_a_bomb_is_refused_without_inflating_it():
    compressor = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
    megabyte = bytes(1 << 20)
    bomb = b"".join(compressor.compress(megabyte) for _ in range(200)) + compressor.flush()  # 200 MiB of zeros
    assert len(bomb) < 250_000
    tracemalloc.start()
    try:
        error = refused(bomb, "gzip", limit=64 * 1024, piece=64 * 1024)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (error.status_code, error.code) == (413, "request_too_large")
    assert peak < 2 * 1024 * 1024, f"{peak} bytes allocated while refusing a bomb"


@pytest.mark.parametrize(
    "encoding, raw, why",
    [
        ("gzip", b"this is not gzip at all", "incorrect header check"),
        ("gzip", gzip.compress(BODY)[:-10], "ends early"),
        ("gzip", gzip.compress(BODY) + b"junk", "data after the end"),
        ("deflate", b"x", "ends early"),
        ("deflate", zlib.compress(BODY)[:20] + b"\xff" * 40, ""),
    ],
)
def test_corrupt_compressed_bodies_are_the_clients_error(encoding, raw, why):
    error = refused(raw, encoding)
    assert (error.status_code, error.code) == (400, "invalid_compressed_body")
    assert f"not valid {encoding} data" in error.message and why in error.message


@pytest.mark.parametrize("encoding, named", [("br", "br"), ("zstd", "zstd"), ("compress", "compress"), ("gzip, br", "br")])
def test_unknown_encodings_are_refused_before_the_body_is_read(encoding, named):
    async def receive():
        raise AssertionError("the body was read")

    headers = {"content-encoding": encoding}
    scope = {"type": "http", "method": "POST", "headers": [(b"content-encoding", encoding.encode())]}
    with pytest.raises(ProxyError) as info:
        asyncio.run(read_body(Request(scope, receive), headers, 1 << 20))
    error = info.value
    assert (error.status_code, error.code, error.param) == (415, "unsupported_content_encoding", "Content-Encoding")
    assert f"Unsupported Content-Encoding {named!r}" in error.message
