"""Streaming end to end: SSE pass-through, usage handling, Azure and Hyperbolic quirks, failures, disconnects."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest
from openai import AsyncOpenAI, AzureOpenAI, OpenAI

from conftest import fake_key, loads, provider_env
from fake_answers import USAGE, chat_answer, completion_answer, stream_words
from fake_failures import CUT_AFTER, SLOW_CHUNKS, slow_answer

pytestmark = pytest.mark.timeout(60)

OPENAI_KEY = fake_key("sk-test-openai")
AZURE_KEY = fake_key("azure-test")
HYPERBOLIC_KEY = fake_key("hyp-test")
CLIENT_KEY = fake_key("sk-test-client")


@pytest.fixture(scope="module")
def proxy(module_proxy_factory, fake_upstream_server):
    env = provider_env(fake_upstream_server, openai=OPENAI_KEY, azure=AZURE_KEY, hyperbolic=HYPERBOLIC_KEY)
    return module_proxy_factory(env=env)


@pytest.fixture
def client(proxy) -> OpenAI:
    return OpenAI(base_url=proxy.v1, api_key=CLIENT_KEY, max_retries=0, timeout=10)


def collect(stream) -> tuple[str, list]:
    chunks = list(stream)
    text = "".join((c.choices[0].delta.content or "") for c in chunks if c.choices)
    return text, chunks


def sse_events(body: str) -> list[str]:
    """The `data:` payloads of an SSE body, in order."""
    events = []
    for block in body.split("\n\n"):
        lines = [line for line in block.splitlines() if line.startswith("data:")]
        if lines:
            events.append("\n".join(line[5:].strip() for line in lines))
    return events


def test_stream_without_include_usage_hides_usage_but_logs_tokens(proxy, client, upstream):
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Stream please"}], stream=True
    )
    request_id = raw.headers["x-study-request-id"]
    assert raw.headers["x-study-provider"] == "openai"
    assert raw.headers["content-type"].startswith("text/event-stream")
    text, chunks = collect(raw.parse())
    assert text == chat_answer("Stream please")
    # The client did not ask for usage: no usage chunk, no empty-choices chunk.
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)

    sent = upstream.only()
    assert sent.json["stream"] is True
    assert sent.json["stream_options"] == {"include_usage": True}  # added by the proxy
    assert sent.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert raw.headers["x-request-id"] == sent.request_id

    row = proxy.log.wait_row(request_id)
    assert row["stream"] == 1
    assert row["status_code"] == 200
    assert row["error"] is None
    assert row["provider"] == "openai"
    assert row["response"] == chat_answer("Stream please")
    assert row["prompt"] == "user: Stream please"
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (11, 7, 18)
    assert row["ttft_ms"] is not None and 0 < row["ttft_ms"] <= row["latency_ms"]
    assert row["attempts"] == 1
    assert isinstance(loads(row["response_json"]), dict)
    assert chat_answer("Stream please") in row["response_json"]
    # The client's own body is logged, not the one with the proxy's stream_options.
    assert "stream_options" not in loads(row["request_json"])
    assert "study_notes" not in (loads(row["metadata"]) if row["metadata"] else {})


def test_stream_with_include_usage_gets_exactly_one_usage_chunk(proxy, client, upstream):
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Count me"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, chunks = collect(raw.parse())
    assert text == chat_answer("Count me")
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1
    assert usage_chunks[0] is chunks[-1]
    assert usage_chunks[0].choices == []
    assert usage_chunks[0].usage.total_tokens == USAGE["total_tokens"]
    assert upstream.only().json["stream_options"] == {"include_usage": True}
    row = proxy.log.wait_row(raw.headers["x-study-request-id"])
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (11, 7, 18)
    assert row["response"] == chat_answer("Count me")
    assert loads(row["request_json"])["stream_options"] == {"include_usage": True}


def test_raw_sse_format_is_forwarded(proxy, upstream):
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "raw sse"}], "stream": True}
    response = httpx.post(proxy.v1 + "/chat/completions", json=body,
                          headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    pieces = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    assert [p for p in pieces if p] == stream_words(chat_answer("raw sse"))
    assert all(c.get("usage") is None for c in chunks)
    assert response.text.endswith("data: [DONE]\n\n")


def test_events_are_forwarded_as_they_arrive(proxy, upstream):
    """50 chunks 20 ms apart: the first must reach the client long before the last."""
    body = {"model": "slow-stream-1", "messages": [{"role": "user", "content": "slowly"}], "stream": True}
    start = time.monotonic()
    arrivals = []
    with httpx.stream("POST", proxy.v1 + "/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=10) as response:
        request_id = response.headers["x-study-request-id"]
        for line in response.iter_lines():
            if line.startswith("data:") and "content" in line:
                arrivals.append(time.monotonic() - start)
    total = time.monotonic() - start
    assert len(arrivals) >= SLOW_CHUNKS
    assert total >= SLOW_CHUNKS * 0.02 * 0.8
    assert arrivals[0] < total / 3, (arrivals[0], total)
    row = proxy.log.wait_row(request_id)
    assert row["response"] == slow_answer()
    assert row["ttft_ms"] < row["latency_ms"] / 3


def test_client_disconnect_mid_stream_is_logged_with_partial_text(proxy, upstream):
    body = {"model": "slow-stream-2", "messages": [{"role": "user", "content": "I will leave"}], "stream": True}
    with httpx.Client(timeout=10) as http:
        with http.stream("POST", proxy.v1 + "/chat/completions", json=body,
                         headers={"Authorization": f"Bearer {CLIENT_KEY}"}) as response:
            request_id = response.headers["x-study-request-id"]
            seen = 0
            for line in response.iter_lines():
                if line.startswith("data:") and '"content"' in line:
                    seen += 1
                if seen >= 5:
                    break
        # Leaving the `with` closes the connection with the stream unfinished.
    row = proxy.log.wait_row(request_id, timeout=10)
    assert row["error"] == "client_disconnected"
    assert row["stream"] == 1
    assert row["provider"] == "openai"
    assert row["response"], "the partial text should be logged"
    full = slow_answer()
    assert full.startswith(row["response"]) and len(row["response"]) < len(full)
    assert row["response"].startswith("w0 w1 w2 w3")
    # The proxy stopped reading upstream too (no tokens spent on an answer nobody reads).
    sent = upstream.only()
    assert not upstream.wait_completed(sent, timeout=SLOW_CHUNKS * 0.02 + 0.3)


def test_upstream_failure_mid_stream_gives_error_event_and_row(proxy, client, upstream):
    raw = client.chat.completions.with_raw_response.create(
        model="cut-stream-1", messages=[{"role": "user", "content": "cut me off"}], stream=True
    )
    stream = raw.parse()
    pieces = []
    with pytest.raises(openai.APIError):
        for chunk in stream:
            if chunk.choices:
                pieces.append(chunk.choices[0].delta.content or "")
    # CUT_AFTER events reached the proxy: the role chunk, then words.
    partial = "".join(stream_words(chat_answer("cut me off"))[: CUT_AFTER - 1])
    assert "".join(pieces) == partial
    row = proxy.log.wait_row(raw.headers["x-study-request-id"])
    assert row["stream"] == 1
    assert row["error"], "a cut stream must be logged as an error"
    assert row["error"] != "client_disconnected"
    assert row["status_code"] == 200  # the status the client got; the error column says what went wrong
    assert row["response"] == partial


def test_raw_error_event_after_cut(proxy, upstream):
    body = {"model": "cut-stream-2", "messages": [{"role": "user", "content": "cut raw"}], "stream": True}
    response = httpx.post(proxy.v1 + "/chat/completions", json=body,
                          headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=10)
    assert response.status_code == 200
    events = sse_events(response.text)
    last = json.loads(events[-1])
    assert set(last) == {"error"}
    assert isinstance(last["error"]["message"], str) and last["error"]["message"]


def test_stream_upstream_error_before_first_byte_keeps_status(proxy, client, upstream):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="fail-400-stream", messages=[{"role": "user", "content": "x"}], stream=True)
    assert caught.value.status_code == 400
    assert caught.value.body["code"] == "fake_bad_request"
    row = proxy.log.wait_row(caught.value.response.headers["x-study-request-id"])
    assert row["status_code"] == 400
    assert row["stream"] == 1
    assert row["error"] == "Fake upstream rejects model fail-400-stream."


def test_hyperbolic_stream_without_usage_leaves_tokens_null_with_a_note(proxy, client, upstream):
    raw = client.chat.completions.with_raw_response.create(
        model="hyperbolic/meta-llama/no-usage-Llama-3.3-70B", messages=[{"role": "user", "content": "no usage"}],
        stream=True,
    )
    text, chunks = collect(raw.parse())
    assert text == chat_answer("no usage")
    sent = upstream.only()
    assert sent.path == "/hyperbolic/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {HYPERBOLIC_KEY}"
    assert sent.json["model"] == "meta-llama/no-usage-Llama-3.3-70B"
    row = proxy.log.wait_row(raw.headers["x-study-request-id"])
    assert row["provider"] == "hyperbolic"
    assert row["upstream_model"] == "meta-llama/no-usage-Llama-3.3-70B"
    assert row["response"] == chat_answer("no usage")
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (None, None, None)
    assert row["error"] is None and row["status_code"] == 200
    notes = loads(row["metadata"])["study_notes"]
    assert isinstance(notes, list) and all(isinstance(n, str) for n in notes)
    assert any("usage" in n.lower() for n in notes)


def test_azure_stream_with_filter_chunk(proxy, upstream):
    azure = AzureOpenAI(azure_endpoint=proxy.url, api_version="2024-10-21", api_key=CLIENT_KEY, max_retries=0, timeout=10)
    raw = azure.chat.completions.with_raw_response.create(
        model="gpt-4o-dep", messages=[{"role": "user", "content": "azure stream"}], stream=True
    )
    text, chunks = collect(raw.parse())
    assert text == chat_answer("azure stream")
    assert all(c.usage is None for c in chunks)
    sent = upstream.only()
    assert sent.path == "/openai/deployments/gpt-4o-dep/chat/completions"
    assert sent.query_params["api-version"] == "2024-10-21"
    assert sent.headers["api-key"] == AZURE_KEY
    assert "authorization" not in sent.headers
    assert sent.json["stream_options"] == {"include_usage": True}
    row = proxy.log.wait_row(raw.headers["x-study-request-id"])
    assert row["provider"] == "azure"
    assert row["upstream_model"] == "gpt-4o-dep"
    assert row["response"] == chat_answer("azure stream")
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (11, 7, 18)
    assert row["stream"] == 1 and row["error"] is None


def test_streamed_completions(proxy, client, upstream):
    raw = client.completions.with_raw_response.create(model="gpt-3.5-turbo-instruct", prompt="Once upon", stream=True)
    chunks = list(raw.parse())
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == completion_answer("Once upon")
    assert all(getattr(c, "usage", None) is None for c in chunks)
    row = proxy.log.wait_row(raw.headers["x-study-request-id"])
    assert row["endpoint"] == "completions"
    assert row["stream"] == 1
    assert row["response"] == completion_answer("Once upon")
    assert row["total_tokens"] == USAGE["total_tokens"]


def test_mock_stream(proxy, client, upstream):
    stream = client.chat.completions.create(
        model="mock/echo", messages=[{"role": "user", "content": "hello mock stream"}], stream=True,
        stream_options={"include_usage": True},
    )
    text, chunks = collect(stream)
    assert text == "Mock answer to: hello mock stream"
    words = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert words == stream_words("Mock answer to: hello mock stream")  # word by word
    assert chunks[-1].usage.prompt_tokens == 3
    assert chunks[-1].usage.completion_tokens == 6
    assert upstream.requests == []


def test_async_client_streams(proxy, upstream):
    async def main() -> list[tuple[str, str]]:
        async with AsyncOpenAI(base_url=proxy.v1, api_key=CLIENT_KEY, max_retries=0, timeout=10) as aclient:

            async def one(i: int) -> tuple[str, str]:
                raw = await aclient.chat.completions.with_raw_response.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": f"async {i}"}], stream=True
                )
                text = ""
                async for chunk in raw.parse():  # the legacy raw response parses synchronously
                    assert chunk.usage is None
                    if chunk.choices:
                        text += chunk.choices[0].delta.content or ""
                return raw.headers["x-study-request-id"], text

            return await asyncio.gather(*(one(i) for i in range(4)))

    for i, (request_id, text) in enumerate(asyncio.run(main())):
        assert text == chat_answer(f"async {i}")
        row = proxy.log.wait_row(request_id)
        assert row["response"] == text
        assert row["stream"] == 1 and row["total_tokens"] == USAGE["total_tokens"]
