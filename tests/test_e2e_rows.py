"""Rows that say what happened, end to end through the real openai SDK and the fake upstream:
base64 embeddings logged with their true dimension count, tool calls with their id (streamed
or not) and a `response` without a stray leading newline."""

from __future__ import annotations

import base64
import struct

import pytest
from openai import OpenAI

from conftest import fake_key, loads, provider_env
from fake_answers import TOOL_CALL
from fake_endpoints import embedding_vector

pytestmark = pytest.mark.timeout(60)

OPENAI_KEY = fake_key("sk-test-openai")
TOOL_TEXT = f"[tool call] {TOOL_CALL['function']['name']}({TOOL_CALL['function']['arguments']})"
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


def decode(embedding: str) -> list[float]:
    """A base64 embedding's numbers: little-endian float32."""
    raw = base64.b64decode(embedding)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


@pytest.fixture(scope="module")
def proxy(module_proxy_factory, fake_upstream_server):
    return module_proxy_factory(env=provider_env(fake_upstream_server, openai=OPENAI_KEY))


@pytest.fixture
def client(proxy) -> OpenAI:
    return OpenAI(base_url=proxy.v1, api_key="anything", max_retries=0, timeout=10)


@pytest.mark.parametrize("encoding_format", ["base64", None])  # None: the SDK asks for base64 itself
def test_base64_embeddings_are_logged_with_their_dimension_count(proxy, client, upstream, encoding_format):
    extra = {"encoding_format": encoding_format} if encoding_format else {}
    raw = client.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input=["one", "two"], dimensions=16, **extra
    )
    # Asked for explicitly, base64 comes back as the string; asked for by the SDK, decoded.
    vectors = [d.embedding if encoding_format is None else decode(d.embedding) for d in raw.parse().data]
    assert vectors == [embedding_vector(0, 16), embedding_vector(1, 16)]
    sent = upstream.only()
    assert (sent.json["encoding_format"], sent.json["dimensions"]) == ("base64", 16)
    row = proxy.log.wait_row(raw.headers["x-study-request-id"])
    assert isinstance(loads(row["response_json"])["data"][0]["embedding"], str)  # logged as sent
    assert row["response"] == "[2 embedding(s) of 16 dimensions]"


def test_float_embeddings_too(proxy, client, upstream):
    raw = client.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input="one", dimensions=5, encoding_format="float"
    )
    assert raw.parse().data[0].embedding == embedding_vector(0, 5)
    assert proxy.log.wait_row(raw.headers["x-study-request-id"])["response"] == "[1 embedding(s) of 5 dimensions]"


def test_streamed_tool_call_keeps_its_id_in_response_json(proxy, client, upstream):
    raw = client.chat.completions.with_raw_response.create(
        model="tool-call-stream", messages=[{"role": "user", "content": "Weather in Oslo?"}], tools=TOOLS, stream=True
    )
    chunks = list(raw.parse())
    first = chunks[0].choices[0].delta.tool_calls[0]
    assert (first.id, first.function.name) == (TOOL_CALL["id"], "get_weather")
    row = proxy.log.wait_row(raw.headers["x-study-request-id"])
    assert row["stream"] == 1 and row["status_code"] == 200 and row["error"] is None
    choice = loads(row["response_json"])["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"] == [TOOL_CALL]
    assert row["response"] == TOOL_TEXT
    assert (row["prompt_tokens"], row["total_tokens"]) == (11, 18)


def test_tool_call_without_text_reads_without_a_leading_newline(proxy, client, upstream):
    raw = client.chat.completions.with_raw_response.create(
        model="tool-call-whole", messages=[{"role": "user", "content": "Weather in Oslo?"}], tools=TOOLS
    )
    call = raw.parse().choices[0].message.tool_calls[0]
    assert (call.id, call.function.arguments) == (TOOL_CALL["id"], TOOL_CALL["function"]["arguments"])
    row = proxy.log.wait_row(raw.headers["x-study-request-id"])
    assert row["response"] == TOOL_TEXT
    assert loads(row["response_json"])["choices"][0]["message"]["tool_calls"] == [TOOL_CALL]


def test_a_conversation_with_a_tool_call_reads_the_same_way_in_the_prompt(proxy, client, upstream):
    messages = [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
        {"role": "tool", "tool_call_id": TOOL_CALL["id"], "content": "Sunny, 21 C"},
    ]
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages, tools=TOOLS)
    row = proxy.log.wait_row(raw.headers["x-study-request-id"])
    assert row["prompt"] == f"user: Weather in Oslo?\n\nassistant: {TOOL_TEXT}\n\ntool: Sunny, 21 C"
