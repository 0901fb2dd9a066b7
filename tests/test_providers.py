import asyncio

import orjson

from proxy.config import load_settings
from proxy.providers import AzureProvider, MockProvider, Provider, build_providers

AZURE_ENV = {"AZURE_OPENAI_API_KEY": "azure-key", "AZURE_OPENAI_ENDPOINT": "https://res.example.com/"}


def providers(env):
    return build_providers(load_settings(env=env))


def test_openai_compatible_request_carries_operator_key_and_upstream_model():
    provider = providers({"OPENAI_API_KEY": "op-key", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"})["openai"]
    assert type(provider) is Provider
    request = provider.build("chat/completions", "gpt-4o", {"model": "openai/gpt-4o", "messages": []})
    assert request.url == "http://127.0.0.1:9/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer op-key"
    assert orjson.loads(request.body) == {"model": "gpt-4o", "messages": []}


def test_hyperbolic_uses_its_endpoint():
    provider = providers({"HYPERBOLIC_API_KEY": "hk"})["hyperbolic"]
    request = provider.build("completions", "meta-llama/X", {"model": "hyperbolic/meta-llama/X", "prompt": "p"})
    assert request.url == "https://api.hyperbolic.xyz/v1/completions"
    assert request.headers["authorization"] == "Bearer hk"
    assert orjson.loads(request.body)["model"] == "meta-llama/X"


def test_azure_puts_the_deployment_in_the_path_and_the_key_in_api_key():
    provider = providers(AZURE_ENV)["azure"]
    assert isinstance(provider, AzureProvider)
    request = provider.build("chat/completions", "my-dep", {"model": "azure/my-dep", "messages": []})
    assert request.url == "https://res.example.com/openai/deployments/my-dep/chat/completions?api-version=2024-10-21"
    assert request.headers["api-key"] == "azure-key"
    assert "authorization" not in request.headers


def test_azure_deployment_cannot_escape_the_path():
    provider = providers(AZURE_ENV)["azure"]
    request = provider.build("embeddings", "../../x?y=@evil.example", {"input": "a"})
    assert request.url.startswith("https://res.example.com/openai/deployments/..%2F..%2Fx%3Fy%3D%40evil.example/embeddings?")


def test_azure_stream_options_only_from_2024_09_01():
    old = providers({**AZURE_ENV, "AZURE_OPENAI_API_VERSION": "2024-06-01"})["azure"]
    preview = providers({**AZURE_ENV, "AZURE_OPENAI_API_VERSION": "2024-09-01-preview"})["azure"]
    new = providers({**AZURE_ENV, "AZURE_OPENAI_API_VERSION": "2025-01-01-preview"})["azure"]
    assert not old.accepts_stream_options()
    assert preview.accepts_stream_options() and new.accepts_stream_options()


def _send(provider, endpoint, payload):
    async def go():
        response = await provider.send(None, provider.build(endpoint, payload["model"], payload))
        if payload.get("stream"):
            return response, [chunk async for chunk in response.iter_bytes()]
        return response, orjson.loads(await response.read())

    return asyncio.run(go())


def test_mock_echoes_and_reports_usage():
    mock = providers({})["mock"]
    assert isinstance(mock, MockProvider)
    response, body = _send(mock, "chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hi there"}]})
    assert response.status_code == 200
    assert body["choices"][0]["message"]["content"] == "Mock answer to: hi there"
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 5, "total_tokens": 7}


def test_mock_streams_word_by_word_with_usage_only_when_asked():
    mock = providers({})["mock"]
    payload = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "a b"}]}
    _, chunks = _send(mock, "chat/completions", payload)
    assert chunks[-1] == b"data: [DONE]\n\n"
    assert b'"usage"' not in b"".join(chunks)
    _, chunks = _send(mock, "chat/completions", {**payload, "stream_options": {"include_usage": True}})
    usage_chunk = orjson.loads(chunks[-2][6:])
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] == 5


def test_mock_embeddings_are_deterministic():
    mock = providers({})["mock"]
    _, first = _send(mock, "embeddings", {"model": "e", "input": ["x", "y"]})
    _, again = _send(mock, "embeddings", {"model": "e", "input": ["x", "y"]})
    assert len(first["data"]) == 2 and first == {**again}
    assert first["data"][0]["embedding"] != first["data"][1]["embedding"]
