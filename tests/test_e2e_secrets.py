"""Proxy keys ([clients]) and secrets: no key or Authorization value is ever written anywhere.

The module configures upstream keys for every provider and two client keys, makes calls of
every kind (good, bad, failing, streamed, cut, disconnected, unauthenticated), stops the
server with SIGTERM and then searches every file the proxy wrote (the database with its
-wal/-shm, the captured output, anything else in its directory) for each secret.
"""

from __future__ import annotations

import httpx
import openai
import pytest
from openai import AzureOpenAI, OpenAI

from conftest import assert_error_shape, fake_key, loads
from fake_answers import chat_answer
from provider_setup import ALICE_KEY, AZURE_KEY, HYPERBOLIC_KEY, LOCAL_KEY, OPENAI_KEY
from provider_setup import clients, every_provider_env, local_provider, sdk_client, secrets_written

pytestmark = pytest.mark.timeout(90)

BOB_KEY = fake_key("sk-proxy-bob")
WRONG_KEY = fake_key("sk-proxy-wrong")
COOKIE_SECRET = fake_key("cookie-secret")
SECRETS = (OPENAI_KEY, AZURE_KEY, HYPERBOLIC_KEY, LOCAL_KEY, ALICE_KEY, BOB_KEY, WRONG_KEY, COOKIE_SECRET)


@pytest.fixture(scope="module")
def proxy(module_proxy_factory, fake_upstream_server):
    env = every_provider_env(fake_upstream_server, ALICE_PROXY_KEY=ALICE_KEY, BOB_PROXY_KEY=BOB_KEY)
    return module_proxy_factory(env=env, config=local_provider(fake_upstream_server) + clients("alice", "bob"))


@pytest.fixture
def alice(proxy) -> OpenAI:
    return sdk_client(proxy, ALICE_KEY)


@pytest.fixture(scope="module")
def made() -> list[str]:
    """Request ids of every answered request, so the final test can count rows."""
    return []


def chat_body(text: str = "hi", model: str = "gpt-4o-mini", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def test_no_proxy_key_is_401_with_openai_shape_and_a_row(proxy, made, upstream):
    response = httpx.post(proxy.v1 + "/chat/completions", json=chat_body(), timeout=10)
    assert response.status_code == 401
    assert_error_shape(response.json())
    request_id = response.headers["x-study-request-id"]
    made.append(request_id)
    row = proxy.log.wait_row(request_id)
    assert row["status_code"] == 401
    assert row["client"] is None
    assert row["attempts"] == 0
    assert upstream.requests == []


def test_wrong_proxy_key_is_401(proxy, made, upstream):
    client = sdk_client(proxy, WRONG_KEY)
    with pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(**chat_body())
    assert caught.value.status_code == 401
    made.append(caught.value.response.headers["x-study-request-id"])
    # An upstream key is not a proxy key either.
    client = sdk_client(proxy, OPENAI_KEY)
    with pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(**chat_body())
    made.append(caught.value.response.headers["x-study-request-id"])
    assert upstream.requests == []


def test_wrong_key_on_a_bad_request_is_still_401(proxy, made, upstream):
    response = httpx.post(proxy.v1 + "/chat/completions", content=b"{not json",
                          headers={"Authorization": f"Bearer {WRONG_KEY}", "content-type": "application/json"}, timeout=10)
    assert response.status_code in (400, 401)
    made.append(response.headers["x-study-request-id"])


def test_valid_proxy_key_records_client_alias(proxy, alice, made, upstream):
    raw = alice.chat.completions.with_raw_response.create(
        **chat_body("from alice"), extra_headers={"Cookie": f"session={COOKIE_SECRET}"}
    )
    assert raw.parse().choices[0].message.content == chat_answer("from alice")
    request_id = raw.headers["x-study-request-id"]
    made.append(request_id)
    sent = upstream.only()
    assert sent.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert "cookie" not in sent.headers or COOKIE_SECRET not in sent.headers["cookie"]
    row = proxy.log.wait_row(request_id)
    assert row["client"] == "alice"
    headers = loads(row["request_headers"])
    assert ALICE_KEY not in row["request_headers"]
    assert COOKIE_SECRET not in row["request_headers"]
    assert {k.lower() for k in headers} >= {"content-type"}


def test_api_key_header_works_as_proxy_key_for_azure_sdk(proxy, made, upstream):
    azure = AzureOpenAI(azure_endpoint=proxy.url, api_version="2024-10-21", api_key=BOB_KEY, max_retries=0, timeout=10)
    raw = azure.chat.completions.with_raw_response.create(model="gpt-4o-dep", messages=[{"role": "user", "content": "bob"}])
    request_id = raw.headers["x-study-request-id"]
    made.append(request_id)
    sent = upstream.only()
    assert sent.headers["api-key"] == AZURE_KEY
    assert "authorization" not in sent.headers
    row = proxy.log.wait_row(request_id)
    assert (row["client"], row["provider"]) == ("bob", "azure")


def test_many_kinds_of_calls(proxy, alice, made, upstream):
    """Good, failing, streamed and cut calls on every provider, all with alice's key."""
    raw = alice.chat.completions.with_raw_response.create(**chat_body("stream", model="hyperbolic/org/m"), stream=True)
    list(raw.parse())
    made.append(raw.headers["x-study-request-id"])

    raw = alice.chat.completions.with_raw_response.create(**chat_body("local", model="local/m"))
    made.append(raw.headers["x-study-request-id"])

    raw = alice.embeddings.with_raw_response.create(model="text-embedding-3-small", input="embed")
    made.append(raw.headers["x-study-request-id"])

    for model, error in (("fail-400-x", openai.BadRequestError), ("fail-500-x", openai.InternalServerError),
                         ("azure/fail-400-dep", openai.BadRequestError), ("mock/x", None)):
        if error is None:
            raw = alice.chat.completions.with_raw_response.create(**chat_body(model=model))
            made.append(raw.headers["x-study-request-id"])
            continue
        with pytest.raises(error) as caught:
            alice.chat.completions.create(**chat_body(model=model))
        made.append(caught.value.response.headers["x-study-request-id"])

    raw = alice.chat.completions.with_raw_response.create(**chat_body("cut", model="cut-stream-s"), stream=True)
    made.append(raw.headers["x-study-request-id"])
    with pytest.raises(openai.APIError):
        list(raw.parse())

    with httpx.stream("POST", proxy.v1 + "/chat/completions", json=chat_body(model="slow-stream-s", stream=True),
                      headers={"Authorization": f"Bearer {ALICE_KEY}"}, timeout=10) as response:
        made.append(response.headers["x-study-request-id"])
        for line in response.iter_lines():
            if "w3" in line:
                break

    for bad in (b"{broken", b'{"model": 1}', b'{"model": "openai/x"}'):
        response = httpx.post(proxy.v1 + "/chat/completions", content=bad, timeout=10,
                              headers={"Authorization": f"Bearer {ALICE_KEY}", "content-type": "application/json"})
        assert 400 <= response.status_code < 500
        made.append(response.headers["x-study-request-id"])

    # Every upstream request carried an operator key, never a client key.
    for recorded in upstream.requests:
        values = " ".join(recorded.headers.values())
        for secret in (ALICE_KEY, BOB_KEY, WRONG_KEY, COOKIE_SECRET):
            assert secret not in values and secret.encode() not in recorded.raw_body


def test_after_sigterm_all_rows_are_there_and_no_secret_was_written(proxy, made):
    proxy.log.wait_count(len(made), timeout=10)
    proxy.stop_ok()
    rows = proxy.log.rows()
    assert {r["request_id"] for r in rows} >= set(made)
    assert len(rows) == len(made)
    assert {r["client"] for r in rows} <= {None, "alice", "bob"}

    names = {p.name for p in proxy.directory.rglob("*") if p.is_file()}
    assert "log.db" in names and "server-output.txt" in names
    assert secrets_written(proxy, SECRETS) == []
    # The -wal / -shm are searched above if they survived shutdown; the output was captured.
    assert proxy.output(), "the server printed nothing?"
