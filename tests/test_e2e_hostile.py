"""Hostile and slow clients against a real server: header size, head and body timeouts, idle
keep-alive, the connection cap, deep JSON, invalid headers, a client leaving mid-body, and
bodies with every wrong type in the fields the proxy reads.

Each refusal is in OpenAI's error shape; a request that had started (its head arrived) has a
complete row; nothing is ever a 5xx.
"""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest

from complete_rows import assert_row_complete
from conftest import assert_error_shape
from rawhttp import build, closed_by_peer, connect, exchange, read_response

pytestmark = pytest.mark.timeout(90)

CHAT = "/v1/chat/completions"
TIMEOUT = 1.0  # header_timeout, body_timeout and keep_alive_timeout of the module's proxy
CONFIG = f"""
[server]
header_timeout = {TIMEOUT}
body_timeout = {TIMEOUT}
keep_alive_timeout = {TIMEOUT}
"""
JSON = [(b"Content-Type", b"application/json")]


def chat(**extra) -> dict:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], **extra}


@pytest.fixture(scope="module")
def proxy(module_proxy_factory):
    return module_proxy_factory(config=CONFIG)


def host(proxy) -> str:
    return f"127.0.0.1:{proxy.port}"


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1])


def refused_row(proxy, response, status: int, code: str, endpoint: str = "chat/completions", body_sent: bool = True):
    """The answer's status and error code, and its complete row (`body_sent` False: the body
    never arrived whole, and the row keeps none of it)."""
    assert response is not None, "no answer"
    assert response.status == status, (response.status, response.body)
    assert assert_error_shape(response.json())["code"] == code
    request_id = response.headers["x-study-request-id"]
    row = proxy.log.wait_row(request_id)
    assert_row_complete(proxy.log, row, status=status, endpoint=endpoint, request_id=request_id, body_sent=body_sent)
    return row


# --- header size -------------------------------------------------------------------------------


def test_headers_over_64_kib_get_431(proxy):
    big = b"a" * (70 * 1024)
    response = exchange(proxy.port, build("POST", CHAT, host(proxy), [*JSON, (b"X-Study-Tags", big)], json.dumps(chat()).encode()))
    assert response is not None and response.status == 431
    assert assert_error_shape(response.json())["code"] == "headers_too_large"
    assert response.headers["connection"] == "close"


def test_many_small_headers_over_the_limit_get_431(proxy):
    headers = [(b"X-Filler-%d" % i, b"v" * 100) for i in range(800)]  # ~85 KiB, each header small
    response = exchange(proxy.port, build("GET", "/healthz", host(proxy), headers))
    assert response is not None and response.status == 431


def test_headers_under_the_limit_are_fine(proxy):
    tags = ",".join(f"tag{i}" for i in range(5000)).encode()  # ~43 KiB
    response = exchange(proxy.port, build("POST", CHAT, host(proxy), [*JSON, (b"X-Study-Tags", tags)], json.dumps(chat()).encode()))
    assert response is not None and response.status == 200


def test_a_50_mb_header_is_refused_without_holding_it(proxy):
    pid = proxy.process.pid
    before = rss_kib(pid)
    head = f"GET /v1/models HTTP/1.1\r\nHost: {host(proxy)}\r\nX-Study-Tags: ".encode()
    piece = b"t" * (1 << 20)
    response = None
    with connect(proxy.port, timeout=10) as sock:
        try:
            sock.sendall(head)
            for _ in range(50):
                sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            response = read_response(sock, timeout=5)
        except (ConnectionResetError, AssertionError):
            response = None
    after = rss_kib(pid)
    assert after - before < 20 * 1024, f"RSS grew from {before} KiB to {after} KiB"
    assert response is None or response.status == 431
    assert proxy.running()
    assert httpx.get(proxy.url + "/healthz", timeout=5).status_code == 200


def test_a_long_prompt_echoed_in_many_choices_with_logprobs_stays_bounded(proxy):
    """The mock's answers are bounded as a model's are: before, this was a 592 MB answer."""
    pid = proxy.process.pid
    before = rss_kib(pid)
    words = " ".join(["w"] * 200_000)
    response = httpx.post(proxy.v1 + "/chat/completions", timeout=60, json=chat(
        messages=[{"role": "user", "content": words}], n=8, logprobs=True, top_logprobs=5))
    assert response.status_code == 200 and len(response.content) < 16 << 20
    assert {choice["finish_reason"] for choice in response.json()["choices"]} == {"length"}
    assert rss_kib(pid) - before < 100 * 1024, f"RSS grew from {before} KiB to {rss_kib(pid)} KiB"
    row = proxy.log.wait_row(response.headers["x-study-request-id"])
    assert row["completion_tokens"] == 8 * (65_536 // (8 * 6))


# --- timeouts ----------------------------------------------------------------------------------


def test_a_head_that_does_not_finish_gets_408(proxy):
    with connect(proxy.port) as sock:
        sock.sendall(f"POST {CHAT} HTTP/1.1\r\nHost: {host(proxy)}\r\nX-Study-Tags: a".encode())
        started = time.monotonic()
        response = read_response(sock, timeout=TIMEOUT + 5)
    assert response is not None and response.status == 408
    assert assert_error_shape(response.json())["code"] == "request_timeout"
    assert time.monotonic() - started < TIMEOUT + 2


def test_a_slowloris_head_is_cut_off_though_bytes_keep_coming(proxy):
    with connect(proxy.port) as sock:
        sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host(proxy)}\r\n".encode())
        started = time.monotonic()
        response = None
        for i in range(40):  # a header byte every 0.1 s: never a whole head
            try:
                sock.sendall(b"X-Slow-%d: x\r\n" % i)
            except (BrokenPipeError, ConnectionResetError):
                break
            sock.settimeout(0.1)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            assert data.startswith(b"HTTP/1.1 408"), data[:100]
            response = data
            break
    assert response is not None, "the slow head was never cut off"
    assert time.monotonic() - started < TIMEOUT + 2


def test_a_connection_that_sends_nothing_is_closed(proxy):
    with connect(proxy.port) as sock:
        assert closed_by_peer(sock, TIMEOUT + 3)


def test_a_body_that_stops_arriving_gets_408_and_a_row(proxy):
    session = uuid.uuid4().hex
    headers = [*JSON, (b"Content-Length", b"200"), (b"X-Study-Session", session.encode())]
    with connect(proxy.port) as sock:
        sock.sendall(build("POST", CHAT, host(proxy), headers, framing="none") + b'{"model": "gpt-4o-mini", ')
        response = read_response(sock, timeout=TIMEOUT + 5)
    row = refused_row(proxy, response, 408, "request_timeout", body_sent=False)
    assert row["session_id"] == session


def test_a_chunked_body_that_stops_arriving_gets_408(proxy):
    with connect(proxy.port) as sock:
        sock.sendall(build("POST", CHAT, host(proxy), [*JSON, (b"Transfer-Encoding", b"chunked")], framing="none")
                     + b"5\r\n{\"mod\r\n")
        response = read_response(sock, timeout=TIMEOUT + 5)
    refused_row(proxy, response, 408, "request_timeout", body_sent=False)


@pytest.mark.parametrize("broken", [b"zz\r\n{}\r\n0\r\n\r\n", b"ffffffffffffffffffff\r\n{", b"2\r\n{}XX0\r\n\r\n"],
                         ids=["not-hex", "size-past-64-bits", "no-crlf-after-data"])
def test_a_chunked_body_with_broken_framing_gets_400_and_its_row(proxy, broken):
    """The head was read, so the call has begun: its handler answers (not the HTTP layer
    alone), and the row says what the client was told, not that it went away."""
    with connect(proxy.port) as sock:
        sock.sendall(build("POST", CHAT, host(proxy), [*JSON, (b"Transfer-Encoding", b"chunked")], framing="none")
                     + broken)
        response = read_response(sock, timeout=5)
        assert closed_by_peer(sock, 5), "the connection stays open after a body it cannot read"
    row = refused_row(proxy, response, 400, "invalid_http_request", body_sent=False)
    assert "framing" in row["error"]


def test_a_slow_body_that_keeps_coming_is_not_cut_off(proxy):
    body = json.dumps(chat()).encode()
    with connect(proxy.port) as sock:
        sock.sendall(build("POST", CHAT, host(proxy), [*JSON, (b"Content-Length", b"%d" % len(body))], framing="none"))
        pieces = [body[i:i + len(body) // 4 + 1] for i in range(0, len(body), len(body) // 4 + 1)]
        for piece in pieces:  # the whole body takes longer than the timeout, no gap is as long
            time.sleep(TIMEOUT * 0.4)
            sock.sendall(piece)
        response = read_response(sock)
    assert response is not None and response.status == 200, response


def test_an_idle_keep_alive_connection_is_closed(proxy):
    request = build("GET", "/healthz", host(proxy), [])
    with connect(proxy.port) as sock:
        sock.sendall(request)
        sock.settimeout(5)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        assert not closed_by_peer(sock, TIMEOUT * 0.3), "closed before the keep-alive timeout"
        assert closed_by_peer(sock, TIMEOUT + 3), "an idle keep-alive connection was kept open"


def test_a_client_that_leaves_mid_body_gets_a_499_row(proxy):
    session = uuid.uuid4().hex
    headers = [*JSON, (b"Content-Length", b"500"), (b"X-Study-Session", session.encode())]
    with connect(proxy.port) as sock:
        sock.sendall(build("POST", CHAT, host(proxy), headers, framing="none") + b'{"model": "gpt-4o-mini"')
        time.sleep(0.2)
    deadline = time.monotonic() + 5
    while not (rows := proxy.log.rows("session_id = ?", (session,))) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(rows) == 1, rows
    row = rows[0]
    assert_row_complete(proxy.log, row, status=499, endpoint="chat/completions", body_sent=False)
    assert row["error"] == "client_disconnected"
    assert "Traceback" not in proxy.output()


# --- the connection cap ------------------------------------------------------------------------


def test_connections_past_the_cap_get_503(proxy_factory):
    server = proxy_factory(config="[server]\nmax_connections = 4\nheader_timeout = 10.0\n")
    idle = [connect(server.port) for _ in range(4)]
    try:
        time.sleep(0.2)
        response = exchange(server.port, build("GET", "/healthz", f"127.0.0.1:{server.port}", []))
        assert response is not None and response.status == 503
        error = assert_error_shape(response.json())
        assert (error["type"], error["code"]) == ("server_error", "too_many_connections")
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.3)
    assert httpx.get(server.url + "/healthz", timeout=5).status_code == 200


# --- bodies and headers that are not what they should be -----------------------------------------


def post(proxy, body: bytes | dict, headers: dict[bytes, bytes] | None = None, path: str = CHAT):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return exchange(proxy.port, build("POST", path, host(proxy), [*JSON, *(headers or {}).items()], content))


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [129, 300, 2000])
def test_json_nested_past_the_limit_is_400(proxy, depth):
    body = f'{{"model": "gpt-4o-mini", "messages": [{{"role": "user", "content": "hi"}}], "x": {nested(depth)}}}'
    refused_row(proxy, post(proxy, body.encode()), 400, "invalid_json")


def test_json_nested_within_the_limit_is_fine(proxy):
    body = f'{{"model": "gpt-4o-mini", "messages": [{{"role": "user", "content": "[[[[ {"[" * 500}"}}], "x": {nested(120)}}}'
    response = post(proxy, body.encode())
    assert response is not None and response.status == 200, response.body


@pytest.mark.parametrize("name, value", [
    (b"X-Study-Retries", b"\xb2"),  # a latin-1 superscript two: str.isdigit() says yes
    (b"X-Study-Retries", "３".encode()),  # a full-width digit, as UTF-8
    (b"X-Study-Retries", b"9" * 5000),  # more digits than int() takes
    (b"X-Study-Retries", b"-1"),
    (b"X-Study-Cache", b"\xff"),
    (b"X-Study-Metadata", b'{"a":' * 300 + b"1" + b"}" * 300),
    (b"X-Study-Metadata", b"[1, 2]"),
    (b"X-Study-Metadata", b'{"a": \xff}'),
], ids=["superscript", "fullwidth", "long", "negative", "cache-latin1", "metadata-deep", "metadata-list",
        "metadata-latin1"])
def test_an_invalid_header_is_400(proxy, name, value):
    # Headers are checked before the body is read: the row has no request_json.
    row = refused_row(proxy, post(proxy, chat(), {name: value}), 400, "invalid_header", body_sent=False)
    assert row["attempts"] == 0


def test_latin1_bytes_in_free_text_headers_are_recorded(proxy):
    response = post(proxy, chat(), {b"X-Study-Tags": b"caf\xe9,b", b"X-Study-Session": b"s\xb2", b"X-Study-User": b"\xff"})
    assert response is not None and response.status == 200
    row = proxy.log.wait_row(response.headers["x-study-request-id"])
    assert json.loads(row["tags"]) == ["café", "b"]
    assert_row_complete(proxy.log, row, status=200, endpoint="chat/completions")


ODD_BODIES = {
    "tool_calls-int": chat(messages=[{"role": "assistant", "content": "a", "tool_calls": 5}, {"role": "user", "content": "q"}]),
    "tool_calls-strings": chat(messages=[{"role": "assistant", "tool_calls": ["x", {"function": 3}]}, {"role": "user", "content": "q"}]),
    "content-int": chat(messages=[{"role": "user", "content": 5}]),
    "content-parts-odd": chat(messages=[{"role": "user", "content": [5, {"type": 3}, {"text": [1]}]}]),
    "metadata-list": chat(metadata=[1, 2]),
    "metadata-deep": chat(metadata={"a": json.loads(nested(100))}),
    "user-int": chat(user=7),
    "tools-int": chat(tools=5, tool_choice={"function": 5}),
    "tools-odd": chat(tools=[{"type": "function", "function": {"name": ["x"], "parameters": 3}}], tool_choice={"type": "allowed_tools", "tools": 4}),
    "response_format-odd": chat(response_format={"type": "json_schema", "json_schema": 5}),
    "stream_options-odd": chat(stream=True, stream_options=[1]),
    "big-int": chat(n=2 ** 70, seed=-(2 ** 80)),
}


@pytest.mark.parametrize("body", ODD_BODIES.values(), ids=ODD_BODIES.keys())
def test_wrong_types_inside_the_body_leave_a_complete_row(proxy, body):
    response = post(proxy, body)
    assert response is not None and response.status < 500, response.body
    request_id = response.headers["x-study-request-id"]
    row = proxy.log.wait_row(request_id)
    assert_row_complete(proxy.log, row, status=response.status, endpoint="chat/completions", request_id=request_id)


@pytest.mark.parametrize("path, endpoint, body", [
    ("/v1/completions", "completions", {"model": "m", "prompt": [1, [2], {"a": 3}], "metadata": 4}),
    ("/v1/embeddings", "embeddings", {"model": "m", "input": [[1, 2], None, {"x": 1}]}),
    ("/v1/responses", "responses", {"model": "m", "input": [{"type": "message", "content": 5, "role": []}]}),
    ("/v1/responses", "responses", {"model": "m", "input": "x", "tools": [{"type": "function", "parameters": 1}],
                                    "text": {"format": 3}, "tool_choice": []}),
])
def test_wrong_types_on_other_endpoints_leave_a_complete_row(proxy, path, endpoint, body):
    response = post(proxy, body, path=path)
    assert response is not None and response.status < 500, response.body
    request_id = response.headers["x-study-request-id"]
    assert_row_complete(proxy.log, proxy.log.wait_row(request_id), status=response.status, endpoint=endpoint,
                        request_id=request_id)


def test_nothing_was_a_500(proxy):
    rows = proxy.log.rows()
    assert rows
    assert all(r["status_code"] < 500 for r in rows), [dict(r) for r in rows if r["status_code"] >= 500]
    assert "Traceback" not in proxy.output(), proxy.output()
