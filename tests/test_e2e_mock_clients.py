"""The mock behind the real proxy, driven by the clients people use: openai-python's structured
outputs and tools, LangChain's `with_structured_output`, pydantic-ai agents and embeddings.

One proxy for the module, with no provider key (so `mock` is the default provider) and
model `mock/echo`. Each test checks what the client made of the answer, not only the wire.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from enum import Enum
from typing import Optional

import openai
import pytest
from openai import OpenAI, pydantic_function_tool
from pydantic import BaseModel, Field

from conftest import fake_key
from proxy.providers.mock_embeddings import vector

pytestmark = pytest.mark.timeout(90)

MODEL = "mock/echo"
CLIENT_KEY = fake_key("sk-test-client")


class Priority(str, Enum):
    LOW = "low"
    HIGH = "high"


class Step(BaseModel):
    title: str
    minutes: int = Field(ge=1, le=600)


class Plan(BaseModel):
    """A nested model: a list of models, an enum, an optional field and a constrained list."""

    goal: str
    priority: Priority
    steps: list[Step]
    owner: Optional[str]
    labels: list[str] = Field(min_length=1)
    deadline: Optional[Step] = None


class Answer(BaseModel):
    """What JSON mode without a schema yields: `{"answer": ...}`."""

    answer: str


class GetWeather(BaseModel):
    """Current weather for a city."""

    city: str
    days: int = Field(ge=1, le=7)


@pytest.fixture(scope="module")
def proxy(module_proxy_factory):
    return module_proxy_factory()


@pytest.fixture
def client(proxy) -> OpenAI:
    return OpenAI(base_url=proxy.v1, api_key=CLIENT_KEY, max_retries=0, timeout=10)


# -- openai-python ---------------------------------------------------------------------------


def test_parse_returns_a_parsed_pydantic_instance(proxy, client):
    completion = client.chat.completions.parse(
        model=MODEL, messages=[{"role": "user", "content": "Plan my day"}], response_format=Plan
    )
    plan = completion.choices[0].message.parsed
    assert isinstance(plan, Plan)
    assert plan.goal == "Mock answer to: Plan my day"
    assert plan.priority is Priority.LOW and plan.steps == [] and len(plan.labels) == 1


def test_tools_required_then_a_tool_message_ends_in_text(proxy, client):
    tools = [pydantic_function_tool(GetWeather, name="get_weather")]
    messages = [{"role": "user", "content": "Weather in Lisbon?"}]
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=messages, tools=tools, tool_choice="required")
    first = raw.parse()
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and call.id.startswith("call_")
    args = GetWeather.model_validate_json(call.function.arguments)  # valid for the tool's schema
    assert args.city == "Weather in Lisbon?" and args.days == 1
    row = proxy.log.wait_row(raw.headers["x-study-request-id"])
    assert "[tool call] get_weather(" in row["response"]

    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "sunny, 24 C"}]
    second = client.chat.completions.create(model=MODEL, messages=messages, tools=tools)
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "Mock answer to: Weather in Lisbon? (tool said: sunny, 24 C)"


def test_streamed_tool_call_assembled_by_the_stream_helper(proxy, client):
    with client.chat.completions.stream(
        model=MODEL,
        messages=[{"role": "user", "content": "Weather in a city with a fairly long name?"}],
        tools=[pydantic_function_tool(GetWeather, name="get_weather")],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    ) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_completion()
    assert "tool_calls.function.arguments.delta" in events
    call = final.choices[0].message.tool_calls[0]
    assert isinstance(call.function.parsed_arguments, GetWeather)
    assert final.choices[0].finish_reason == "tool_calls"


def test_streamed_text_first_chunk_carries_the_role(proxy, client):
    chunks = list(client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Mock answer to: hi"


def test_n_choices_whole_and_assembled_from_a_stream(proxy, client):
    messages = [{"role": "user", "content": "two takes"}]
    whole = client.chat.completions.create(model=MODEL, messages=messages, n=2)
    assert [c.message.content for c in whole.choices] == ["Mock answer to: two takes"] * 2
    with client.chat.completions.stream(model=MODEL, messages=messages, n=2) as stream:
        final = stream.get_final_completion()
    assert [(c.index, c.message.content, c.finish_reason) for c in final.choices] == [
        (0, "Mock answer to: two takes", "stop"), (1, "Mock answer to: two takes", "stop")]


def test_a_batch_of_legacy_prompts_is_answered_prompt_by_prompt_and_logged_one_line_each(proxy, client):
    raw = client.completions.with_raw_response.create(model=MODEL, prompt=["first one", "second"], n=2)
    batch = raw.parse()
    assert [(c.index, c.text) for c in batch.choices] == [
        (0, "Mock answer to: first one"), (1, "Mock answer to: first one"),
        (2, "Mock answer to: second"), (3, "Mock answer to: second"),
    ]
    assert batch.usage.prompt_tokens == 3
    row = proxy.log.wait_row(raw.headers["x-study-request-id"])
    assert (row["prompt"], row["prompt_tokens"]) == ("first one\nsecond", 3)
    with pytest.raises(openai.BadRequestError) as raised:
        client.completions.create(model=MODEL, prompt="x", n=3, best_of=2)
    assert raised.value.param == "best_of"


def test_an_answer_cut_at_its_token_limit_is_truncation_to_the_sdk_and_in_the_row(proxy, client):
    with pytest.raises(openai.LengthFinishReasonError):
        client.chat.completions.parse(model=MODEL, messages=[{"role": "user", "content": "Plan a day"}],
                                      response_format=Plan, max_completion_tokens=3)
    words = " ".join(f"word{i}" for i in range(40))
    raw = client.responses.with_raw_response.create(model=MODEL, input=words, max_output_tokens=16)
    cut = raw.parse()
    assert (cut.status, cut.incomplete_details.reason, cut.usage.output_tokens) == ("incomplete", "max_output_tokens", 16)
    with client.responses.stream(model=MODEL, input=words, max_output_tokens=16) as stream:
        last = [event.type for event in stream][-1]
    assert last == "response.incomplete"
    row = proxy.log.wait_row(raw.headers["x-study-request-id"])
    assert (row["status_code"], row["response"], row["completion_tokens"]) == (200, cut.output_text, 16)
    metadata = json.loads(row["metadata"])
    assert (metadata["status"], metadata["incomplete_reason"]) == ("incomplete", "max_output_tokens")

    # the row says which answers were cut, streamed or not; the others' metadata stays empty
    for stream in (False, True):
        chat = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": words}], max_tokens=5, stream=stream)
        chat.parse().close() if stream else chat.parse()
        row = proxy.log.wait_row(chat.headers["x-study-request-id"])
        assert (row["response"], json.loads(row["metadata"])) == ("Mock answer to: word0 word1", {"finish_reason": "length"})
    whole = client.chat.completions.with_raw_response.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert proxy.log.wait_row(whole.headers["x-study-request-id"])["metadata"] is None


def test_logprobs_reach_the_sdk_whole_streamed_and_in_the_responses_api(client):
    whole = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                           logprobs=True, top_logprobs=3)
    tokens = whole.choices[0].logprobs.content
    assert "".join(t.token for t in tokens) == whole.choices[0].message.content
    assert all(len(t.top_logprobs) == 3 for t in tokens)
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                            logprobs=True, stream=True)
    streamed = [t.token for chunk in stream for choice in chunk.choices if choice.logprobs for t in choice.logprobs.content]
    assert streamed == [t.token for t in tokens]
    legacy = client.completions.create(model=MODEL, prompt="hi", logprobs=2).choices[0].logprobs
    assert legacy.tokens == [t.token for t in tokens] and legacy.text_offset[:2] == [0, 4]
    response = client.responses.create(model=MODEL, input="hi", include=["message.output_text.logprobs"], top_logprobs=3)
    part = response.output[0].content[0]
    assert [t.token for t in part.logprobs] == [t.token for t in tokens] and len(part.logprobs[0].top_logprobs) == 3


REFUSED_CALLS = [
    ("chat", {"messages": [{"role": "user", "content": "x"}],
              "tools": [{"type": "function", "function": {"parameters": {"type": "object"}}}]}, "tools[0].function.name"),
    ("responses", {"input": "x", "conversation": "conv_123"}, "conversation"),
    ("responses", {"input": "x", "prompt": {"id": "pmpt_123"}}, "prompt"),
]


@pytest.mark.parametrize(("api", "arguments", "param"), REFUSED_CALLS)
def test_what_the_mock_refuses_is_a_bad_request_the_sdk_raises_and_a_row(proxy, client, api, arguments, param):
    create = client.chat.completions.create if api == "chat" else client.responses.create
    with pytest.raises(openai.BadRequestError) as raised:
        create(model=MODEL, **arguments)
    assert raised.value.param == param
    row = proxy.log.wait_row(raised.value.response.headers["x-study-request-id"])
    assert row["status_code"] == 400 and param in row["error"]


def test_embeddings_base64_and_dimensions_decoded_by_the_sdk(proxy, client):
    default = client.embeddings.create(model=MODEL, input="some words", dimensions=16)  # the SDK asks for base64
    assert default.data[0].embedding == pytest.approx(vector("some words", 16), abs=1e-6)
    explicit = client.embeddings.create(model=MODEL, input="some words", dimensions=16, encoding_format="base64")
    raw = explicit.data[0].embedding  # asked for explicitly, the SDK leaves it as the string
    assert isinstance(raw, str) and struct.unpack("<16f", base64.b64decode(raw)) == pytest.approx(default.data[0].embedding)
    assert len(client.embeddings.create(model=MODEL, input="x", encoding_format="float").data[0].embedding) == 8


# -- LangChain -------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "schema"), [("function_calling", Plan), ("json_schema", Plan), ("json_mode", Answer)])
def test_langchain_with_structured_output(proxy, method, schema):
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=proxy.v1, api_key=CLIENT_KEY, model=MODEL, use_responses_api=False, max_retries=0)
    result = llm.with_structured_output(schema, method=method).invoke("Plan my week")
    assert isinstance(result, schema)
    if schema is Plan:
        assert result.priority is Priority.LOW
    else:
        assert result.answer.startswith("Mock answer to: ")


def test_langchain_with_structured_output_include_raw_keeps_the_tool_call(proxy):
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=proxy.v1, api_key=CLIENT_KEY, model=MODEL, use_responses_api=False, max_retries=0)
    result = llm.with_structured_output(GetWeather, method="function_calling", include_raw=True).invoke("Weather in Rome?")
    assert result["parsing_error"] is None and isinstance(result["parsed"], GetWeather)
    assert result["raw"].tool_calls[0]["name"] == "GetWeather"


# -- pydantic-ai -----------------------------------------------------------------------------


def _pydantic_ai_model(proxy):
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    return OpenAIChatModel(MODEL, provider=OpenAIProvider(base_url=proxy.v1, api_key=CLIENT_KEY))


def test_pydantic_ai_structured_output(proxy):
    from pydantic_ai import Agent

    agent = Agent(_pydantic_ai_model(proxy), output_type=Plan)
    result = asyncio.run(agent.run("Plan my week"))
    assert isinstance(result.output, Plan)


def test_pydantic_ai_tool_is_called_and_its_result_ends_the_run(proxy):
    from pydantic_ai import Agent

    calls = []
    agent = Agent(_pydantic_ai_model(proxy), instructions="Use the tool.")

    @agent.tool_plain
    def lookup_capital(country: str) -> str:
        """The capital of a country."""
        calls.append(country)
        return "Paris"

    result = asyncio.run(agent.run("Capital of France?"))
    assert calls == ["Capital of France?"]
    assert result.output == "Mock answer to: Capital of France? (tool said: Paris)"


def test_pydantic_ai_tool_then_structured_output(proxy):
    from pydantic_ai import Agent

    seen = []
    agent = Agent(_pydantic_ai_model(proxy), output_type=Step)

    @agent.tool_plain
    def estimate(task: str) -> int:
        """Minutes a task takes."""
        seen.append(task)
        return 30

    result = asyncio.run(agent.run("How long to paint a fence?"))
    assert seen == ["How long to paint a fence?"]  # the tool ran before the output tool ended the run
    assert isinstance(result.output, Step)
    tool_returns = [p for m in result.all_messages() for p in getattr(m, "parts", []) if p.part_kind == "tool-return"]
    assert json.dumps(tool_returns[0].content) == "30"
