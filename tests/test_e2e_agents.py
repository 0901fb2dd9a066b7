"""Agent frameworks on the Responses API, offline: the proxy with no provider key answers through the mock.

Each framework is pointed at the proxy the way its docs say to point it at any
OpenAI-compatible server (a base URL and a key), with its default model class, which
for all three is the Responses API. The mock calls a tool when the user has the turn and
tools are offered, and answers (quoting the tool's result) once the tool has spoken.
"""

from __future__ import annotations

import asyncio
import json

import openai
import pytest
from openai import AsyncOpenAI, OpenAI
from pydantic import BaseModel

from conftest import loads

pytestmark = pytest.mark.timeout(90)


class Weather(BaseModel):
    city: str
    celsius: int
    sunny: bool


@pytest.fixture(scope="module")
def proxy(module_proxy_factory):
    return module_proxy_factory()


def _responses_rows(proxy, count: int):
    rows = proxy.log.wait_count(count, timeout=10)
    return [row for row in rows if row["endpoint"] == "responses"]


def test_openai_agents_default_agent_calls_a_tool_through_the_responses_api(proxy):
    import agents
    from agents import Agent, Runner, function_tool

    agents.set_tracing_disabled(True)
    agents.set_default_openai_client(AsyncOpenAI(base_url=proxy.v1, api_key="sk-agents"), use_for_tracing=False)
    agents.set_default_openai_api("responses")
    calls = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return f"sunny in {city}"

    before = proxy.log.count()
    agent = Agent(name="forecaster", instructions="Use your tools.", tools=[get_weather])
    result = Runner.run_sync(agent, "What is the weather in Paris?")
    assert calls, "the agent never called its tool"
    assert "sunny in" in result.final_output

    rows = _responses_rows(proxy, before + 2)[-2:]
    assert [row["provider"] for row in rows] == ["mock", "mock"]
    assert "[tool call] get_weather(" in rows[0]["response"]
    assert "tool: sunny in" in rows[1]["prompt"]
    assert rows[1]["response"] == result.final_output


def test_openai_agents_streamed_run_structured_output_and_handoff_on_a_named_provider(proxy):
    """`provider/model` names need the SDK's model class: its own router reads `mock/` as a prefix of its own."""
    import agents
    from agents import Agent, OpenAIResponsesModel, Runner, function_tool

    agents.set_tracing_disabled(True)
    model = OpenAIResponsesModel("mock/echo", AsyncOpenAI(base_url=proxy.v1, api_key="sk-agents"))

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    async def run() -> tuple[object, set[str], object, object]:
        streamed = Runner.run_streamed(Agent(name="f", instructions="Use tools.", tools=[get_weather], model=model),
                                       "Weather in Oslo?")
        kinds = {event.type async for event in streamed.stream_events()}
        structured = await Runner.run(Agent(name="s", output_type=Weather, model=model), "Forecast for Rome")
        spanish = Agent(name="spanish", instructions="Answer in Spanish.", model=model)
        handed = await Runner.run(Agent(name="triage", handoffs=[spanish], model=model), "Hola")
        return streamed, kinds, structured, handed

    before = proxy.log.count()
    streamed, kinds, structured, handed = asyncio.run(run())
    assert streamed.final_output == "Mock answer to: Weather in Oslo? (tool said: sunny in Weather in Oslo?)"
    assert {"raw_response_event", "run_item_stream_event"} <= kinds
    assert isinstance(structured.final_output, Weather)
    assert handed.last_agent.name == "spanish" and handed.final_output.startswith("Mock answer to: Hola")
    rows = _responses_rows(proxy, before + 5)[-5:]  # tool call and answer; the answer; handoff and answer
    assert all(row["model"] == "mock/echo" and row["status_code"] == 200 for row in rows)
    assert [row["stream"] for row in rows[:2]] == [1, 1]


def test_pydantic_ai_responses_model_with_structured_output(proxy):
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIResponsesModel
    from pydantic_ai.providers.openai import OpenAIProvider

    model = OpenAIResponsesModel("mock/echo", provider=OpenAIProvider(base_url=proxy.v1, api_key="sk-pai"))
    result = Agent(model, output_type=Weather).run_sync("Weather in Oslo?")
    assert isinstance(result.output, Weather)


def test_pydantic_ai_agent_with_a_tool(proxy):
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIResponsesModel
    from pydantic_ai.providers.openai import OpenAIProvider

    model = OpenAIResponsesModel("mock/echo", provider=OpenAIProvider(base_url=proxy.v1, api_key="sk-pai"))
    agent = Agent(model)
    looked_up = []

    @agent.tool_plain
    def lookup(topic: str) -> str:
        """Look a topic up."""
        looked_up.append(topic)
        return "forty-two"

    result = agent.run_sync("What is the answer?")
    assert looked_up and "forty-two" in result.output


def test_langchain_on_the_responses_api(proxy):
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=proxy.v1, api_key="sk-lc", model="mock/echo", use_responses_api=True)
    assert "Hello LangChain" in llm.invoke("Hello LangChain").text
    structured = llm.with_structured_output(Weather, method="json_schema").invoke("Weather in Rome?")
    assert isinstance(structured, Weather)


def test_previous_response_id_on_the_mock_is_rebuilt_from_the_log(proxy):
    client = OpenAI(base_url=proxy.v1, api_key="sk-turns", max_retries=0)
    first = client.responses.create(model="mock/echo", input="My name is Ada.", instructions="Remember names.")
    second = client.responses.create(model="mock/echo", input="What is my name?", previous_response_id=first.id)
    third = client.responses.create(model="mock/echo", input="And again?", previous_response_id=second.id)
    assert third.output_text == "Mock answer to: And again?"
    # the mock counts every input word: each turn carried the ones before it
    assert first.usage.input_tokens < second.usage.input_tokens < third.usage.input_tokens

    row = proxy.log.wait_response(third.id)
    assert loads(row["request_json"])["previous_response_id"] == second.id  # the row keeps what the client sent
    assert "rebuilt from the log: 4 earlier items" in " ".join(loads(row["metadata"])["study_notes"])
    items = client.responses.input_items.list(third.id, order="asc")
    assert [item.content[0].text for item in items.data] == ["And again?"]
    for query, param in (({"limit": 0}, "limit"), ({"limit": 101}, "limit"), ({"order": "sideways"}, "order")):
        with pytest.raises(openai.BadRequestError) as refused:  # as OpenAI pages: 1 to 100, asc or desc
            client.responses.input_items.list(third.id, **query)
        assert refused.value.param == param
    retrieved = client.responses.retrieve(second.id)
    assert retrieved.output_text == second.output_text
    client.responses.delete(first.id)
    with pytest.raises(Exception) as gone:
        client.responses.create(model="mock/echo", input="?", previous_response_id=first.id)
    assert "not found" in str(gone.value)


def test_a_background_response_on_the_mock_is_polled_and_cancelled_as_at_openai(proxy):
    client = OpenAI(base_url=proxy.v1, api_key="sk-bg", max_retries=0)
    started = client.responses.create(model="mock/echo", input="Take your time", background=True)
    assert started.background is True
    polled = client.responses.retrieve(started.id)
    assert (polled.status, polled.output_text) == ("completed", "Mock answer to: Take your time")
    assert client.responses.cancel(started.id).status == "completed"  # finished already: nothing to cancel
    foreground = client.responses.create(model="mock/echo", input="Now")
    with pytest.raises(openai.BadRequestError, match="background=true"):
        client.responses.cancel(foreground.id)


def test_a_mock_response_streamed_again_is_its_first_stream_from_the_log(proxy):
    """The mock keeps nothing: `retrieve(stream=True)` rebuilds the events from the log, the same
    sequence the mock first sent, so a client resuming after event N gets exactly the rest."""
    client = OpenAI(base_url=proxy.v1, api_key="sk-again", max_retries=0)
    first = list(client.responses.create(model="mock/echo", input="Resume me later", background=True, stream=True))
    response_id = first[-1].response.id
    again = client.responses.retrieve(response_id, stream=True)
    replayed = list(again)
    assert [e.model_dump(exclude={"response"}) for e in replayed] == [e.model_dump(exclude={"response"}) for e in first]
    assert replayed[-1].response.output_text == "Mock answer to: Resume me later"
    resumed = list(client.responses.retrieve(response_id, stream=True, starting_after=4))
    assert [e.sequence_number for e in resumed] == [e.sequence_number for e in first[5:]]
    row = proxy.log.wait_row(again.response.headers["x-study-request-id"])
    assert (row["endpoint"], row["stream"], row["response"]) == ("responses/retrieve", 1, "Mock answer to: Resume me later")
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.retrieve(response_id, stream=True, extra_query={"starting_after": "soon"})
    assert refused.value.param == "starting_after"


def test_parse_and_a_tool_round_trip_with_the_sdk_on_the_mock(proxy):
    client = OpenAI(base_url=proxy.v1, api_key="sk-sdk", max_retries=0)
    parsed = client.responses.parse(model="mock/echo", input="Weather in Lima?", text_format=Weather)
    assert isinstance(parsed.output_parsed, Weather)
    tool = {"type": "function", "name": "lookup", "parameters": {
        "type": "object", "properties": {"topic": {"type": "string"}}, "required": ["topic"], "additionalProperties": False}}
    first = client.responses.create(model="mock/echo", input="Look up otters", tools=[tool], tool_choice="required")
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "lookup" and isinstance(json.loads(call.arguments)["topic"], str)
    second = client.responses.create(
        model="mock/echo", tools=[tool], previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "otters hold hands"}],
    )
    assert "otters hold hands" in second.output_text


def test_async_streaming_responses_on_the_mock(proxy):
    async def main() -> list[str]:
        client = AsyncOpenAI(base_url=proxy.v1, api_key="sk-stream", max_retries=0)
        stream = await client.responses.create(model="mock/echo", input="stream this please", stream=True)
        return [event.type async for event in stream]

    kinds = asyncio.run(main())
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert kinds.count("response.output_text.delta") >= 4


def test_openai_agents_compaction_session_compacts_through_the_mock(proxy, tmp_path):
    """The SDK's `OpenAIResponsesCompactionSession` calls `responses.compact` after a turn; its
    history becomes the user's messages and one compaction item, and the next turn goes on."""
    import agents
    from agents import Agent, OpenAIResponsesCompactionSession, Runner, SQLiteSession, function_tool

    agents.set_tracing_disabled(True)
    client = AsyncOpenAI(base_url=proxy.v1, api_key="sk-compact")
    agents.set_default_openai_client(client, use_for_tracing=False)
    agents.set_default_openai_api("responses")

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"rain in {city}"

    store = SQLiteSession("trip", str(tmp_path / "session.db"))
    session = OpenAIResponsesCompactionSession("trip", store, client=client, should_trigger_compaction=lambda _: True)
    agent = Agent(name="forecaster", instructions="Use your tools.", tools=[get_weather])

    async def two_turns():  # one event loop: the client's connections belong to it
        first = await Runner.run(agent, "Weather in Bergen?", session=session)
        history = await store.get_items()
        second = await Runner.run(agent, "And tomorrow?", session=session)
        return first, history, second

    first, history, second = asyncio.run(two_turns())
    assert "rain in" in first.final_output
    assert [item.get("type", "message") for item in history] == ["message", "compaction"]
    assert history[0]["role"] == "user"
    assert second.final_output

    compactions = [row for row in proxy.log.rows() if row["endpoint"] == "responses/compact"]
    assert compactions and all(row["status_code"] == 200 and row["provider"] == "mock" for row in compactions)
    assert compactions[0]["response"].startswith("user: Weather in Bergen?") and compactions[0]["prompt_tokens"] > 0
