"""The `responses` config key, the Responses URLs of each kind, and the provider that translates to chat."""

import asyncio

import orjson
import pytest
from openai.types.responses import Response

from proxy.config import ConfigError, load_settings
from proxy.config_sections import RetryPolicy
from proxy.errors import ProxyError
from proxy.providers import AzureProvider, MockProvider, Provider, TranslatingProvider, build_providers
from proxy.providers.mock import MockResponse
from proxy.providers.translated import TranslatedRequest
from proxy.record import CallRecord
from proxy.resilience import UpstreamCaller
from proxy.routing import Route
from proxy.upstream import UpstreamUnreachable

AZURE_ENV = {"AZURE_OPENAI_API_KEY": "azure-key", "AZURE_OPENAI_ENDPOINT": "https://res.example.com/"}
ENV = {**AZURE_ENV, "OPENAI_API_KEY": "op-key", "HYPERBOLIC_API_KEY": "hyp-key"}
ASK = {"model": "hyperbolic/org/m", "input": "Hi", "instructions": "Be brief.", "max_output_tokens": 20}


def settings(config=None, tmp_path=None, env=ENV):
    if config is None:
        return load_settings(env=env)
    path = tmp_path / "config.toml"
    path.write_text(config)
    return load_settings(env={**env, "LOCAL_KEY": "local-key"}, config_file=path)


# -- config --------------------------------------------------------------------------------


def test_builtin_providers_say_whether_they_serve_the_responses_api():
    providers = settings().providers
    assert {name: p.responses for name, p in providers.items()} == {
        "openai": True, "azure": True, "hyperbolic": False, "mock": True}


def test_configured_providers_default_to_responses_and_can_say_no(tmp_path):
    config = """
[providers.local]
base_url = "http://127.0.0.1:9/v1"
no_key = true
responses = false

[providers.vendor]
base_url = "http://127.0.0.1:9/v1"
api_key_env = "LOCAL_KEY"

[providers.hyperbolic]
base_url = "http://127.0.0.1:9/hyp/v1"
api_key_env = "LOCAL_KEY"

[providers.openai]
base_url = "http://127.0.0.1:9/chat-only/v1"
api_key_env = "LOCAL_KEY"
responses = false
"""
    providers = settings(config, tmp_path).providers
    assert providers["local"].responses is False
    assert providers["vendor"].responses is True
    assert providers["hyperbolic"].responses is False  # a table replacing a built-in keeps its default
    assert providers["openai"].responses is False


def test_responses_must_be_a_boolean(tmp_path):
    with pytest.raises(ConfigError, match="responses must be true or false"):
        settings('[providers.local]\nbase_url = "http://127.0.0.1:9/v1"\nno_key = true\nresponses = "no"\n', tmp_path)


def test_build_providers_wraps_only_the_providers_without_a_responses_api():
    providers = build_providers(settings())
    assert type(providers["openai"]) is Provider
    assert isinstance(providers["azure"], AzureProvider) and isinstance(providers["mock"], MockProvider)
    hyperbolic = providers["hyperbolic"]
    assert isinstance(hyperbolic, TranslatingProvider) and type(hyperbolic.inner) is Provider
    assert hyperbolic.name == "hyperbolic"


# -- native Responses URLs -----------------------------------------------------------------


def test_openai_kind_forwards_responses_as_is():
    provider = build_providers(settings())["openai"]
    request = provider.build("responses", "gpt-4.1", {"model": "openai/gpt-4.1", "input": "Hi", "store": False})
    assert request.url == "https://api.openai.com/v1/responses"
    assert request.headers["authorization"] == "Bearer op-key"
    assert orjson.loads(request.body) == {"model": "gpt-4.1", "input": "Hi", "store": False}
    assert provider.keeps_responses


def test_azure_responses_go_to_the_v1_surface_with_the_deployment_as_model_and_no_api_version():
    provider = build_providers(settings())["azure"]
    request = provider.build("responses", "my-dep", {"model": "azure/my-dep", "input": "Hi"})
    assert request.url == "https://res.example.com/openai/v1/responses"
    assert orjson.loads(request.body)["model"] == "my-dep"
    assert request.headers["api-key"] == "azure-key" and "authorization" not in request.headers
    # chat stays on the deployments path
    assert provider.build("chat/completions", "my-dep", {"messages": []}).url == (
        "https://res.example.com/openai/deployments/my-dep/chat/completions?api-version=2024-10-21")


def test_a_translating_provider_keeps_no_responses_so_the_proxy_answers_follow_ups():
    assert not build_providers(settings())["hyperbolic"].keeps_responses


# -- the translating provider --------------------------------------------------------------


class Upstream:
    """A stand-in for UpstreamClient: records the request, answers with a scripted response."""

    def __init__(self, response):
        self.response = response
        self.sent = []

    async def send(self, request):
        self.sent.append(request)
        return self.response


class Broken(MockResponse):
    """A stream that breaks off after its chunks."""

    async def iter_bytes(self, bounded=True):
        for chunk in self._chunks:
            yield chunk
        raise UpstreamUnreachable("protocol", "upstream closed the connection mid-answer")


def chat_answer(text="Hello.", finish="stop"):
    return {"id": "c", "object": "chat.completion", "model": "org/m", "created": 1,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}


def run(coro):
    return asyncio.run(coro)


def test_responses_request_goes_to_chat_completions_translated():
    provider = build_providers(settings())["hyperbolic"]
    request = provider.build("responses", "org/m", ASK)
    assert isinstance(request, TranslatedRequest) and request.original is ASK
    assert request.url == "https://api.hyperbolic.xyz/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer hyp-key"
    assert orjson.loads(request.body) == {"model": "org/m", "max_tokens": 20, "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}


def test_other_endpoints_pass_through_untouched():
    provider = build_providers(settings())["hyperbolic"]
    assert provider.forward("GET", "models", "", {}, b"").url == "https://api.hyperbolic.xyz/v1/models"
    assert provider.lists_models is True
    payload = {"model": "hyperbolic/org/m", "messages": [{"role": "user", "content": "Hi"}]}
    request = provider.build("chat/completions", "org/m", payload)
    assert type(request) is not TranslatedRequest
    assert request == provider.inner.build("chat/completions", "org/m", payload)
    response = MockResponse(orjson.dumps(chat_answer()))
    assert run(provider.send(Upstream(response), request)) is response


def test_whole_answer_is_translated_back():
    provider = build_providers(settings())["hyperbolic"]
    upstream = Upstream(MockResponse(orjson.dumps(chat_answer("Hello.", "length"))))

    async def go():
        response = await provider.send(upstream, provider.build("responses", "org/m", ASK))
        return response, await response.read()

    response, body = run(go())
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    answer = Response.model_validate_json(body)
    assert answer.output_text == "Hello."
    assert (answer.status, answer.incomplete_details.reason) == ("incomplete", "max_output_tokens")
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (5, 2)
    assert (answer.model, answer.instructions, answer.max_output_tokens) == ("org/m", "Be brief.", 20)


@pytest.mark.parametrize("status", [400, 429, 503])
def test_error_answers_pass_through_unchanged(status):
    provider = build_providers(settings())["hyperbolic"]
    error = orjson.dumps({"error": {"message": "no", "type": "invalid_request_error", "param": None, "code": "x"}})
    scripted = MockResponse(error)
    scripted.status_code = status
    scripted.headers["retry-after"] = "1"

    async def go():
        response = await provider.send(Upstream(scripted), provider.build("responses", "org/m", ASK))
        return response, await response.read()

    response, body = run(go())
    assert (response.status_code, body, response.headers["retry-after"]) == (status, error, "1")


def test_a_200_that_is_not_a_chat_completion_is_a_502():
    provider = build_providers(settings())["hyperbolic"]

    async def go():
        upstream = Upstream(MockResponse(b"<html>oops</html>"))
        response = await provider.send(upstream, provider.build("responses", "org/m", ASK))
        return response, await response.read()

    response, body = run(go())
    assert response.status_code == 502
    assert orjson.loads(body)["error"]["code"] == "bad_upstream_answer"


def stream_frames(*texts, finish="stop"):
    chunks = [{"choices": [{"index": 0, "delta": {"content": t}, "finish_reason": None}], "model": "org/m"}
              for t in texts]
    chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}], "model": "org/m"})
    chunks.append({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}})
    return [b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks] + [b"data: [DONE]\n\n"]


def streamed(provider, response, payload):
    async def go():
        translated = await provider.send(Upstream(response), provider.build("responses", "org/m", payload))
        pieces = [piece async for piece in translated.iter_bytes()]
        await translated.close()
        return translated, pieces

    return run(go())


def events(pieces):
    data = b"".join(pieces).decode()
    return [orjson.loads(line[6:]) for line in data.splitlines() if line.startswith("data: ")]


def test_stream_is_translated_chunk_by_chunk():
    provider = build_providers(settings())["hyperbolic"]
    payload = {**ASK, "stream": True}
    assert orjson.loads(provider.build("responses", "org/m", payload).body)["stream_options"] == {"include_usage": True}
    upstream = MockResponse(stream_frames("Hel", "lo."), content_type="text/event-stream")
    translated, pieces = streamed(provider, upstream, payload)
    assert translated.headers["content-type"] == "text/event-stream"
    assert len(pieces) == 5  # one per upstream chunk, each yielded as it came
    assert b"response.created" in pieces[0] and b'"delta":"Hel"' in pieces[0]
    assert b'"delta":"lo."' in pieces[1] and pieces[1].count(b"event: ") == 1
    assert pieces[2] == pieces[3] == b""  # the finish and usage chunks wait for [DONE]
    assert b"response.completed" in pieces[4]
    final = events(pieces)[-1]
    assert final["type"] == "response.completed" and final["response"]["usage"]["output_tokens"] == 2


def test_stream_that_breaks_off_ends_with_an_error_event():
    provider = build_providers(settings())["hyperbolic"]
    upstream = Broken(stream_frames("Hel")[:1], content_type="text/event-stream")
    _, pieces = streamed(provider, upstream, {**ASK, "stream": True})
    last = events(pieces)[-1]
    assert last["type"] == "error" and last["code"] == "upstream_stream_error"
    assert "mid-answer" in last["message"]


def test_azure_kind_without_responses_translates_to_its_deployment_path():
    env = {**AZURE_ENV, "AZURE_OPENAI_API_VERSION": "2024-06-01"}
    inner = build_providers(load_settings(env=env))["azure"]
    provider = TranslatingProvider(inner)
    request = provider.build("responses", "dep", {"model": "azure/dep", "input": "Hi", "stream": True})
    assert request.url == "https://res.example.com/openai/deployments/dep/chat/completions?api-version=2024-06-01"
    assert request.headers["api-key"] == "azure-key"
    assert "stream_options" not in orjson.loads(request.body)  # that api-version refuses it
    # everything but `responses` is the Azure adapter's own
    assert provider.forward("GET", "files", "", {}, b"").url == "https://res.example.com/openai/v1/files"
    assert provider.lists_models is False


def test_a_refused_field_reaches_the_caller_as_a_400_before_any_attempt():
    provider = build_providers(settings())["hyperbolic"]
    caller = UpstreamCaller({"hyperbolic": provider}, client=None, policy=RetryPolicy())
    record = CallRecord("responses")

    async def go():
        await caller.call(record, [Route("hyperbolic", "org/m")], "responses", {**ASK, "background": True},
                          max_attempts=3, stream=False)

    with pytest.raises(ProxyError) as caught:
        run(go())
    assert (caught.value.status_code, caught.value.param, caught.value.code) == (400, "background",
                                                                                  "unsupported_parameter")
    assert record.attempts == []
