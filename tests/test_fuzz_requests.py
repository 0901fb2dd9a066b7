"""Property-based fuzzing of the whole request path against a real server (Hypothesis).

Bodies (arbitrary JSON, deep nesting, a valid request with any field replaced by any value,
bytes that are not JSON), `X-Study-*` headers with any bytes HTTP allows, Content-Type,
Content-Encoding and the framing (Content-Length, chunked, a body cut short by the client),
on chat, completions, embeddings and the Responses API's calls. For every request: no 5xx, an error in
OpenAI's shape, and one complete row, whose `request_id` is the answer's
`X-Study-Request-Id` (found by an `X-Fuzz-Id` header, which the row's headers keep, so that a
request the client abandoned is found too).

Bounded and deterministic: a fixed number of examples (FUZZ_EXAMPLES, 200 by default),
derandomised, with a deadline per example; no example database is written.
"""

from __future__ import annotations

import gzip
import json
import os
import time
import uuid
import zlib
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from complete_rows import assert_row_complete
from conftest import assert_error_shape
from rawhttp import build, connect, read_response

pytestmark = pytest.mark.timeout(600)

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=timedelta(seconds=5),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
BODY_TIMEOUT = 0.5

ENDPOINTS = {
    "chat/completions": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
    "completions": {"model": "gpt-3.5-turbo-instruct", "prompt": "hi"},
    "embeddings": {"model": "text-embedding-3-small", "input": "hi"},
    "responses": {"model": "gpt-4o-mini", "input": "hi"},
    "responses/compact": {"model": "gpt-4o-mini", "input": "hi"},
    "responses/input_tokens": {"model": "gpt-4o-mini", "input": "hi"},
}
#: The fields the proxy (or its mock) reads, per endpoint, as paths into the body; the
#: required ones once, so that most requests stay valid and reach the mock and the row.
FIELDS = {
    "chat/completions": [
        ("model",), ("messages",), ("messages", 0), ("messages", 0, "role"), ("messages", 0, "content"),
        ("messages", 0, "tool_calls"), ("messages", 0, "name"), ("stream",), ("stream_options",),
        ("stream_options", "include_usage"), ("tools",), ("tool_choice",), ("response_format",),
        ("metadata",), ("user",), ("n",), ("max_tokens",), ("max_completion_tokens",), ("seed",), ("stop",),
        ("logprobs",), ("top_logprobs",),
    ],
    "completions": [("model",), ("prompt",), ("stream",), ("stream_options",), ("metadata",), ("user",), ("echo",),
                    ("max_tokens",), ("stop",), ("logprobs",)],
    "embeddings": [("model",), ("input",), ("encoding_format",), ("dimensions",), ("user",)],
    "responses": [
        ("model",), ("input",), ("input", 0), ("instructions",), ("previous_response_id",), ("tools",),
        ("tool_choice",), ("metadata",), ("text",), ("text", "format"), ("stream",), ("store",), ("prompt",),
        ("reasoning",), ("max_output_tokens",), ("background",), ("conversation",),
    ],
}
FIELDS["responses/compact"] = FIELDS["responses/input_tokens"] = FIELDS["responses"]

#: How many of the first FIELDS of each endpoint its request cannot do without.
REQUIRED = {"chat/completions": 4, "completions": 2, "embeddings": 2, "responses": 3, "responses/compact": 3,
            "responses/input_tokens": 3}

scalars = (
    st.none() | st.booleans() | st.integers() | st.integers(min_value=2**63, max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30)
)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@st.composite
def deeply_nested(draw: st.DrawFn) -> Any:
    value = draw(scalars)
    for _ in range(draw(st.sampled_from([1, 50, 127, 129, 200, 260, 400]))):
        value = [value] if draw(st.booleans()) else {"k": value}
    return value


SCHEMA_KEYS = ["type", "properties", "items", "enum", "const", "pattern", "format", "minLength", "maxLength",
               "minItems", "maxItems", "minimum", "maximum", "required", "anyOf", "oneOf", "allOf", "$ref", "$defs",
               "additionalProperties", "prefixItems"]
schema_types = st.sampled_from(["object", "array", "string", "integer", "number", "boolean", "null"])
schemas = st.recursive(
    st.dictionaries(st.sampled_from(SCHEMA_KEYS), schema_types | scalars | st.lists(schema_types), max_size=5),
    lambda inner: st.dictionaries(
        st.sampled_from(SCHEMA_KEYS), inner | st.dictionaries(st.text(max_size=5), inner, max_size=3) | st.lists(inner, max_size=3),
        max_size=5,
    ),
    max_leaves=12,
)
#: What the mock reads as a JSON schema, with any schema inside: tools and answer formats of both APIs.
schema_shaped = schemas.flatmap(lambda schema: st.sampled_from([
    [{"type": "function", "function": {"name": "f", "parameters": schema}}],
    [{"type": "function", "name": "f", "parameters": schema}],
    {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
    {"type": "json_schema", "name": "s", "schema": schema},
    {"format": {"type": "json_schema", "name": "s", "schema": schema}},
]))

any_value = json_values | deeply_nested() | schema_shaped | schema_shaped | st.sampled_from([
    {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}},
    [{"type": "function", "function": 5}], {"type": "json_schema", "json_schema": {"schema": 5}},
    {"type": "allowed_tools", "tools": [{"function": ["x"]}, {"name": {}}]}, [{"type": "message", "content": [5]}],
    [{"type": "function_call_output", "output": [1]}], "resp_" + "0" * 24, [[1, 2], [3]],
])


def _set(body: Any, path: tuple, value: Any) -> Any:
    """`body` with the value at `path` replaced (created where the path ends in a dict)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(body, dict) and isinstance(head, str):
        return {**body, head: _set(body.get(head), rest, value)}
    if isinstance(body, list) and isinstance(head, int) and body:
        return [_set(body[0], rest, value), *body[1:]]
    return body


@st.composite
def bodies(draw: st.DrawFn, endpoint: str) -> bytes:
    kind = draw(st.sampled_from(["fields"] * 6 + ["any", "bytes", "empty"]))
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    if kind == "empty":
        return b""
    if kind == "any":
        value = draw(any_value)
    else:
        value = ENDPOINTS[endpoint]
        paths = FIELDS[endpoint][REQUIRED[endpoint]:] * 3 + FIELDS[endpoint][:REQUIRED[endpoint]]
        for path in draw(st.lists(st.sampled_from(paths), max_size=3, unique=True)):
            value = _set(value, path, draw(any_value))
        if draw(st.booleans()):
            value = {**value, draw(st.text(max_size=8)): draw(json_values)}
    return json.dumps(value).encode()


#: Header bytes HTTP allows in a value: visible ASCII, obs-text, and inner spaces and tabs.
header_bytes = st.binary(min_size=0, max_size=40).map(
    lambda b: bytes(c for c in b if c >= 0x21 and c != 0x7F or c in (0x20, 0x09)).strip(b" \t")
)


def mostly(*values: bytes) -> st.SearchStrategy[bytes]:
    """One of `values` four times in five, else any bytes a header may hold."""
    return st.integers(0, 4).flatmap(lambda i: header_bytes if i == 0 else st.sampled_from(values))


STUDY_HEADERS = {
    b"X-Study-Tags": mostly(b"a, b,,c", b"caf\xe9", b","),
    b"X-Study-Session": header_bytes,
    b"X-Study-User": header_bytes,
    b"X-Study-Cache": mostly(b"on", b"off", b"refresh", b"ON"),
    b"X-Study-Retries": mostly(b"0", b"2", b"10", b"11", b" 3 ", b"\xb2", b"-1", b"9" * 40),
    b"X-Study-Log": mostly(b"meta", b"full"),
    b"X-Study-Dedup": mostly(b"off", b"on"),
    b"X-Study-Metadata": mostly(
        b'{"a": 1}', b'{"n": 123456789012345678901234567890}', b'{"f": 1e400}', b"{}", b"[1]",
        b'{"a": ' * 200 + b"1" + b"}" * 200,
    ),
    b"X-Study-Preprocess": mostly(b"whitespace", b"truncate=3"),
}
#: Mostly what clients send, so that most requests get past the checks into routing, the mock and the row.
CONTENT_TYPES = [b"application/json"] * 6 + [
    None, b"application/json; charset=utf-8", b"TEXT/JSON", b"text/plain", b"multipart/form-data; boundary=x",
    b"application/x-www-form-urlencoded", b"", b"\xff/\xfe",
]
ENCODINGS = [None] * 8 + [b"identity", b"gzip", b"deflate", b"gzip-bad", b"br", b"gzip, identity", b"\xe9"]
FRAMINGS = ["length"] * 4 + ["chunked", "cut"]


def encode(body: bytes, encoding: bytes | None) -> tuple[bytes, bytes | None]:
    if encoding in (b"gzip", b"gzip, identity"):
        return gzip.compress(body), encoding
    if encoding == b"deflate":
        return zlib.compress(body), encoding
    if encoding == b"gzip-bad":
        return body, b"gzip"
    return body, encoding


@pytest.fixture(scope="module")
def proxy(module_proxy_factory):
    return module_proxy_factory(config=f"[server]\nmax_body_bytes = 65536\nbody_timeout = {BODY_TIMEOUT}\n")


def find_row(proxy, fuzz_id: str, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while True:
        rows = proxy.log.rows("request_headers LIKE ?", (f'%"x-fuzz-id":"{fuzz_id}"%',))
        if rows or time.monotonic() > deadline:
            return rows
        time.sleep(0.02)


@FUZZ
@given(data=st.data())
def test_any_request_gets_a_client_answer_and_a_complete_row(proxy, data):
    """Anything at all: body, headers, content type, encoding, framing."""
    endpoint = data.draw(st.sampled_from(sorted(ENDPOINTS)), label="endpoint")
    body = data.draw(bodies(endpoint), label="body")
    headers = [(name, data.draw(value, label=name.decode())) for name, value in STUDY_HEADERS.items()
               if data.draw(st.integers(0, 3)) == 0]
    content_type = data.draw(st.sampled_from(CONTENT_TYPES), label="content-type")
    sent, encoding = encode(body, data.draw(st.sampled_from(ENCODINGS), label="content-encoding"))
    if content_type is not None:
        headers.append((b"Content-Type", content_type))
    if encoding is not None:
        headers.append((b"Content-Encoding", encoding))
    check_request(proxy, endpoint, headers, sent, data.draw(st.sampled_from(FRAMINGS), label="framing"))


@FUZZ
@given(data=st.data())
def test_any_value_in_the_fields_the_proxy_reads_gets_an_answer_and_a_complete_row(proxy, data):
    """A well-framed JSON request with wrong types where the proxy, the mock and the row's
    rendering look: most of these reach the mock and are answered."""
    endpoint = data.draw(st.sampled_from(sorted(ENDPOINTS)), label="endpoint")
    value = ENDPOINTS[endpoint]
    optional = FIELDS[endpoint][REQUIRED[endpoint]:]
    for path in data.draw(st.lists(st.sampled_from(optional), min_size=1, max_size=3, unique=True), label="fields"):
        value = _set(value, path, data.draw(any_value, label=str(path)))
    check_request(proxy, endpoint, [(b"Content-Type", b"application/json")], json.dumps(value).encode(), "length")


def check_request(proxy, endpoint: str, headers: list[tuple[bytes, bytes]], sent: bytes, framing: str) -> None:
    """Send one request (`cut`: announce 10 bytes more than sent, then leave) and check its
    answer and its row."""
    fuzz_id = uuid.uuid4().hex
    headers = [*headers, (b"X-Fuzz-Id", fuzz_id.encode()), (b"Connection", b"close")]
    with connect(proxy.port, timeout=10) as sock:
        if framing == "cut":
            headers.append((b"Content-Length", b"%d" % (len(sent) + 10)))
            sock.sendall(build("POST", f"/v1/{endpoint}", f"127.0.0.1:{proxy.port}", headers, framing="none") + sent)
            time.sleep(0.05)
            response = None
        else:
            sock.sendall(build("POST", f"/v1/{endpoint}", f"127.0.0.1:{proxy.port}", headers, sent, framing))
            response = read_response(sock, timeout=10)

    if response is not None:
        assert response.status < 500, (response.status, response.body[:500])
        if response.status >= 400:
            assert_error_shape(response.json())
    event(f"status {response.status if response else 'none'}")
    rows = find_row(proxy, fuzz_id)
    assert len(rows) == 1, f"{len(rows)} rows for one request (answer: {response})"
    row = rows[0]
    if response is None:
        # The client left before its body was complete: a 499 row, or the answer it did not
        # wait for when the proxy refused the request from its headers alone.
        status = row["status_code"]
        assert status == 499 or 400 <= status < 500, dict(row)
    else:
        status = response.status
        assert response.headers.get("x-study-request-id") == row["request_id"]
    assert_row_complete(proxy.log, row, status=status, endpoint=endpoint, body_sent=False)


def test_the_fuzzed_server_logged_no_traceback(proxy):
    assert "Traceback" not in proxy.output(), proxy.output()[-5000:]
