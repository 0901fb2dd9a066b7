"""The Responses API end to end through the real openai SDK, on providers that have one.

One proxy for the module: OpenAI and Azure keys pointing at the fake upstream (whose
Responses API keeps the responses it made, like OpenAI's), an alias with a fallback.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest
from openai import AsyncOpenAI, AzureOpenAI, OpenAI
from pydantic import BaseModel

from proxy.pricing import Pricer

from conftest import HEX32, assert_error_shape, fake_key, loads, provider_env, unique
from fake_answers import chat_answer
from fake_failures import SLOW_CHUNKS, slow_answer
from fake_responses import FAKE_INPUT_TOKENS, FAKE_JSON, RESPONSES_USAGE, TOOL_ARGUMENTS

pytestmark = pytest.mark.timeout(60)

OPENAI_KEY = fake_key("sk-test-openai")
AZURE_KEY = fake_key("azure-test")
CONFIG = """
[aliases.sturdy]
routes = ["openai/fail-500-always", "azure/gpt-4o-dep"]
"""


@pytest.fixture(scope="module")
def proxy(module_proxy_factory, fake_upstream_server):
    env = provider_env(fake_upstream_server, openai=OPENAI_KEY, azure=AZURE_KEY)
    return module_proxy_factory(env=env, config=CONFIG)


@pytest.fixture
def client(proxy) -> OpenAI:
    return OpenAI(base_url=proxy.v1, api_key=fake_key(), max_retries=0, timeout=10)


def test_create_round_trip_and_the_row(proxy, client, upstream):
    raw = client.responses.with_raw_response.create(
        model="openai/gpt-4o-mini", instructions="Be brief.", input="Hello responses",
        extra_headers={"X-Study-Tags": "resp"},
    )
    response = raw.parse()
    assert response.output_text == chat_answer("Hello responses")
    assert response.usage.input_tokens == RESPONSES_USAGE["input_tokens"]

    sent = upstream.only()
    assert sent.path == "/v1/responses"
    assert sent.json["model"] == "gpt-4o-mini" and sent.json["input"] == "Hello responses"
    assert sent.headers["authorization"] == f"Bearer {OPENAI_KEY}"

    request_id = raw.headers["x-study-request-id"]
    assert HEX32.match(request_id)
    row = proxy.log.wait_row(request_id)
    assert row["endpoint"] == "responses" and row["provider"] == "openai"
    assert row["model"] == "openai/gpt-4o-mini" and row["upstream_model"] == "gpt-4o-mini"
    assert row["prompt"] == "system: Be brief.\n\nuser: Hello responses"
    assert row["response"] == chat_answer("Hello responses")
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (21, 9, 30)
    metadata = loads(row["metadata"])
    assert metadata["response_id"] == response.id
    assert metadata["cached_tokens"] == 5 and metadata["reasoning_tokens"] == 2
    # priced like chat, the cached input tokens at the cached price
    as_chat = {"prompt_tokens": 21, "completion_tokens": 9, "prompt_tokens_details": {"cached_tokens": 5}}
    expected, _ = Pricer().cost("openai", ["gpt-4o-mini"], as_chat)
    uncached, _ = Pricer().cost("openai", ["gpt-4o-mini"], {**as_chat, "prompt_tokens_details": {}})
    assert row["cost_usd"] == pytest.approx(expected) and expected < uncached
    assert row["stream"] == 0 and row["status_code"] == 200
    assert loads(row["response_json"])["id"] == response.id
    attempts = proxy.log.attempts(request_id)
    assert [(a["provider"], a["url_path"], a["status_code"]) for a in attempts] == [("openai", "/v1/responses", 200)]


class Weather(BaseModel):
    city: str
    celsius: int
    sunny: bool


WEATHER_TOOL = {
    "type": "function", "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_round_trip(proxy, client, upstream, stream):
    model = "openai/tool-call-weather"
    if stream:
        with client.responses.stream(model=model, input="Weather in Paris?", tools=[WEATHER_TOOL]) as events:
            first = events.get_final_response()
    else:
        first = client.responses.create(model=model, input="Weather in Paris?", tools=[WEATHER_TOOL])
    call = next(item for item in first.output if item.type == "function_call")
    assert call.name == "get_weather" and json.loads(call.arguments) == TOOL_ARGUMENTS
    second = client.responses.create(
        model=model, tools=[WEATHER_TOOL], previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"}],
    )
    assert second.output_text == "Fake answer after the tool said: sunny, 21 C"
    rows = [proxy.log.wait_response(first.id), proxy.log.wait_response(second.id)]
    assert rows[0]["response"] == f'[tool call] get_weather({json.dumps(TOOL_ARGUMENTS, separators=(",", ":"))})'
    assert rows[1]["prompt"] == "tool: sunny, 21 C"


def test_parse_structured_output(proxy, client, upstream):
    parsed = client.responses.parse(model="openai/json-weather", input="Weather?", text_format=Weather)
    assert parsed.output_parsed == Weather(**FAKE_JSON)
    sent = upstream.only().json
    assert sent["text"]["format"]["type"] == "json_schema" and sent["text"]["format"]["name"] == "Weather"


def test_stream_is_relayed_event_by_event_and_logged(proxy, client, upstream):
    raw = client.responses.with_raw_response.create(model="openai/slow-stream-r", input="go", stream=True)
    kinds, deltas = [], []
    with raw.parse() as stream:
        for event in stream:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert len(deltas) == SLOW_CHUNKS and "".join(deltas) == slow_answer()

    row = proxy.log.wait_row(raw.headers["x-study-request-id"])
    assert row["endpoint"] == "responses" and row["stream"] == 1 and row["error"] is None
    assert row["response"] == slow_answer()
    assert row["total_tokens"] == RESPONSES_USAGE["total_tokens"]
    # the first delta came after the stream's head, and events were 20 ms apart upstream
    assert 0 < row["ttft_ms"] < row["latency_ms"] - (SLOW_CHUNKS - 5) * 20
    assert loads(row["response_json"])["status"] == "completed"
    assert loads(row["metadata"])["response_id"].startswith("resp_fake")


def test_stream_events_arrive_as_they_are_sent(proxy, upstream):
    """The first delta reaches the client long before the stream ends (no buffering)."""
    with httpx.stream("POST", proxy.v1 + "/responses", timeout=10,
                      json={"model": "openai/slow-stream-t", "input": "x", "stream": True}) as response:
        started = time.monotonic()
        first_delta = None
        for line in response.iter_lines():
            if line == "event: response.output_text.delta" and first_delta is None:
                first_delta = time.monotonic() - started
        total = time.monotonic() - started
    assert first_delta is not None and first_delta < total / 2


def test_a_response_streamed_again_is_relayed_as_it_comes_from_where_the_client_left(proxy, client, upstream):
    """`retrieve(id, stream=True, starting_after=N)`: how a client resumes a background stream."""
    created = client.responses.create(model="openai/slow-stream-again", input="x", background=True)
    started, arrivals = time.monotonic(), []
    events = client.responses.retrieve(created.id, stream=True, starting_after=1)
    for event in events:
        arrivals.append((event.sequence_number, event.type, time.monotonic() - started))
    assert [number for number, _, _ in arrivals] == list(range(2, 2 + len(arrivals)))
    assert arrivals[-1][1] == "response.completed"
    first_delta = next(at for _, kind, at in arrivals if kind == "response.output_text.delta")
    assert first_delta < arrivals[-1][2] / 2  # passed on as it came, not read whole first
    sent = upstream.calls()[-1]
    assert sent.path == f"/v1/responses/{created.id}" and sent.query_params["starting_after"] == "1"
    assert sent.headers["accept"] == "text/event-stream"
    row = proxy.log.wait_row(events.response.headers["x-study-request-id"])
    assert (row["endpoint"], row["stream"], row["status_code"]) == ("responses/retrieve", 1, 200)
    assert row["prompt_tokens"] is None and row["cost_usd"] is None  # the usage was the creating call's
    assert row["response"] == created.output_text and loads(row["metadata"])["response_id"] == created.id


def test_a_stream_cut_after_the_first_byte_ends_with_an_error_event_the_sdk_raises(proxy, client, upstream):
    raw = client.responses.with_raw_response.create(model="openai/cut-stream-r", input="go", stream=True)
    with pytest.raises(openai.APIError, match="upstream stream broke"):
        for _ in raw.parse():
            pass
    row = proxy.log.wait_row(raw.headers["x-study-request-id"])
    assert row["stream"] == 1 and "upstream stream broke" in row["error"]


def test_async_client_and_concurrent_identical_calls_share_one_upstream_call(proxy, upstream):
    model = unique("openai/slow")

    async def main():
        client = AsyncOpenAI(base_url=proxy.v1, api_key="sk-same", max_retries=0, timeout=10)
        return await asyncio.gather(*[
            client.responses.with_raw_response.create(model=model, input="same") for _ in range(4)
        ])

    answers = asyncio.run(main())
    assert upstream.count(model.split("/", 1)[1]) == 1
    caches = sorted(a.headers.get("x-study-cache", "") for a in answers)
    assert caches.count("dedup") == 3
    ids = {a.parse().id for a in answers}
    assert len(ids) == 1
    rows = [proxy.log.wait_row(a.headers["x-study-request-id"]) for a in answers]
    assert sorted(r["cache"] or "" for r in rows) == caches


def test_cache_hit_on_the_second_identical_call(proxy, client, upstream):
    body = {"model": unique("openai/cached"), "input": "cache me"}
    first = client.responses.with_raw_response.create(**body, extra_headers={"X-Study-Cache": "on"})
    second = client.responses.with_raw_response.create(**body, extra_headers={"X-Study-Cache": "on"})
    assert (first.headers["x-study-cache"], second.headers["x-study-cache"]) == ("miss", "hit")
    assert second.parse().output_text == first.parse().output_text
    assert upstream.count(body["model"].split("/", 1)[1]) == 1


def test_retries_before_the_first_byte_then_success(proxy, client, upstream):
    model = unique("fail-503-twice")
    raw = client.responses.with_raw_response.create(model=f"openai/{model}", input="retry", stream=True)
    with raw.parse() as stream:
        kinds = [event.type for event in stream]
    assert kinds[-1] == "response.completed"
    assert raw.headers["x-study-attempts"] == "3"
    proxy.log.wait_row(raw.headers["x-study-request-id"])
    attempts = proxy.log.attempts(raw.headers["x-study-request-id"])
    assert [a["status_code"] for a in attempts] == [503, 503, 200]


def test_fallback_to_the_next_route(proxy, client, upstream):
    raw = client.responses.with_raw_response.create(model="sturdy", input="fall back",
                                                    extra_headers={"X-Study-Retries": "0"})
    assert raw.headers["x-study-provider"] == "azure"
    assert raw.parse().output_text == chat_answer("fall back")
    azure_call = upstream.calls()[-1]
    assert azure_call.path == "/openai/v1/responses" and azure_call.json["model"] == "gpt-4o-dep"
    assert azure_call.headers["api-key"] == AZURE_KEY and "authorization" not in azure_call.headers
    row = proxy.log.wait_row(raw.headers["x-study-request-id"])
    assert row["provider"] == "azure" and row["attempts"] == 2


def test_follow_ups_go_to_the_provider_that_created_the_response(proxy, client, upstream):
    first = client.responses.create(model="azure/gpt-4o-dep", input="first turn")
    # the bare model would go to the default provider (openai): the id pins it to azure
    second = client.responses.create(model="gpt-4o-mini", input="second turn", previous_response_id=first.id)
    sent = upstream.calls()[-1]
    assert sent.path == "/openai/v1/responses" and sent.json["previous_response_id"] == first.id
    assert second.output_text == chat_answer("second turn")

    raw = client.responses.with_raw_response.retrieve(first.id)
    retrieved, ids = raw.parse(), [raw.headers["x-study-request-id"]]
    assert retrieved.id == first.id and retrieved.output_text == first.output_text
    assert upstream.calls()[-1].path == f"/openai/v1/responses/{first.id}"
    raw = client.responses.input_items.with_raw_response.list(first.id)
    ids.append(raw.headers["x-study-request-id"])
    assert [item.content[0].text for item in raw.parse().data] == ["first turn"]
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.cancel(first.id)
    ids.append(caught.value.response.headers["x-study-request-id"])
    ids.append(client.responses.with_raw_response.delete(first.id).headers["x-study-request-id"])
    assert upstream.calls()[-1].method == "DELETE"

    follow_ups = [proxy.log.wait_row(request_id) for request_id in ids]
    assert [r["endpoint"] for r in follow_ups] == [
        "responses/retrieve", "responses/input_items", "responses/cancel", "responses/delete"]
    assert all(r["provider"] == "azure" and loads(r["metadata"])["response_id"] == first.id for r in follow_ups)
    assert [r["status_code"] for r in follow_ups] == [200, 200, 400, 200]
    assert all(r["prompt_tokens"] is None and r["cost_usd"] is None for r in follow_ups)
    assert loads(follow_ups[-1]["metadata"])["deleted"] is True
    rows = proxy.log.rows()
    assert all(OPENAI_KEY not in str(tuple(r)) and AZURE_KEY not in str(tuple(r)) for r in rows)


def test_compact_and_the_input_token_count_go_upstream_with_a_row_each(proxy, client, upstream):
    items = [{"role": "user", "content": "Weather in Oslo?"},
             {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
             {"type": "function_call_output", "call_id": "call_1", "output": "snow"}]
    raw = client.responses.with_raw_response.compact(model="openai/gpt-4o-mini", input=items)
    compacted = raw.parse()
    assert compacted.object == "response.compaction" and [i.type for i in compacted.output] == ["message", "compaction"]
    counted = client.responses.input_tokens.with_raw_response.count(model="openai/gpt-4o-mini", input="Hello")
    assert counted.parse().input_tokens == FAKE_INPUT_TOKENS
    sent = upstream.calls()
    assert [(c.path, c.json["model"]) for c in sent] == [
        ("/v1/responses/compact", "gpt-4o-mini"), ("/v1/responses/input_tokens", "gpt-4o-mini")]
    assert all(c.headers["authorization"] == f"Bearer {OPENAI_KEY}" for c in sent)

    compact_row = proxy.log.wait_row(raw.headers["x-study-request-id"])
    assert compact_row["endpoint"] == "responses/compact" and compact_row["provider"] == "openai"
    assert compact_row["prompt"] == "user: Weather in Oslo?\n\nassistant: [tool call] get_weather({})\n\ntool: snow"
    assert compact_row["response"] == "user: Weather in Oslo?\n\n[compaction]"
    assert (compact_row["prompt_tokens"], compact_row["completion_tokens"]) == (21, 9) and compact_row["cost_usd"] > 0
    count_row = proxy.log.wait_row(counted.headers["x-study-request-id"])
    assert count_row["endpoint"] == "responses/input_tokens" and count_row["response"] == f"[{FAKE_INPUT_TOKENS} input tokens]"
    assert count_row["prompt_tokens"] is None and count_row["cost_usd"] is None


def test_compact_of_an_earlier_response_goes_to_its_provider_and_azure_takes_both(proxy, client, upstream):
    first = client.responses.create(model="azure/gpt-4o-dep", input="first turn")
    client.responses.compact(model="gpt-4o-mini", previous_response_id=first.id)
    classic = AzureOpenAI(azure_endpoint=proxy.url, api_key="k", api_version="2025-04-01-preview", max_retries=0)
    assert classic.responses.input_tokens.count(model="gpt-4o-dep", input="x").input_tokens == FAKE_INPUT_TOKENS
    calls = upstream.calls()[1:]
    assert [(c.path, c.json["model"]) for c in calls] == [
        ("/openai/v1/responses/compact", "gpt-4o-dep"), ("/openai/v1/responses/input_tokens", "gpt-4o-dep")]
    assert calls[0].json["previous_response_id"] == first.id
    assert all(c.headers["api-key"] == AZURE_KEY for c in calls)


def test_compact_and_count_answer_whole(proxy, upstream):
    for action in ("compact", "input_tokens"):
        response = httpx.post(f"{proxy.v1}/responses/{action}", json={"model": "openai/x", "input": "x", "stream": True})
        assert response.status_code == 400 and assert_error_shape(response.json())["param"] == "stream"
        assert proxy.log.wait_row(response.headers["x-study-request-id"])["endpoint"] == f"responses/{action}"
    assert upstream.count() == 0


def test_an_unknown_id_goes_to_the_default_provider(proxy, client, upstream):
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.retrieve("resp_unknown123")
    assert upstream.only().path == "/v1/responses/resp_unknown123"
    row = proxy.log.wait_row(caught.value.response.headers["x-study-request-id"])
    assert row["endpoint"] == "responses/retrieve" and row["status_code"] == 404


def test_a_response_id_that_is_no_id_never_reaches_upstream(proxy, upstream):
    response = httpx.get(proxy.v1 + "/responses/..%2F..%2Fadmin", timeout=5)
    assert response.status_code == 404
    assert_error_shape(response.json())
    assert upstream.count() == 0


def test_azure_clients_call_responses_on_both_inbound_paths(proxy, upstream):
    classic = AzureOpenAI(azure_endpoint=proxy.url, api_key="k", api_version="2025-04-01-preview", max_retries=0)
    raw = classic.responses.with_raw_response.create(model="gpt-4o-dep", input="from azure")
    assert raw.parse().output_text == chat_answer("from azure")
    assert raw.http_request.url.path == "/openai/responses"
    v1 = OpenAI(base_url=proxy.url + "/openai/v1", api_key="k", max_retries=0)
    second = v1.responses.with_raw_response.create(model="gpt-4o-dep", input="from v1")
    assert second.parse().output_text == chat_answer("from v1")
    assert [c.path for c in upstream.calls()] == ["/openai/v1/responses"] * 2
    assert all(c.json["model"] == "gpt-4o-dep" for c in upstream.calls())
    rows = [proxy.log.wait_row(r.headers["x-study-request-id"]) for r in (raw, second)]
    assert [(r["provider"], r["model"]) for r in rows] == [("azure", "azure/gpt-4o-dep")] * 2


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "no model"}, "model"),
        ({"model": "openai/gpt-4o-mini"}, "input"),
        ({"model": "openai/gpt-4o-mini", "input": 42}, "input"),
        ({"model": "openai/gpt-4o-mini", "input": ["not an item"]}, "input[0]"),
        ({"model": "openai/gpt-4o-mini", "input": "x", "instructions": ["no"]}, "instructions"),
        ({"model": "openai/gpt-4o-mini", "input": "x", "stream": "yes"}, "stream"),
        ({"model": "nobody/x", "input": "x", "previous_response_id": "resp_nope"}, "previous_response_id"),
    ],
)
def test_bad_requests_get_openai_shaped_errors_and_a_row(proxy, upstream, body, param):
    response = httpx.post(proxy.v1 + "/responses", json=body, timeout=5)
    assert response.status_code in (400, 404), response.text
    if param != "previous_response_id":  # the upstream itself refuses an id it does not know
        assert assert_error_shape(response.json())["param"] == param
        assert upstream.count() == 0
    row = proxy.log.wait_row(response.headers["x-study-request-id"])
    assert row["endpoint"] == "responses" and row["status_code"] == response.status_code
