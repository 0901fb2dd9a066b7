"""The Responses API end to end on providers without one: the OpenAI SDK's `client.responses` against
the proxy, which asks the fake upstream's chat/completions and translates both ways.

The built-in `hyperbolic` provider (`responses = false` by default) lives at the fake's
`/hyperbolic/v1`, a configured `chatonly` provider with `responses = false` at `/chatonly/v1`.
"""

from __future__ import annotations

import asyncio

import openai
import pytest
from openai import AsyncOpenAI, OpenAI
from pydantic import BaseModel

from conftest import fake_key, loads, provider_env, unique
from fake_answers import TOOL_CALL, USAGE, chat_answer
from fake_failures import CUT_AFTER
from fake_responses import FAKE_JSON, tool_result_answer

pytestmark = pytest.mark.timeout(60)

HYPERBOLIC_KEY = fake_key("hyp-test")
OPENAI_KEY = fake_key("sk-test-openai")
MODEL = "meta-llama/Llama-3.3-70B-Instruct"

CONFIG = """
[providers.chatonly]
base_url = "{base}/chatonly/v1"
no_key = true
responses = false

[aliases]
either = ["hyperbolic/meta-llama/Llama-3.3-70B-Instruct", "openai/gpt-4o"]
"""

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
CHAT_WEATHER = {"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}
TOOL_CALL_ID, ARGUMENTS = TOOL_CALL["id"], TOOL_CALL["function"]["arguments"]


class Weather(BaseModel):
    city: str
    celsius: int
    sunny: bool


@pytest.fixture(scope="module")
def proxy(module_proxy_factory, fake_upstream_server):
    env = provider_env(fake_upstream_server, hyperbolic=HYPERBOLIC_KEY, openai=OPENAI_KEY)
    return module_proxy_factory(env=env, config=CONFIG.format(base=fake_upstream_server.base_url))


@pytest.fixture
def client(proxy) -> OpenAI:
    return OpenAI(base_url=proxy.v1, api_key="sk-test-client", max_retries=0, timeout=15)


def chat_calls(upstream, prefix="/hyperbolic/v1"):
    calls = [r for r in upstream.requests if r.path.startswith(prefix)]
    assert calls and all(r.path == f"{prefix}/chat/completions" for r in calls), [r.path for r in upstream.requests]
    return calls


def test_create_with_instructions_is_asked_as_chat_and_answered_as_a_response(proxy, client, upstream):
    raw = client.responses.with_raw_response.create(
        model=f"hyperbolic/{MODEL}", input="Hello translated", instructions="Be brief.", max_output_tokens=50,
        temperature=0.3, metadata={"run": "t1"}, store=True,
    )
    response = raw.parse()
    assert response.output_text == chat_answer("Hello translated")
    assert response.status == "completed"
    assert response.model == MODEL
    assert (response.instructions, response.max_output_tokens, response.temperature) == ("Be brief.", 50, 0.3)
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.total_tokens) == (
        USAGE["prompt_tokens"], USAGE["completion_tokens"], USAGE["total_tokens"])
    [sent] = chat_calls(upstream)
    assert sent.json == {"model": MODEL, "max_tokens": 50, "temperature": 0.3, "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello translated"}]}
    assert sent.headers["authorization"] == f"Bearer {HYPERBOLIC_KEY}"
    row = proxy.log.wait_row(raw.headers["x-study-request-id"])
    assert (row["endpoint"], row["provider"], row["upstream_model"], row["status_code"]) == (
        "responses", "hyperbolic", MODEL, 200)
    assert loads(row["request_json"])["input"] == "Hello translated"  # as the client sent it
    assert loads(row["response_json"])["object"] == "response"  # as the client received it
    assert "translated to chat/completions" in loads(row["metadata"])["study_notes"][0]
    [attempt] = proxy.log.attempts(row["request_id"])
    assert attempt["url_path"] == "/hyperbolic/v1/chat/completions"


def test_stream_arrives_as_responses_events(proxy, client, upstream):
    stream = client.responses.create(model=f"hyperbolic/{MODEL}", input="Stream me", instructions="Be brief.",
                                     stream=True)
    events = list(stream)
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) > 1 and "".join(deltas) == chat_answer("Stream me")
    final = events[-1].response
    assert final.output_text == chat_answer("Stream me")
    assert final.usage.output_tokens == USAGE["completion_tokens"]
    [sent] = chat_calls(upstream)
    assert sent.json["stream"] is True and sent.json["stream_options"] == {"include_usage": True}
    assert sent.json["messages"][0] == {"role": "system", "content": "Be brief."}


def test_stream_helper_of_the_sdk(proxy, client, upstream):
    with client.responses.stream(model="chatonly/small", input="Helper stream") as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == final.output_text == chat_answer("Helper stream")
    chat_calls(upstream, "/chatonly/v1")


@pytest.mark.parametrize("stream", [False, True])
def test_tool_round_trip(proxy, client, upstream, stream):
    model = f"chatonly/{unique('tool-call')}"
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    if stream:
        events = list(client.responses.create(model=model, input=ask, tools=[WEATHER], stream=True))
        arguments = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
        assert len(arguments) > 1 and "".join(arguments) == ARGUMENTS
        first = events[-1].response
    else:
        first = client.responses.create(model=model, input=ask, tools=[WEATHER], tool_choice="auto")
    [call] = first.output
    assert (call.type, call.call_id, call.name, call.arguments) == ("function_call", TOOL_CALL_ID, "get_weather",
                                                                    ARGUMENTS)
    followup = ask + [item.model_dump(exclude_none=True) for item in first.output]
    followup.append({"type": "function_call_output", "call_id": call.call_id, "output": "18C"})
    second = client.responses.create(model=model, input=followup, tools=[WEATHER])
    assert second.output_text == tool_result_answer("18C")
    asked, answered = chat_calls(upstream, "/chatonly/v1")
    assert asked.json["tools"] == [CHAT_WEATHER]
    if not stream:
        assert asked.json["tool_choice"] == "auto"
    assert answered.json["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": TOOL_CALL_ID, "type": "function",
             "function": {"name": "get_weather", "arguments": ARGUMENTS}}]},
        {"role": "tool", "tool_call_id": TOOL_CALL_ID, "content": "18C"},
    ]


def test_previous_response_id_is_rebuilt_from_the_log(proxy, client, upstream):
    model = f"hyperbolic/{unique('tool-call')}"
    first = client.responses.create(model=model, input="Weather in Paris?", instructions="Use tools.", tools=[WEATHER])
    [call] = first.output
    second = client.responses.create(
        model=model, previous_response_id=first.id, tools=[WEATHER],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "18C"}],
    )
    assert second.output_text == tool_result_answer("18C")
    _, answered = chat_calls(upstream)
    roles = [m["role"] for m in answered.json["messages"]]
    assert roles[-3:] == ["user", "assistant", "tool"]
    assert answered.json["messages"][-2]["tool_calls"][0]["id"] == TOOL_CALL_ID


@pytest.mark.parametrize("stream", [False, True])
def test_parse_with_a_pydantic_model(proxy, client, upstream, stream):
    model = f"hyperbolic/meta-llama/{unique('json')}"
    if stream:
        with client.responses.stream(model=model, input="Weather in Paris as JSON", text_format=Weather) as s:
            parsed = s.get_final_response().output_parsed
    else:
        parsed = client.responses.parse(model=model, input="Weather in Paris as JSON",
                                        text_format=Weather).output_parsed
    assert parsed == Weather(**FAKE_JSON)
    [sent] = chat_calls(upstream)
    response_format = sent.json["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["name"] == "Weather"
    assert response_format["json_schema"]["strict"] is True
    assert set(response_format["json_schema"]["schema"]["properties"]) == set(FAKE_JSON)


def test_a_field_chat_cannot_express_is_a_400_and_nothing_goes_upstream(proxy, client, upstream):
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=f"hyperbolic/{MODEL}", input="x", tools=[{"type": "web_search"}])
    assert (caught.value.code, caught.value.param) == ("unsupported_parameter", "tools[0].type")
    assert "web_search" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=f"hyperbolic/{MODEL}", input="x", background=True)
    assert (caught.value.code, caught.value.param) == ("unsupported_parameter", "background")
    assert upstream.requests == []
    row = proxy.log.wait_row(caught.value.response.headers["x-study-request-id"])
    assert (row["status_code"], row["endpoint"], row["attempts"]) == (400, "responses", 0)


def test_a_field_the_translated_route_refuses_falls_to_the_next_route(proxy, client, upstream):
    """An alias whose first route is chat-only: a Responses-only field goes to the route that has the
    Responses API rather than failing; with no such route it is the refusal above."""
    raw = client.responses.with_raw_response.create(model="either", input="x", background=True)
    assert raw.parse().status == "completed"
    assert [r.path for r in upstream.requests] == ["/v1/responses"]
    assert upstream.requests[0].json["background"] is True
    row = proxy.log.wait_row(raw.headers["x-study-request-id"])
    assert (row["status_code"], row["provider"], row["attempts"]) == (200, "openai", 1)


def test_compact_and_the_input_token_count_need_a_responses_api(proxy, client, upstream):
    """A chat-only server has neither: a clear 400 with a row; an alias passes to a route that has them."""
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.compact(model=f"hyperbolic/{MODEL}", input="x")
    assert caught.value.code == "unsupported_endpoint" and "responses = false" in caught.value.message
    with pytest.raises(openai.BadRequestError):
        client.responses.input_tokens.count(model=f"hyperbolic/{MODEL}", input="x")
    assert upstream.requests == []
    row = proxy.log.wait_row(caught.value.response.headers["x-study-request-id"])
    assert (row["status_code"], row["endpoint"], row["attempts"]) == (400, "responses/compact", 0)
    assert client.responses.input_tokens.count(model="either", input="x").input_tokens > 0
    assert [r.path for r in upstream.requests] == ["/v1/responses/input_tokens"]


def test_upstream_error_passes_through(proxy, client, upstream):
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="hyperbolic/fail-400-x", input="x")
    assert caught.value.code == "fake_bad_request"
    chat_calls(upstream)


def test_stream_cut_by_upstream_ends_with_an_error_event(proxy, client, upstream):
    events = []
    with pytest.raises(openai.APIError) as caught:
        for event in client.responses.create(model=f"hyperbolic/{unique('cut-stream')}", input="one two three four",
                                             stream=True):
            events.append(event)
    assert "upstream" in caught.value.message
    assert [e.type for e in events][:2] == ["response.created", "response.in_progress"]
    assert len([e for e in events if e.type == "response.output_text.delta"]) <= CUT_AFTER


# -- agent frameworks on a translated provider ---------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_openai_agents_calls_a_tool_on_a_translated_provider(proxy, upstream, stream):
    import agents
    from agents import Agent, OpenAIResponsesModel, Runner, function_tool

    agents.set_tracing_disabled(True)
    calls = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return f"sunny in {city}"

    model = OpenAIResponsesModel(f"hyperbolic/{unique('tool-call')}", AsyncOpenAI(base_url=proxy.v1, api_key="sk-a"))
    agent = Agent(name="forecaster", instructions="Use your tools.", tools=[get_weather], model=model)
    if stream:
        async def run_streamed():
            result = Runner.run_streamed(agent, "What is the weather in Oslo?")
            async for _ in result.stream_events():
                pass
            return result

        result = asyncio.run(run_streamed())
    else:
        result = Runner.run_sync(agent, "What is the weather in Oslo?")
    assert calls == ["Oslo"]
    assert result.final_output == tool_result_answer("sunny in Oslo")
    asked, answered = chat_calls(upstream)
    assert asked.json["tools"][0]["function"]["name"] == "get_weather"
    assert [m["role"] for m in answered.json["messages"]] == ["system", "user", "assistant", "tool"]


def test_pydantic_ai_structured_output_on_a_translated_provider(proxy, upstream):
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIResponsesModel
    from pydantic_ai.providers.openai import OpenAIProvider

    provider = OpenAIProvider(base_url=proxy.v1, api_key="sk-p")
    agent = Agent(OpenAIResponsesModel(f"hyperbolic/{unique('json')}", provider=provider), output_type=Weather)
    assert agent.run_sync("Weather in Paris?").output == Weather(**FAKE_JSON)
    chat_calls(upstream)


def test_logprobs_asked_by_include_come_back_from_a_chat_only_provider(module_proxy_factory):
    """A chat-only provider that answers logprobs: a second proxy, whose mock does, behind this one."""
    behind = module_proxy_factory()
    front = module_proxy_factory(config=f'[providers.selfchat]\nbase_url = "{behind.v1}"\nno_key = true\n'
                                        "responses = false\n")
    client = OpenAI(base_url=front.v1, api_key="sk-test-client", max_retries=0, timeout=15)
    asked = {"model": "selfchat/mock/echo", "input": "Hello logprobs",
             "include": ["message.output_text.logprobs"], "top_logprobs": 2}
    whole = client.responses.create(**asked)
    part = whole.output[0].content[0]
    assert "".join(t.token for t in part.logprobs) == part.text == "Mock answer to: Hello logprobs"
    assert [len(t.top_logprobs) for t in part.logprobs] == [2] * 5
    with client.responses.stream(**asked) as stream:
        deltas = [t.token for event in stream if event.type == "response.output_text.delta" for t in event.logprobs]
    assert deltas == [t.token for t in part.logprobs]
    sent = [loads(row["request_json"]) for row in behind.log.wait_count(2)]
    assert [(s["logprobs"], s["top_logprobs"]) for s in sent] == [(True, 2), (True, 2)]  # what chat was asked
