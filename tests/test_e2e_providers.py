"""Providers and routing end to end: Azure (inbound and outbound), Hyperbolic, configured providers,
the mock, prefixes, bare models, aliases and `GET /v1/models`.

Every provider points at the same fake upstream under a different path (OpenAI `/v1`,
Hyperbolic `/hyperbolic/v1`, `local` `/local/v1`, `keyless` `/keyless/v1`, Azure at the root),
so the path the fake recorded tells which provider the proxy called.
"""

from __future__ import annotations

import httpx
import openai
import pytest
from openai import AzureOpenAI, OpenAI

from conftest import assert_error_shape, fake_key, loads, provider_env
from fake_answers import chat_answer
from fake_endpoints import MODELS, VECTOR
from provider_setup import AZURE_KEY, HYPERBOLIC_KEY, LOCAL_KEY, OPENAI_KEY
from provider_setup import dead_provider, every_provider_env, local_provider, sdk_client

pytestmark = pytest.mark.timeout(60)

CLIENT_KEY = fake_key("sk-test-client")

CONFIG = """
[providers.keyless]
base_url = "{base}/keyless/v1"
no_key = true

[aliases]
fast = "openai/gpt-4o-mini"
smart = ["azure/gpt-4o", "openai/gpt-4o"]
hyper = "hyperbolic/meta-llama/Llama-3.3-70B-Instruct"
"""


@pytest.fixture(scope="module")
def proxy(module_proxy_factory, fake_upstream_server):
    config = CONFIG.format(base=fake_upstream_server.base_url) + local_provider(fake_upstream_server) + dead_provider()
    return module_proxy_factory(env=every_provider_env(fake_upstream_server), config=config)


@pytest.fixture(scope="module")
def azure_only(module_proxy_factory, fake_upstream_server):
    """Azure alone, with an api-version older than `stream_options` support."""
    env = provider_env(fake_upstream_server, azure=AZURE_KEY)
    env |= {"AZURE_OPENAI_DEPLOYMENT": "dep-default", "AZURE_OPENAI_API_VERSION": "2024-06-01"}
    return module_proxy_factory(env=env)


@pytest.fixture
def client(proxy) -> OpenAI:
    return sdk_client(proxy, CLIENT_KEY)


@pytest.fixture
def azure_only_client(azure_only) -> OpenAI:
    return sdk_client(azure_only, CLIENT_KEY)


def azure_sdk(proxy, **options) -> AzureOpenAI:
    """The AzureOpenAI SDK at the proxy's root (api-version 2024-10-21), no retries of its own."""
    return AzureOpenAI(azure_endpoint=proxy.url, api_version="2024-10-21", api_key=CLIENT_KEY, max_retries=0, timeout=10,
                       **options)


def no_client_key_upstream(upstream) -> None:
    for recorded in upstream.requests:
        assert all(CLIENT_KEY not in v for v in recorded.headers.values()), recorded.headers
        assert CLIENT_KEY.encode() not in recorded.raw_body


def ask(client: OpenAI, model: str, text: str = "route me"):
    raw = client.chat.completions.with_raw_response.create(model=model, messages=[{"role": "user", "content": text}])
    assert raw.parse().choices[0].message.content == chat_answer(text)
    return raw


def route(proxy, client: OpenAI, upstream, model: str, text: str = "route me"):
    """Ask `model` through `proxy` (the answer must come back): the raw answer, the one request the
    fake upstream got, and the call's row."""
    raw = ask(client, model, text)
    return raw, upstream.only(), proxy.log.wait_row(raw.headers["x-study-request-id"])


# -- Azure ---------------------------------------------------------------------------------


def test_azure_sdk_inbound_deployment_path(proxy, upstream):
    azure = azure_sdk(proxy)
    raw = azure.chat.completions.with_raw_response.create(
        model="gpt-4o-dep", messages=[{"role": "user", "content": "hi azure"}]
    )
    assert raw.parse().choices[0].message.content == chat_answer("hi azure")
    assert raw.headers["x-study-provider"] == "azure"
    sent = upstream.only()
    assert sent.path == "/openai/deployments/gpt-4o-dep/chat/completions"
    assert sent.query_params == {"api-version": "2024-10-21"}
    assert sent.headers["api-key"] == AZURE_KEY
    assert "authorization" not in sent.headers
    assert raw.headers["x-request-id"] == sent.request_id
    no_client_key_upstream(upstream)
    row = proxy.log.wait_row(raw.headers["x-study-request-id"])
    assert row["provider"] == "azure"
    assert row["upstream_model"] == "gpt-4o-dep"
    assert row["model"] in ("gpt-4o-dep", "azure/gpt-4o-dep")
    assert row["endpoint"] == "chat/completions"
    assert row["prompt"] == "user: hi azure"
    assert row["response"] == chat_answer("hi azure")
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (11, 7, 18)
    assert row["status_code"] == 200 and row["error"] is None
    [attempt] = proxy.log.attempts(row["request_id"])
    assert attempt["provider"] == "azure"
    assert attempt["url_path"].startswith("/openai/deployments/gpt-4o-dep/chat/completions")
    assert AZURE_KEY not in attempt["url_path"]


def test_azure_sdk_deployment_in_path_wins_over_body_model(proxy, upstream):
    azure = azure_sdk(proxy, azure_deployment="other-dep")
    raw = azure.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "which deployment"}]
    )
    assert raw.parse().choices[0].message.content == chat_answer("which deployment")
    assert upstream.only().path == "/openai/deployments/other-dep/chat/completions"
    row = proxy.log.wait_row(raw.headers["x-study-request-id"])
    assert (row["provider"], row["upstream_model"]) == ("azure", "other-dep")


def test_azure_sdk_embeddings(proxy, upstream):
    azure = azure_sdk(proxy)
    raw = azure.embeddings.with_raw_response.create(model="embed-dep", input="embed me")
    assert raw.parse().data[0].embedding == VECTOR
    sent = upstream.only()
    assert sent.path == "/openai/deployments/embed-dep/embeddings"
    assert sent.headers["api-key"] == AZURE_KEY
    row = proxy.log.wait_row(raw.headers["x-study-request-id"])
    assert (row["endpoint"], row["provider"], row["upstream_model"]) == ("embeddings", "azure", "embed-dep")
    assert row["prompt"] == "embed me"


def test_azure_upstream_error_passes_through(proxy, upstream):
    azure = azure_sdk(proxy)
    with pytest.raises(openai.BadRequestError) as caught:
        azure.chat.completions.create(model="fail-400-dep", messages=[{"role": "user", "content": "x"}])
    assert caught.value.body["code"] == "fake_bad_request"
    row = proxy.log.wait_row(caught.value.response.headers["x-study-request-id"])
    assert (row["provider"], row["status_code"]) == ("azure", 400)


def test_azure_prefix_from_openai_sdk(proxy, client, upstream):
    _, sent, row = route(proxy, client, upstream, "azure/gpt-4o-dep")
    assert sent.path == "/openai/deployments/gpt-4o-dep/chat/completions"
    assert sent.query_params["api-version"] == "2024-10-21"
    assert sent.headers["api-key"] == AZURE_KEY
    assert "authorization" not in sent.headers
    assert (row["provider"], row["model"], row["upstream_model"]) == ("azure", "azure/gpt-4o-dep", "gpt-4o-dep")


# -- Hyperbolic, configured providers, mock ------------------------------------------------


def test_hyperbolic_prefix_keeps_org_in_upstream_model(proxy, client, upstream):
    raw, sent, row = route(proxy, client, upstream, "hyperbolic/meta-llama/Llama-3.3-70B-Instruct")
    assert sent.path == "/hyperbolic/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {HYPERBOLIC_KEY}"
    assert sent.json["model"] == "meta-llama/Llama-3.3-70B-Instruct"
    no_client_key_upstream(upstream)
    assert row["provider"] == "hyperbolic"
    assert row["model"] == "hyperbolic/meta-llama/Llama-3.3-70B-Instruct"
    assert row["upstream_model"] == "meta-llama/Llama-3.3-70B-Instruct"
    assert raw.headers["x-study-provider"] == "hyperbolic"


def test_hyperbolic_without_usage_non_stream(proxy, client, upstream):
    raw = ask(client, "hyperbolic/meta-llama/no-usage-8B")
    row = proxy.log.wait_row(raw.headers["x-study-request-id"])
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (None, None, None)
    assert row["status_code"] == 200 and row["error"] is None
    notes = loads(row["metadata"])["study_notes"]
    assert any("usage" in n.lower() for n in notes)


def test_configured_provider_with_key(proxy, client, upstream):
    _, sent, row = route(proxy, client, upstream, "local/qwen2.5-7b")
    assert sent.path == "/local/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {LOCAL_KEY}"
    assert sent.json["model"] == "qwen2.5-7b"
    assert (row["provider"], row["model"], row["upstream_model"]) == ("local", "local/qwen2.5-7b", "qwen2.5-7b")
    assert [a["url_path"] for a in proxy.log.attempts(row["request_id"])] == ["/local/v1/chat/completions"]


def test_configured_provider_without_key_sends_no_auth(proxy, client, upstream):
    _, sent, row = route(proxy, client, upstream, "keyless/tiny-model")
    assert sent.path == "/keyless/v1/chat/completions"
    assert "authorization" not in sent.headers
    assert "api-key" not in sent.headers
    assert sent.json["model"] == "tiny-model"
    assert row["provider"] == "keyless"


def test_unreachable_upstream_is_a_502_in_openai_shape_with_a_row(proxy, upstream):
    response = httpx.post(proxy.v1 + "/chat/completions", timeout=30, headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                          json={"model": "dead/m", "messages": [{"role": "user", "content": "anyone?"}]})
    assert response.status_code in (502, 503, 504)
    assert_error_shape(response.json())
    assert response.headers["x-study-provider"] == "dead"
    row = proxy.log.wait_row(response.headers["x-study-request-id"])
    assert row["status_code"] == response.status_code
    assert row["provider"] == "dead"
    assert row["error"]
    attempts = proxy.log.attempts(row["request_id"])
    assert row["attempts"] == len(attempts) >= 1
    assert all(a["error"] and a["status_code"] is None for a in attempts)
    assert attempts[0]["url_path"] == "/v1/chat/completions"


def test_mock_prefix_answers_in_process(proxy, client, upstream):
    raw = client.chat.completions.with_raw_response.create(
        model="mock/anything-at-all", messages=[{"role": "user", "content": "Hello mock"}]
    )
    answer = raw.parse()
    assert answer.choices[0].message.content == "Mock answer to: Hello mock"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens, answer.usage.total_tokens) == (2, 5, 7)
    assert upstream.requests == []
    assert raw.headers["x-study-provider"] == "mock"
    row = proxy.log.wait_row(raw.headers["x-study-request-id"])
    assert (row["provider"], row["model"], row["upstream_model"]) == ("mock", "mock/anything-at-all", "anything-at-all")
    assert row["response"] == "Mock answer to: Hello mock"
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (2, 5, 7)
    assert row["attempts"] == 1


# -- bare models and aliases ---------------------------------------------------------------


def test_bare_model_goes_to_default_provider_openai(proxy, client, upstream):
    _, sent, row = route(proxy, client, upstream, "gpt-4o")
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert sent.json["model"] == "gpt-4o"
    assert (row["provider"], row["model"], row["upstream_model"]) == ("openai", "gpt-4o", "gpt-4o")


def test_alias_to_single_route(proxy, client, upstream):
    _, sent, row = route(proxy, client, upstream, "fast")
    assert sent.path == "/v1/chat/completions"
    assert sent.json["model"] == "gpt-4o-mini"
    assert (row["provider"], row["model"], row["upstream_model"]) == ("openai", "fast", "gpt-4o-mini")


def test_alias_with_list_uses_first_route(proxy, client, upstream):
    _, sent, row = route(proxy, client, upstream, "smart")
    assert sent.path == "/openai/deployments/gpt-4o/chat/completions"
    assert sent.headers["api-key"] == AZURE_KEY
    assert (row["provider"], row["model"], row["upstream_model"]) == ("azure", "smart", "gpt-4o")


def test_alias_to_hyperbolic(proxy, client, upstream):
    _, sent, row = route(proxy, client, upstream, "hyper")
    assert sent.path == "/hyperbolic/v1/chat/completions"
    assert sent.json["model"] == "meta-llama/Llama-3.3-70B-Instruct"
    assert (row["provider"], row["model"]) == ("hyperbolic", "hyper")


def test_models_list_has_provider_defaults_and_aliases(proxy, client, upstream):
    models = list(client.models.list())
    ids = [m.id for m in models]
    assert "openai/gpt-4o-mini" in ids
    assert "azure/gpt-4o-dep" in ids
    assert {"fast", "smart", "hyper"} <= set(ids)
    assert len(ids) == len(set(ids))
    assert all(m.object == "model" for m in models)
    for provider in ("openai", "local", "keyless"):  # each upstream's own list, prefixed
        assert {f"{provider}/{m}" for m in MODELS} <= set(ids), provider
    assert not any(i.startswith(("hyperbolic/", "dead/")) for i in ids)  # its list fails; unreachable
    # Only model lists were asked for (none of Azure: it lists its deployment), each with its provider's key.
    keys = {"/v1": f"Bearer {OPENAI_KEY}", "/local/v1": f"Bearer {LOCAL_KEY}", "/keyless/v1": None,
            "/hyperbolic/v1": f"Bearer {HYPERBOLIC_KEY}"}
    for recorded in upstream.requests:
        assert recorded.method == "GET" and recorded.path.endswith("/models"), recorded.path
        assert recorded.headers.get("authorization") == keys[recorded.path.removesuffix("/models")]
    no_client_key_upstream(upstream)


def test_client_cannot_redirect_upstream_with_headers(proxy, client, upstream):
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "redirect?"}],
        extra_headers={"X-Forwarded-Host": "evil.example", "api-base": "http://evil.example"},
        extra_body={"base_url": "http://evil.example/v1", "api_base": "http://evil.example/v1"},
    )
    assert raw.headers["x-study-provider"] == "openai"
    assert upstream.only().path == "/v1/chat/completions"


# -- Azure as the only provider ------------------------------------------------------------


def test_azure_default_bare_model_uses_configured_deployment(azure_only, azure_only_client, upstream):
    _, sent, row = route(azure_only, azure_only_client, upstream, "gpt-4o-mini", "bare on azure")
    assert sent.path == "/openai/deployments/dep-default/chat/completions"
    assert sent.query_params["api-version"] == "2024-06-01"
    assert sent.headers["api-key"] == AZURE_KEY
    assert (row["provider"], row["model"], row["upstream_model"]) == ("azure", "gpt-4o-mini", "dep-default")


def test_azure_old_api_version_stream_gets_no_stream_options(azure_only, azure_only_client, upstream):
    raw = azure_only_client.chat.completions.with_raw_response.create(
        model="azure/dep-default", messages=[{"role": "user", "content": "old azure"}], stream=True
    )
    chunks = list(raw.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == chat_answer("old azure")
    sent = upstream.only()
    assert "stream_options" not in sent.json  # that api-version would reject it
    row = azure_only.log.wait_row(raw.headers["x-study-request-id"])
    assert row["status_code"] == 200 and row["error"] is None and row["stream"] == 1
    assert row["response"] == chat_answer("old azure")
    assert row["total_tokens"] is None
    assert any("usage" in n.lower() for n in loads(row["metadata"])["study_notes"])


def test_unconfigured_provider_prefix_is_model_not_found(azure_only, azure_only_client, upstream):
    for model in ("openai/gpt-4o", "hyperbolic/meta-llama/Llama-3.3-70B-Instruct"):
        with pytest.raises(openai.NotFoundError) as caught:
            azure_only_client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
        assert caught.value.code == "model_not_found"
        assert caught.value.body["param"] == "model"
        row = azure_only.log.wait_row(caught.value.response.headers["x-study-request-id"])
        assert row["status_code"] == 404
        assert row["attempts"] == 0
        assert row["model"] == model
        assert row["error"]
    assert upstream.requests == []


def test_azure_only_models_list(azure_only_client, upstream):
    ids = [m.id for m in azure_only_client.models.list()]
    assert "azure/dep-default" in ids
    assert not any(i.startswith(("openai/", "hyperbolic/")) for i in ids)


def test_a_body_the_proxy_does_not_change_goes_upstream_byte_for_byte(proxy, upstream):
    """An integer past 64 bits (orjson reads it as a float), key order and spacing reach the
    upstream as the client wrote them; a body the route changes is serialized again."""
    sent = (b'{ "messages": [{"role": "user", "content": "as sent"}],\n  "model": "gpt-4o-mini",'
            b' "seed": 123456789012345678901234567890, "metadata": {"b": "2", "a": "1"} }')
    headers = {"content-type": "application/json", "authorization": f"Bearer {CLIENT_KEY}"}
    answer = httpx.post(proxy.v1 + "/chat/completions", content=sent, headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    assert upstream.only().raw_body == sent
    upstream.clear()

    routed = sent.replace(b'"gpt-4o-mini"', b'"openai/gpt-4o-mini"')  # the prefix is taken off
    assert httpx.post(proxy.v1 + "/chat/completions", content=routed, headers=headers, timeout=10).status_code == 200
    rebuilt = upstream.only()
    assert rebuilt.raw_body != routed and rebuilt.json["model"] == "gpt-4o-mini"
    assert rebuilt.json["messages"] == [{"role": "user", "content": "as sent"}]
    upstream.clear()

    streamed = sent.replace(b'"gpt-4o-mini",', b'"gpt-4o-mini", "stream": true,')
    with httpx.stream("POST", proxy.v1 + "/chat/completions", content=streamed, headers=headers, timeout=10) as events:
        assert events.status_code == 200 and b"[DONE]" in events.read()
    assert upstream.only().json["stream_options"] == {"include_usage": True}  # asked for the row's usage
