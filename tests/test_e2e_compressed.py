"""Compressed request bodies end to end: gzip and deflate are inflated before parsing and the
row holds the JSON; a bomb, a corrupt body and an unknown coding get a 4xx and a row.

The proxy here answers through the built-in mock and has a 1 MiB body limit.
"""

from __future__ import annotations

import gzip
import json
import zlib

import httpx
import pytest

from conftest import HEX32, assert_error_shape

pytestmark = pytest.mark.timeout(60)

LIMIT = 1024 * 1024
MESSAGE = "Compressed hello"
BODY = json.dumps({"model": "mock/echo", "messages": [{"role": "user", "content": MESSAGE}]}).encode()


@pytest.fixture(scope="module")
def proxy(module_proxy_factory):
    return module_proxy_factory(config=f"[server]\nmax_body_bytes = {LIMIT}\n")


def post(proxy, content: bytes, encoding: str) -> httpx.Response:
    headers = {"content-type": "application/json", "content-encoding": encoding}
    return httpx.post(proxy.v1 + "/chat/completions", content=content, headers=headers, timeout=10)


def row_of(proxy, response: httpx.Response):
    request_id = response.headers.get("x-study-request-id", "")
    assert HEX32.match(request_id), dict(response.headers)
    return proxy.log.wait_row(request_id)


@pytest.mark.parametrize("encoding, compress", [("gzip", gzip.compress), ("deflate", zlib.compress)])
def test_compressed_body_is_answered_and_logged_as_json(proxy, encoding, compress):
    response = post(proxy, compress(BODY), encoding)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == f"Mock answer to: {MESSAGE}"
    row = row_of(proxy, response)
    assert json.loads(row["request_json"]) == json.loads(BODY)
    assert row["prompt"] == f"user: {MESSAGE}"
    assert row["status_code"] == 200 and row["error"] is None


def test_small_bomb_past_the_limit_gets_413_and_a_row(proxy):
    bomb = gzip.compress(bytes(10 * LIMIT), compresslevel=9)  # ~10 KB that inflates to 10 MiB
    assert len(bomb) < 20_000
    response = post(proxy, bomb, "gzip")
    assert response.status_code == 413
    assert assert_error_shape(response.json())["code"] == "request_too_large"
    row = row_of(proxy, response)
    assert row["status_code"] == 413 and "larger than the limit" in row["error"]
    assert row["request_json"] is None


def test_corrupt_gzip_gets_400_and_a_row(proxy):
    response = post(proxy, gzip.compress(BODY)[:-12], "gzip")
    assert response.status_code == 400
    error = assert_error_shape(response.json())
    assert error["code"] == "invalid_compressed_body" and "not valid gzip data" in error["message"]
    row = row_of(proxy, response)
    assert row["status_code"] == 400 and "not valid gzip data" in row["error"]
    assert row["request_json"] is None


@pytest.mark.parametrize("encoding", ["br", "zstd"])
def test_unknown_encoding_gets_415_and_a_row_not_a_utf8_error(proxy, encoding):
    response = post(proxy, b"\x8b\x05\x80{\"model\": \"mock/echo\"}\x03", encoding)
    assert response.status_code == 415
    error = assert_error_shape(response.json())
    assert (error["code"], error["param"]) == ("unsupported_content_encoding", "Content-Encoding")
    assert repr(encoding) in error["message"] and "UTF-8" not in error["message"]
    row = row_of(proxy, response)
    assert row["status_code"] == 415 and "Content-Encoding" in row["error"]
    assert row["request_json"] is None
