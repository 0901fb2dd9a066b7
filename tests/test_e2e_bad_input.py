"""Bad input end to end: every fault gets a 4xx in OpenAI's error shape and a row; never a 500.

The proxy here has no provider key (everything goes to the built-in mock) and a small body limit.
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from openai import OpenAI

from conftest import HEX32, assert_error_shape, fake_key

pytestmark = pytest.mark.timeout(60)

LIMIT = 4096
CLIENT_KEY = fake_key("sk-test-client")
CHAT = "/chat/completions"
GOOD_MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def proxy(module_proxy_factory):
    return module_proxy_factory(config=f"[server]\nmax_body_bytes = {LIMIT}\n")


@pytest.fixture(scope="module")
def http(proxy):
    with httpx.Client(base_url=proxy.v1, timeout=10, headers={"Authorization": f"Bearer {CLIENT_KEY}"}) as client:
        yield client


def post(http: httpx.Client, path: str, content: bytes | str, content_type: str | None = "application/json", **kw):
    headers = {"content-type": content_type} if content_type else {}
    return http.post(path, content=content, headers=headers, **kw)


def check(proxy, response: httpx.Response, status: int, *, param: str | None = ..., code: str | None = ...,
          endpoint: str = "chat/completions"):
    """The answer's status and error shape, and the row it left."""
    assert response.status_code == status, response.text
    error = assert_error_shape(response.json())
    if param is not ...:
        assert error["param"] == param, error
    if code is not ...:
        assert error["code"] == code, error
    request_id = response.headers.get("x-study-request-id", "")
    assert HEX32.match(request_id), dict(response.headers)
    row = proxy.log.wait_row(request_id)
    assert row["status_code"] == status
    assert row["endpoint"] == endpoint
    assert row["error"], "a rejected request's row must say why"
    assert row["attempts"] == 0
    assert row["prompt_tokens"] is None
    assert row["stream"] in (0, 1)
    assert proxy.log.attempts(request_id) == []
    return error, row


def test_the_mock_answers_when_no_key_is_configured(proxy, http):
    response = http.post(CHAT, json={"model": "gpt-4o-mini", "messages": GOOD_MESSAGES})
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "Mock answer to: hi"
    assert response.headers["x-study-provider"] == "mock"
    row = proxy.log.wait_row(response.headers["x-study-request-id"])
    assert (row["provider"], row["model"], row["status_code"]) == ("mock", "gpt-4o-mini", 200)


def test_invalid_json(proxy, http):
    text = '{"model": "gpt-4o-mini", "messages": ['
    _, row = check(proxy, post(http, CHAT, text), 400)
    assert row["provider"] is None
    assert row["request_json"] == text  # the client's body, as sent


def test_empty_body(proxy, http):
    _, row = check(proxy, post(http, CHAT, b""), 400)
    assert row["provider"] is None


@pytest.mark.parametrize("body", ["[1, 2]", '"just a string"', "null", "42", "true"])
def test_body_not_an_object(proxy, http, body):
    _, row = check(proxy, post(http, CHAT, body), 400)
    assert row["provider"] is None


@pytest.mark.parametrize(
    "body",
    [
        {"messages": GOOD_MESSAGES},
        {"model": "", "messages": GOOD_MESSAGES},
        {"model": None, "messages": GOOD_MESSAGES},
        {"model": 42, "messages": GOOD_MESSAGES},
        {"model": ["gpt-4o"], "messages": GOOD_MESSAGES},
        {"model": {"name": "gpt-4o"}, "messages": GOOD_MESSAGES},
    ],
    ids=["missing", "empty", "null", "number", "list", "object"],
)
def test_bad_model(proxy, http, body):
    _, row = check(proxy, http.post(CHAT, json=body), 400, param="model")
    assert row["provider"] is None
    assert json.loads(row["request_json"]) == body


@pytest.mark.parametrize(
    "messages",
    [..., [], None, "hi", {"role": "user", "content": "hi"}, 7],
    ids=["missing", "empty", "null", "string", "object", "number"],
)
def test_bad_messages(proxy, http, messages):
    body = {"model": "gpt-4o-mini"}
    if messages is not ...:
        body["messages"] = messages
    _, row = check(proxy, http.post(CHAT, json=body), 400, param="messages")
    assert row["provider"] is None
    assert row["model"] == "gpt-4o-mini"


def test_message_that_is_not_an_object(proxy, http):
    check(proxy, http.post(CHAT, json={"model": "gpt-4o-mini", "messages": ["hi"]}), 400)


def test_stream_flag_of_wrong_type_is_a_client_error(proxy, http):
    response = http.post(CHAT, json={"model": "gpt-4o-mini", "messages": GOOD_MESSAGES, "stream": "yes"})
    assert 400 <= response.status_code < 500
    assert_error_shape(response.json())


@pytest.mark.parametrize("model", ["openai/gpt-4o", "azure/my-deployment", "hyperbolic/meta-llama/Llama-3.3-70B-Instruct"])
def test_provider_without_key_is_model_not_found(proxy, http, model):
    error, row = check(proxy, http.post(CHAT, json={"model": model, "messages": GOOD_MESSAGES}), 404,
                       code="model_not_found")
    assert row["model"] == model
    assert error["param"] == "model"


def test_provider_without_key_through_the_sdk(proxy):
    client = OpenAI(base_url=proxy.v1, api_key=CLIENT_KEY, max_retries=0, timeout=10)
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="openai/gpt-4o", messages=GOOD_MESSAGES)
    assert caught.value.code == "model_not_found"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"])
def test_content_type_not_json(proxy, http, content_type):
    body = json.dumps({"model": "gpt-4o-mini", "messages": GOOD_MESSAGES})
    check(proxy, post(http, CHAT, body, content_type), 415)


def test_json_content_type_with_charset_is_accepted(proxy, http):
    body = json.dumps({"model": "gpt-4o-mini", "messages": GOOD_MESSAGES})
    response = post(http, CHAT, body, "application/json; charset=utf-8")
    assert response.status_code == 200


def test_non_utf8_body(proxy, http):
    body = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "caf\xe9 \xff\xfe"}]}'
    _, row = check(proxy, post(http, CHAT, body), 400)
    assert row["provider"] is None


def test_body_over_the_limit_with_content_length(proxy, http):
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * (LIMIT * 2)}]})
    check(proxy, post(http, CHAT, body), 413)


def test_body_over_the_limit_chunked(proxy, http):
    def chunks():
        yield b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "'
        for _ in range(8):
            yield b"y" * 1024
        yield b'"}]}'

    response = http.post(CHAT, content=chunks(), headers={"content-type": "application/json"})
    check(proxy, response, 413)


def test_body_just_under_the_limit_is_fine(proxy, http):
    skeleton = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": ""}]})
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "z" * (LIMIT - len(skeleton) - 10)}]})
    assert len(body) < LIMIT
    assert post(http, CHAT, body).status_code == 200


def test_completions_missing_prompt(proxy, http):
    check(proxy, http.post("/completions", json={"model": "gpt-3.5-turbo-instruct"}), 400, param="prompt",
          endpoint="completions")


def test_embeddings_bad_model_and_missing_input(proxy, http):
    check(proxy, http.post("/embeddings", json={"input": "x"}), 400, param="model", endpoint="embeddings")
    check(proxy, http.post("/embeddings", json={"model": "text-embedding-3-small"}), 400, param="input",
          endpoint="embeddings")


def test_invalid_json_on_every_endpoint(proxy, http):
    for path, endpoint in (("/completions", "completions"), ("/embeddings", "embeddings")):
        check(proxy, post(http, path, "{nope"), 400, endpoint=endpoint)


def test_sdk_sees_bad_request_error(proxy):
    client = OpenAI(base_url=proxy.v1, api_key=CLIENT_KEY, max_retries=0, timeout=10)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=[])
    assert caught.value.status_code == 400
    assert caught.value.body["param"] == "messages"


def test_no_500_and_every_bad_request_has_a_row(proxy):
    rows = proxy.log.rows()
    assert rows, "rows expected from the earlier tests"
    assert all(r["status_code"] is not None and r["status_code"] < 500 for r in rows)
    assert "Traceback" not in proxy.output()
