"""End to end through the real openai SDK: chat, completions, embeddings and models on the OpenAI provider.

One proxy for the module, configured with an OpenAI key and base URL pointing at the fake upstream.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from conftest import HEX32, ISO_UTC_MS, assert_error_shape, fake_key, loads, provider_env
from fake_answers import USAGE, chat_answer, completion, completion_answer, error
from fake_endpoints import EMBEDDING_TOKENS_PER_INPUT, MODELS, VECTOR

pytestmark = pytest.mark.timeout(60)

OPENAI_KEY = fake_key("sk-test-openai")
CLIENT_KEY = fake_key("sk-test-client")


@pytest.fixture(scope="module")
def proxy(module_proxy_factory, fake_upstream_server):
    return module_proxy_factory(env=provider_env(fake_upstream_server, openai=OPENAI_KEY))


@pytest.fixture
def client(proxy) -> OpenAI:
    return OpenAI(base_url=proxy.v1, api_key=CLIENT_KEY, max_retries=0, timeout=10)


def assert_upstream_auth(recorded) -> None:
    """The operator's key went upstream, the client's never did."""
    assert recorded.headers.get("authorization") == f"Bearer {OPENAI_KEY}"
    assert "api-key" not in recorded.headers
    assert all(CLIENT_KEY not in value for value in recorded.headers.values())
    assert CLIENT_KEY.encode() not in recorded.raw_body


def forwarded(proxy, upstream, raw, path: str):
    """The one request the fake upstream got, checked to be OpenAI's `/v1/<path>` with the operator's
    key, and the row of the call, checked to name the provider `openai`."""
    sent = upstream.only()
    assert sent.path == f"/v1/{path}"
    assert_upstream_auth(sent)
    row = proxy.log.wait_row(raw.headers["x-study-request-id"])
    assert row["provider"] == "openai"
    return sent, row


def test_chat_completion_round_trip_and_every_row_field(proxy, client, upstream):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello there"},
    ]
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=messages,
        metadata={"experiment": "e2e", "run": "1"},
        user="body-user",
        extra_headers={"X-Study-Session": "sess-42", "X-Study-Tags": "exp-1, batch 7", "X-Study-User": "carol"},
    )
    answer = raw.parse()

    # What the client got.
    assert answer.choices[0].message.content == chat_answer("Hello there")
    assert answer.choices[0].message.role == "assistant"
    assert answer.usage.prompt_tokens == USAGE["prompt_tokens"]
    assert answer.usage.completion_tokens == USAGE["completion_tokens"]
    assert answer.usage.total_tokens == USAGE["total_tokens"]
    request_id = raw.headers["x-study-request-id"]
    assert HEX32.match(request_id), request_id
    assert raw.headers["x-study-provider"] == "openai"

    # What the upstream got.
    sent = upstream.only()
    assert sent.method == "POST"
    assert sent.path == "/v1/chat/completions"
    assert_upstream_auth(sent)
    assert sent.json["model"] == "gpt-4o-mini"
    assert sent.json["messages"] == messages
    assert sent.json["user"] == "body-user"
    # Upstream headers pass through to the client.
    assert raw.headers["x-request-id"] == sent.request_id
    assert raw.headers["x-ratelimit-remaining-requests"] == "4999"

    # What the log says.
    row = proxy.log.wait_row(request_id)
    assert ISO_UTC_MS.match(row["created_at"]), row["created_at"]
    assert row["endpoint"] == "chat/completions"
    assert row["provider"] == "openai"
    assert row["model"] == "gpt-4o-mini"
    assert row["upstream_model"] == "gpt-4o-mini"
    assert row["prompt"] == "system: Be brief.\n\nuser: Hello there"
    assert row["response"] == chat_answer("Hello there")
    request_json = loads(row["request_json"])
    assert request_json["model"] == "gpt-4o-mini"
    assert request_json["messages"] == messages
    assert request_json["metadata"] == {"experiment": "e2e", "run": "1"}
    assert loads(row["response_json"]) == completion("chat/completions", "gpt-4o-mini", chat_answer("Hello there"), True)
    assert row["status_code"] == 200
    assert row["error"] is None
    assert row["stream"] == 0
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (11, 7, 18)
    assert 0 < row["latency_ms"] < 10_000
    assert row["attempts"] == 1
    assert row["cache"] is None
    # gpt-4o-mini at OpenAI's list price, as genai-prices has it: $0.15 / $0.60 per million tokens.
    assert row["cost_usd"] == pytest.approx((11 * 0.15 + 7 * 0.60) / 1_000_000)
    assert row["session_id"] == "sess-42"
    assert loads(row["tags"]) == ["exp-1", "batch 7"]
    assert row["user"] == "carol"  # the X-Study-User header wins over the body's `user`
    assert row["client"] is None  # no [clients] configured
    assert loads(row["metadata"]) == {"experiment": "e2e", "run": "1"}
    headers = {k.lower(): v for k, v in loads(row["request_headers"]).items()}
    assert headers["x-study-session"] == "sess-42"
    assert CLIENT_KEY not in row["request_headers"]
    assert "x-study-tags" in headers

    attempts = proxy.log.attempts(request_id)
    assert len(attempts) == 1
    attempt = attempts[0]
    assert attempt["attempt"] == 1
    assert attempt["provider"] == "openai"
    assert attempt["url_path"] == "/v1/chat/completions"
    assert attempt["status_code"] == 200
    assert attempt["error"] is None
    assert 0 < attempt["latency_ms"] <= row["latency_ms"]
    assert ISO_UTC_MS.match(attempt["started_at"]), attempt["started_at"]
    assert attempt["started_at"] >= row["created_at"]


def test_body_user_is_recorded_without_header_and_no_tags_means_null(proxy, client, upstream):
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "who am I"}], user="body-user-2"
    )
    row = proxy.log.wait_row(raw.headers["x-study-request-id"])
    assert row["user"] == "body-user-2"
    assert row["session_id"] is None
    assert row["tags"] in (None, "[]")
    assert row["metadata"] is None


def test_explicit_openai_prefix_sends_the_rest_as_upstream_model(proxy, client, upstream):
    raw = client.chat.completions.with_raw_response.create(
        model="openai/gpt-4o", messages=[{"role": "user", "content": "prefixed"}]
    )
    assert raw.parse().choices[0].message.content == chat_answer("prefixed")
    sent, row = forwarded(proxy, upstream, raw, "chat/completions")
    assert sent.json["model"] == "gpt-4o"
    assert (row["provider"], row["model"], row["upstream_model"]) == ("openai", "openai/gpt-4o", "gpt-4o")


def test_multimodal_content_parts_render_as_text_in_prompt(proxy, client, upstream):
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": [{"type": "text", "text": "Describe zebra stripes"}]}],
    )
    assert raw.parse().choices[0].message.content == chat_answer("Describe zebra stripes")
    row = proxy.log.wait_row(raw.headers["x-study-request-id"])
    assert "Describe zebra stripes" in row["prompt"]
    assert row["prompt"].startswith("user: ")


def test_full_text_search_index_finds_prompt_and_response(proxy, client, upstream):
    word = "quokka" + fake_key("x")[-8:]
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"Tell me about the {word}"}]
    )
    row = proxy.log.wait_row(raw.headers["x-study-request-id"])
    for column in ("prompt", "response"):
        hits = proxy.log.query(
            "SELECT rowid FROM inference_runs_fts WHERE inference_runs_fts MATCH ?", (f"{{{column}}}: {word}",)
        )
        assert [h[0] for h in hits] == [row["id"]], column


def test_async_client_concurrent_calls_each_get_their_own_row(proxy, upstream):
    async def main() -> list:
        async with AsyncOpenAI(base_url=proxy.v1, api_key=CLIENT_KEY, max_retries=0, timeout=10) as aclient:
            calls = [
                aclient.chat.completions.with_raw_response.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": f"question {i}"}]
                )
                for i in range(6)
            ]
            return await asyncio.gather(*calls)

    raws = asyncio.run(main())
    ids = [r.headers["x-study-request-id"] for r in raws]
    assert len(set(ids)) == 6
    for i, raw in enumerate(raws):
        assert raw.parse().choices[0].message.content == chat_answer(f"question {i}")
        row = proxy.log.wait_row(ids[i])
        assert row["prompt"] == f"user: question {i}"
        assert row["response"] == chat_answer(f"question {i}")
        assert row["status_code"] == 200
    assert len(upstream.requests) == 6


def test_upstream_400_passes_through_unchanged_and_is_logged(proxy, client, upstream):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.with_raw_response.create(
            model="fail-400-model", messages=[{"role": "user", "content": "bad"}]
        )
    err = caught.value
    assert err.status_code == 400
    assert err.body == {
        "message": "Fake upstream rejects model fail-400-model.",
        "type": "invalid_request_error",
        "param": "model",
        "code": "fake_bad_request",
    }
    request_id = err.response.headers["x-study-request-id"]
    assert err.response.headers["x-study-provider"] == "openai"
    assert err.response.headers["x-request-id"] == upstream.only().request_id
    row = proxy.log.wait_row(request_id)
    assert row["status_code"] == 400
    assert row["error"] == "Fake upstream rejects model fail-400-model."
    assert row["provider"] == "openai"
    assert row["attempts"] == 1  # a 400 is never retried
    assert loads(row["response_json"])["error"]["code"] == "fake_bad_request"
    assert row["prompt_tokens"] is None and row["total_tokens"] is None
    attempts = proxy.log.attempts(request_id)
    assert [(a["attempt"], a["status_code"]) for a in attempts] == [(1, 400)]


def test_upstream_error_body_bytes_are_unchanged(proxy, upstream):
    response = httpx.post(proxy.v1 + "/chat/completions", timeout=10, headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                          json={"model": "fail-400-raw", "messages": [{"role": "user", "content": "raw"}]})
    expected = error(400, "Fake upstream rejects model fail-400-raw.", "invalid_request_error", "model", "fake_bad_request")
    assert response.status_code == 400
    assert response.content == expected.body
    assert response.headers["content-type"].startswith("application/json")


def test_upstream_500_passes_through_and_is_logged(proxy, client, upstream):
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="fail-500-model", messages=[{"role": "user", "content": "boom"}])
    err = caught.value
    assert err.status_code == 500
    assert err.body["message"] == "Fake upstream had an internal error."
    assert err.body["type"] == "server_error"
    request_id = err.response.headers["x-study-request-id"]
    row = proxy.log.wait_row(request_id)
    assert row["status_code"] == 500
    assert row["error"] == "Fake upstream had an internal error."
    assert row["provider"] == "openai"
    attempts = proxy.log.attempts(request_id)
    assert row["attempts"] == len(attempts) == len(upstream.requests) >= 1
    assert all(a["status_code"] == 500 for a in attempts)
    assert [a["attempt"] for a in attempts] == list(range(1, len(attempts) + 1))


def test_upstream_429_passes_through_with_retry_after(proxy, client, upstream):
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="fail-429-model", messages=[{"role": "user", "content": "slow down"}])
    err = caught.value
    assert err.status_code == 429
    assert err.body["code"] == "rate_limit_exceeded"
    assert err.response.headers["retry-after"] == "1"
    assert err.response.headers["x-ratelimit-remaining-requests"] == "0"
    row = proxy.log.wait_row(err.response.headers["x-study-request-id"])
    assert row["status_code"] == 429
    assert row["error"] == "Fake upstream: rate limit reached."
    assert row["attempts"] == len(upstream.requests) >= 1


def test_log_meta_header_keeps_texts_out_of_the_row(proxy, client, upstream):
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "private words"}],
        extra_headers={"X-Study-Log": "meta"},
    )
    assert raw.parse().choices[0].message.content == chat_answer("private words")
    row = proxy.log.wait_row(raw.headers["x-study-request-id"])
    assert (row["prompt"], row["response"], row["request_json"], row["response_json"]) == (None, None, None, None)
    assert (row["prompt_tokens"], row["total_tokens"], row["status_code"]) == (11, 18, 200)
    assert row["provider"] == "openai" and row["model"] == "gpt-4o-mini"


def test_legacy_completions(proxy, client, upstream):
    raw = client.completions.with_raw_response.create(model="gpt-3.5-turbo-instruct", prompt="Say this is a test")
    answer = raw.parse()
    assert answer.choices[0].text == completion_answer("Say this is a test")
    sent, row = forwarded(proxy, upstream, raw, "completions")
    assert sent.json["prompt"] == "Say this is a test"
    assert sent.json["model"] == "gpt-3.5-turbo-instruct"
    assert row["endpoint"] == "completions"
    assert row["prompt"] == "Say this is a test"
    assert row["response"] == completion_answer("Say this is a test")
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (11, 7, 18)
    assert row["stream"] == 0 and row["status_code"] == 200 and row["error"] is None
    assert [a["url_path"] for a in proxy.log.attempts(row["request_id"])] == ["/v1/completions"]


def test_embeddings_single_input(proxy, client, upstream):
    raw = client.embeddings.with_raw_response.create(model="text-embedding-3-small", input="The quick brown fox")
    result = raw.parse()
    assert len(result.data) == 1
    assert result.data[0].embedding == VECTOR
    sent, row = forwarded(proxy, upstream, raw, "embeddings")
    assert sent.json["input"] == "The quick brown fox"
    assert sent.json["model"] == "text-embedding-3-small"
    assert row["endpoint"] == "embeddings"
    assert row["model"] == row["upstream_model"] == "text-embedding-3-small"
    assert row["prompt"] == "The quick brown fox"
    assert row["prompt_tokens"] == row["total_tokens"] == EMBEDDING_TOKENS_PER_INPUT
    assert row["completion_tokens"] is None
    assert row["status_code"] == 200 and row["error"] is None and row["stream"] == 0
    assert loads(row["response_json"])["object"] == "list"


def test_embeddings_list_input(proxy, client, upstream):
    raw = client.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input=["first text", "second text"], encoding_format="float"
    )
    result = raw.parse()
    assert [d.embedding for d in result.data] == [VECTOR, [VECTOR[0] + 1, *VECTOR[1:]]]
    row = proxy.log.wait_row(raw.headers["x-study-request-id"])
    assert "first text" in row["prompt"] and "second text" in row["prompt"]
    assert row["prompt_tokens"] == 2 * EMBEDDING_TOKENS_PER_INPUT


def test_models_list(proxy, client, upstream):
    ids = [m.id for m in client.models.list()]
    assert "openai/gpt-4o-mini" in ids  # OPENAI_MODEL, prefixed by its provider
    assert {f"openai/{m}" for m in MODELS} <= set(ids)  # the upstream's own list, prefixed
    assert "mock/echo" in ids
    assert len(ids) == len(set(ids))
    assert not any(i.startswith(("azure/", "hyperbolic/")) for i in ids)  # not configured
    # At most the upstream's list was asked for (the proxy keeps it a while), with the operator's key.
    assert [(r.method, r.path) for r in upstream.requests] in ([], [("GET", "/v1/models")])
    assert all(r.headers.get("authorization") == f"Bearer {OPENAI_KEY}" for r in upstream.requests)


def test_healthz(proxy):
    response = httpx.get(proxy.url + "/healthz", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert isinstance(response.json(), dict)


def test_unknown_model_name_without_prefix_goes_to_default_provider(proxy, client, upstream):
    raw = client.chat.completions.with_raw_response.create(
        model="some-new-model", messages=[{"role": "user", "content": "default?"}]
    )
    assert raw.headers["x-study-provider"] == "openai"
    assert upstream.only().json["model"] == "some-new-model"


def test_error_answers_made_by_the_proxy_have_openai_shape(proxy):
    response = httpx.post(
        proxy.v1 + "/chat/completions",
        json={"model": "gpt-4o-mini"},
        headers={"Authorization": f"Bearer {CLIENT_KEY}"},
        timeout=5,
    )
    assert response.status_code == 400
    error = assert_error_shape(response.json())
    assert error["param"] == "messages"
    row = proxy.log.wait_row(response.headers["x-study-request-id"])
    assert row["status_code"] == 400 and row["attempts"] == 0
    assert json.loads(row["request_json"]) == {"model": "gpt-4o-mini"}
