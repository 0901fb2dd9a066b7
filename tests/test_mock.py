"""The mock provider's answers, called directly: tools, structured outputs, the Responses API and
embeddings, each parsed with the openai SDK's own types so that a shape error shows here."""

from __future__ import annotations

import asyncio
import base64
import struct

import jsonschema
import orjson
import pydantic
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.create_embedding_response import CreateEmbeddingResponse
from openai.types.responses import Response, ResponseStreamEvent

from proxy.config_sections import ProviderConfig
from proxy.providers.mock import MockProvider
from proxy.providers.mock_embeddings import vector
from proxy.responses.replay import replayed_events

MOCK = MockProvider(ProviderConfig("mock", "mock", "mock://"))
STREAM_EVENT = pydantic.TypeAdapter(ResponseStreamEvent)

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TIME = {"type": "object", "properties": {"zone": {"type": "string", "minLength": 3}}, "required": ["zone"]}
CHAT_TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather now", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "parameters": TIME}},
]
RESPONSES_TOOLS = [
    {"type": "function", "name": "get_weather", "parameters": WEATHER, "strict": True},
    {"type": "function", "name": "get_time", "parameters": TIME},
]
ANSWER_SCHEMA = {
    "type": "object",
    "properties": {
        "summary": {"type": "string"},
        "items": {"type": "array", "items": {"type": "integer"}},
        "level": {"type": "integer", "minimum": 2},
    },
    "required": ["summary", "items", "level"],
    "additionalProperties": False,
}


def send(endpoint: str, payload: dict) -> tuple[int, bytes]:
    async def go() -> tuple[int, bytes]:
        response = await MOCK.send(None, MOCK.build(endpoint, "echo", {"model": "echo", **payload}))
        return response.status_code, b"".join([chunk async for chunk in response.iter_bytes()])

    return asyncio.run(go())


def chat(**payload) -> ChatCompletion:
    status, body = send("chat/completions", payload)
    assert status == 200, body
    return ChatCompletion.model_validate_json(body)


def chat_chunks(**payload) -> list[ChatCompletionChunk]:
    status, body = send("chat/completions", {**payload, "stream": True})
    assert status == 200, body
    blocks = [b for b in body.decode().split("\n\n") if b.strip()]
    assert blocks[-1] == "data: [DONE]"
    return [ChatCompletionChunk.model_validate_json(b.removeprefix("data: ")) for b in blocks[:-1]]


def responses(**payload) -> Response:
    status, body = send("responses", payload)
    assert status == 200, body
    return Response.model_validate_json(body)


def responses_events(**payload) -> list:
    status, body = send("responses", {**payload, "stream": True})
    assert status == 200, body
    events = []
    for block in body.decode().split("\n\n"):
        if not block.strip():
            continue
        event_line, data_line = block.split("\n")
        assert data_line.startswith("data: ") and "[DONE]" not in data_line
        event = STREAM_EVENT.validate_json(data_line.removeprefix("data: "))
        assert event_line == f"event: {event.type}"
        events.append(event)
    return events


def user(text: str) -> list[dict]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]


# -- Chat Completions ------------------------------------------------------------------


def test_plain_chat_echoes_and_counts_words():
    answer = chat(messages=user("hi there"))
    assert answer.choices[0].message.content == "Mock answer to: hi there"
    assert answer.choices[0].finish_reason == "stop" and answer.choices[0].message.tool_calls is None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (4, 5)


def test_streamed_chat_starts_with_the_role_and_ends_with_stop():
    chunks = chat_chunks(messages=user("a b c"))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in chunks[1:])
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Mock answer to: a b c"
    assert chunks[-1].choices[0].finish_reason == "stop"


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}, "auto", None])
def test_chat_tool_call_has_valid_arguments(choice):
    extra = {} if choice is None else {"tool_choice": choice}
    answer = chat(messages=user("Weather in Paris?"), tools=CHAT_TOOLS, **extra)
    choice0 = answer.choices[0]
    assert choice0.finish_reason == "tool_calls" and choice0.message.content is None
    (call,) = choice0.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function" and call.function.name == "get_weather"
    arguments = orjson.loads(call.function.arguments)
    jsonschema.validate(arguments, WEATHER)
    assert arguments == {"city": "Weather in Paris?", "unit": "celsius"}  # the user's words in the first string


def test_named_tool_choice_calls_that_tool():
    answer = chat(messages=user("now?"), tools=CHAT_TOOLS, tool_choice={"type": "function", "function": {"name": "get_time"}})
    call = answer.choices[0].message.tool_calls[0]
    assert call.function.name == "get_time"
    jsonschema.validate(orjson.loads(call.function.arguments), TIME)


def test_a_named_tool_that_is_not_offered_is_a_400():
    status, body = send("chat/completions", {"messages": user("x"), "tools": CHAT_TOOLS,
                                             "tool_choice": {"type": "function", "function": {"name": "nope"}}})
    assert status == 400
    error = orjson.loads(body)["error"]
    assert error["param"] == "tool_choice" and "nope" in error["message"]


def _after_weather_call(output: str) -> list[dict]:
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    return [
        *user("Weather in Paris?"),
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": output},
    ]


def test_auto_after_a_tool_result_answers_text_quoting_it():
    answer = chat(messages=_after_weather_call("sunny, 21 C"), tools=CHAT_TOOLS)
    assert answer.choices[0].finish_reason == "stop"
    assert answer.choices[0].message.content == "Mock answer to: Weather in Paris? (tool said: sunny, 21 C)"


def test_required_after_a_tool_result_calls_the_next_uncalled_tool():
    answer = chat(messages=_after_weather_call("sunny"), tools=CHAT_TOOLS, tool_choice="required")
    assert answer.choices[0].message.tool_calls[0].function.name == "get_time"


def test_tool_choice_none_answers_text():
    answer = chat(messages=user("hello"), tools=CHAT_TOOLS, tool_choice="none")
    assert answer.choices[0].message.content == "Mock answer to: hello"


def test_allowed_tools_narrow_the_choice():
    choice = {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [
        {"type": "function", "function": {"name": "get_time"}}]}}
    answer = chat(messages=user("x"), tools=CHAT_TOOLS, tool_choice=choice)
    assert answer.choices[0].message.tool_calls[0].function.name == "get_time"


def test_streamed_tool_call_id_and_name_first_then_argument_pieces():
    chunks = chat_chunks(messages=user("Weather in a rather long city name?"), tools=CHAT_TOOLS, tool_choice="required")
    first = chunks[0].choices[0].delta
    assert first.role == "assistant"
    head = first.tool_calls[0]
    assert head.id.startswith("call_") and head.function.name == "get_weather" and head.function.arguments == ""
    pieces = [c.choices[0].delta.tool_calls[0] for c in chunks[1:-1]]
    assert len(pieces) > 1 and all(p.id is None and p.function.name is None for p in pieces)
    jsonschema.validate(orjson.loads("".join(p.function.arguments for p in pieces)), WEATHER)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_json_schema_response_format_gives_a_valid_instance_with_the_text():
    response_format = {"type": "json_schema", "json_schema": {"name": "answer", "schema": ANSWER_SCHEMA, "strict": True}}
    answer = chat(messages=user("sum up"), response_format=response_format)
    value = orjson.loads(answer.choices[0].message.content)
    jsonschema.validate(value, ANSWER_SCHEMA)
    assert value == {"summary": "Mock answer to: sum up", "items": [], "level": 2}


def test_json_schema_after_a_tool_result_quotes_it_inside_the_json():
    response_format = {"type": "json_schema", "json_schema": {"name": "answer", "schema": ANSWER_SCHEMA}}
    answer = chat(messages=_after_weather_call("rain"), tools=CHAT_TOOLS, response_format=response_format)
    assert orjson.loads(answer.choices[0].message.content)["summary"].endswith("(tool said: rain)")


def test_json_object_gives_an_answer_object_or_the_schema_the_prompt_shows():
    answer = chat(messages=user("hi"), response_format={"type": "json_object"})
    assert orjson.loads(answer.choices[0].message.content) == {"answer": "Mock answer to: hi"}
    shown = [{"role": "system", "content": f"Answer with JSON matching this schema:\n\n{orjson.dumps(ANSWER_SCHEMA).decode()}\n"},
             {"role": "user", "content": "sum up {not json"}]
    answer = chat(messages=shown, response_format={"type": "json_object"})
    jsonschema.validate(orjson.loads(answer.choices[0].message.content), ANSWER_SCHEMA)


def test_an_impossible_schema_is_a_400_naming_the_field():
    impossible = {"type": "integer", "minimum": 3, "maximum": 1}
    response_format = {"type": "json_schema", "json_schema": {"name": "x", "schema": impossible}}
    status, body = send("chat/completions", {"messages": user("x"), "response_format": response_format})
    assert status == 400 and orjson.loads(body)["error"]["param"] == "response_format"


def test_legacy_completions_still_echo():
    status, body = send("completions", {"prompt": "Say this"})
    answer = orjson.loads(body)
    assert status == 200 and answer["choices"][0]["text"] == "Mock answer to: Say this"
    assert answer["usage"] == {"prompt_tokens": 2, "completion_tokens": 5, "total_tokens": 7}


def test_n_answers_that_many_choices_each_with_its_own_tool_call():
    answer = chat(messages=user("Weather in Oslo?"), tools=CHAT_TOOLS, n=3)
    assert [c.index for c in answer.choices] == [0, 1, 2]
    ids = {c.message.tool_calls[0].id for c in answer.choices}
    assert len(ids) == 3 and all(c.finish_reason == "tool_calls" for c in answer.choices)
    one = chat(messages=user("Weather in Oslo?"), tools=CHAT_TOOLS)
    assert answer.usage.prompt_tokens == one.usage.prompt_tokens
    assert answer.usage.completion_tokens == 3 * one.usage.completion_tokens
    status, body = send("completions", {"prompt": "Say this", "n": 2})
    assert status == 200 and [c["index"] for c in orjson.loads(body)["choices"]] == [0, 1]


def test_streamed_n_choices_each_start_with_the_role_and_end_with_a_reason():
    chunks = chat_chunks(messages=user("a b"), n=2, stream_options={"include_usage": True})
    by_index: dict[int, list] = {}
    for chunk in chunks[:-1]:
        (choice,) = chunk.choices
        by_index.setdefault(choice.index, []).append(choice)
    assert sorted(by_index) == [0, 1]
    for pieces in by_index.values():
        assert pieces[0].delta.role == "assistant" and pieces[-1].finish_reason == "stop"
        assert "".join(p.delta.content or "" for p in pieces) == "Mock answer to: a b"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 2 * 5


@pytest.mark.parametrize("n", [0, 129, "2", True, 1.5])
def test_n_out_of_bounds_or_not_an_integer_is_a_400(n):
    status, body = send("chat/completions", {"messages": user("x"), "n": n})
    assert status == 400 and orjson.loads(body)["error"]["param"] == "n"


REFUSED_PARAMETERS = [
    ("chat/completions", "temperature", 2.5), ("chat/completions", "temperature", "hot"), ("chat/completions", "top_p", -0.1),
    ("chat/completions", "max_tokens", 0), ("chat/completions", "max_completion_tokens", 1.5),
    ("chat/completions", "presence_penalty", 3), ("chat/completions", "seed", "s"), ("completions", "max_tokens", -1),
    ("responses", "max_output_tokens", "many"), ("responses", "max_output_tokens", 15), ("responses", "temperature", False),
    ("responses", "top_logprobs", 21), ("responses", "max_tool_calls", 0), ("responses", "include", "reasoning"),
    ("responses", "reasoning", "low"), ("responses", "store", "yes"), ("responses", "background", 1),
    ("responses", "truncation", "sideways"), ("responses", "parallel_tool_calls", "no"),
    ("chat/completions", "store", "true"), ("chat/completions", "reasoning_effort", 3), ("chat/completions", "user", 7),
    ("chat/completions", "modalities", ["text", "audio"]),
    ("chat/completions", "metadata", {str(i): "v" for i in range(17)}), ("responses", "metadata", {"k" * 65: "v"}),
    ("responses", "metadata", ["k", "v"]),
]


@pytest.mark.parametrize(("endpoint", "field", "value"), REFUSED_PARAMETERS)
def test_sampling_parameters_openai_would_refuse_are_a_400_naming_them(endpoint, field, value):
    asked = {"chat/completions": {"messages": user("x")}, "completions": {"prompt": "x"}, "responses": {"input": "x"}}
    status, body = send(endpoint, {**asked[endpoint], field: value})
    error = orjson.loads(body)["error"]
    assert status == 400 and error["param"] == field and field in error["message"]


@pytest.mark.parametrize(("endpoint", "value"), [("responses", 1), ("chat/completions", "v" * 513), ("responses", {"a": "b"})])
def test_a_metadata_value_openai_would_refuse_is_a_400_naming_its_key(endpoint, value):
    asked = {"messages": user("x")} if endpoint == "chat/completions" else {"input": "x"}
    status, body = send(endpoint, {**asked, "metadata": {"fine": "v" * 512, "k": value}})
    assert status == 400 and orjson.loads(body)["error"]["param"] == "metadata.k"
    assert send(endpoint, {**asked, "metadata": {str(i): "v" for i in range(16)}})[0] == 200


def test_sampling_parameters_within_bounds_or_null_are_taken():
    assert chat(messages=user("x"), temperature=2, top_p=0, max_tokens=1, seed=-5, presence_penalty=None).choices
    assert chat(messages=user("x"), modalities=["text"]).choices[0].message.content == "Mock answer to: x"
    assert responses(input="x", max_output_tokens=16, temperature=0.0, top_p=1).output_text == "Mock answer to: x"
    taken = responses(input="x", include=["reasoning.encrypted_content"], reasoning={"effort": "low"}, store=False,
                      truncation="auto", service_tier="flex", max_tool_calls=3)
    assert taken.output_text == "Mock answer to: x"
    status, body = send("responses", {"input": "x", "include": ["reasoning.encrypted_content", 5]})
    assert status == 400 and orjson.loads(body)["error"]["param"] == "include[1]"


def test_an_answer_longer_than_max_tokens_stops_there_with_finish_reason_length():
    cut = chat(messages=user("one two three four five"), max_tokens=4, n=2)
    assert [c.message.content for c in cut.choices] == ["Mock answer to: one"] * 2
    assert [c.finish_reason for c in cut.choices] == ["length"] * 2
    assert cut.usage.completion_tokens == 8  # 4 for each choice
    both = chat(messages=user("one two three"), max_tokens=5, max_completion_tokens=3)  # the smaller wins
    assert (both.choices[0].message.content, both.usage.completion_tokens) == ("Mock answer to:", 3)
    assert chat(messages=user("one"), max_tokens=4).choices[0].finish_reason == "stop"  # fits: not cut

    chunks = chat_chunks(messages=user("one two three four five"), max_tokens=4, stream_options={"include_usage": True})
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Mock answer to: one"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"

    called = chat(messages=user("Weather in Rome?"), tools=[{"type": "function", "function": {
        "name": "get_weather", "parameters": WEATHER}}], tool_choice="required", max_tokens=1)
    [call] = called.choices[0].message.tool_calls
    assert called.choices[0].finish_reason == "length" and called.usage.completion_tokens == 1
    with pytest.raises(ValueError):
        orjson.loads(call.function.arguments)  # cut mid-way, as a model's are

    status, body = send("completions", {"prompt": "one two", "max_tokens": 0})
    assert status == 200 and orjson.loads(body)["choices"][0] == {
        "index": 0, "text": "", "finish_reason": "length", "logprobs": None}


def test_an_answer_ends_before_its_first_stop_sequence():
    stopped = chat(messages=user("red green blue"), stop=["blue", " green"])
    assert (stopped.choices[0].message.content, stopped.choices[0].finish_reason) == ("Mock answer to: red", "stop")
    assert stopped.usage.completion_tokens == 4
    assert chat(messages=user("red"), stop="answer").choices[0].message.content == "Mock "
    assert chat(messages=user("red"), stop=["absent"]).choices[0].message.content == "Mock answer to: red"
    chunks = chat_chunks(messages=user("red green blue"), stop="green", max_tokens=3)  # the limit comes first
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Mock answer to:"
    status, body = send("completions", {"prompt": "red green", "stop": "green"})
    assert orjson.loads(body)["choices"][0]["text"] == "Mock answer to: red "


@pytest.mark.parametrize("stop", [5, [""], ["a", 1], ["a", "b", "c", "d", "e"], {"a": 1}])
def test_stop_sequences_openai_would_refuse_are_a_400(stop):
    status, body = send("chat/completions", {"messages": user("x"), "stop": stop})
    assert status == 400 and orjson.loads(body)["error"]["param"] == "stop"


def test_chat_logprobs_are_certain_tokens_with_placeholder_alternatives():
    whole = chat(messages=user("one two"), logprobs=True, top_logprobs=2)
    tokens = whole.choices[0].logprobs.content
    assert "".join(t.token for t in tokens) == whole.choices[0].message.content == "Mock answer to: one two"
    assert all(t.logprob == 0.0 and bytes(t.bytes) == t.token.encode() for t in tokens)
    assert [[alt.token for alt in t.top_logprobs] for t in tokens[:1]] == [["Mock", "<alt1>"]]
    assert tokens[0].top_logprobs[1].logprob == -9999.0
    assert chat(messages=user("x")).choices[0].logprobs is None  # not asked for
    assert chat(messages=user("x"), logprobs=True).choices[0].logprobs.content[0].top_logprobs == []

    chunks = chat_chunks(messages=user("one two"), logprobs=True)
    streamed = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert [t.token for t in streamed] == [t.token for t in tokens]

    called = chat(messages=user("Weather in Rome?"), logprobs=True, tool_choice="required",
                  tools=[{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}])
    assert called.choices[0].logprobs.content is None  # a tool call has no content tokens


def test_responses_logprobs_come_when_include_asks_for_them():
    asked = {"include": ["message.output_text.logprobs"], "top_logprobs": 2}
    whole = responses(input="one two", **asked)
    part = whole.output[0].content[0]
    assert "".join(t.token for t in part.logprobs) == part.text == "Mock answer to: one two"
    assert [alt.token for alt in part.logprobs[0].top_logprobs] == ["Mock", "<alt1>"]
    assert responses(input="one two", top_logprobs=2).output[0].content[0].logprobs == []  # not included
    events = responses_events(input="one two", **asked)
    deltas = [t.token for e in events if e.type == "response.output_text.delta" for t in e.logprobs]
    assert deltas == [t.token for t in part.logprobs]
    [done] = [e for e in events if e.type == "response.output_text.done"]
    assert [t.token for t in done.logprobs] == deltas


def test_legacy_completions_logprobs_are_parallel_lists():
    status, body = send("completions", {"prompt": "one two", "logprobs": 2})
    logprobs = orjson.loads(body)["choices"][0]["logprobs"]
    assert logprobs["tokens"] == ["Mock", " answer", " to:", " one", " two"]
    assert logprobs["token_logprobs"] == [0.0] * 5 and logprobs["text_offset"] == [0, 4, 11, 15, 19]
    assert logprobs["top_logprobs"][0] == {"Mock": 0.0, "<alt1>": -9999.0}
    status, body = send("completions", {"prompt": "one two", "logprobs": 0, "stream": True})
    chunks = [orjson.loads(b.removeprefix(b"data: ")) for b in body.split(b"\n\n") if b.startswith(b"data: {")]
    streamed = [c["choices"][0]["logprobs"] for c in chunks if c["choices"][0]["logprobs"]]
    assert [(lp["tokens"][0], lp["text_offset"][0], lp["top_logprobs"]) for lp in streamed][:2] == [
        ("Mock", 0, [{}]), (" answer", 4, [{}])]
    for wrong in (6, -1, True, "2"):
        status, body = send("completions", {"prompt": "x", "logprobs": wrong})
        assert status == 400 and orjson.loads(body)["error"]["param"] == "logprobs"


@pytest.mark.parametrize(("payload", "param"), [
    ({"top_logprobs": 2}, "top_logprobs"), ({"logprobs": False, "top_logprobs": 2}, "top_logprobs"),
    ({"logprobs": "yes"}, "logprobs"), ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
])
def test_logprobs_asked_for_wrongly_are_a_400(payload, param):
    status, body = send("chat/completions", {"messages": user("x"), **payload})
    assert status == 400 and orjson.loads(body)["error"]["param"] == param


def test_answers_are_bounded_as_a_models_are_whatever_the_prompt():
    long = " ".join(["w"] * 5000)
    capped = chat(messages=[{"role": "user", "content": long}])
    assert (capped.usage.completion_tokens, capped.choices[0].finish_reason) == (4096, "length")
    assert chat(messages=[{"role": "user", "content": long}], max_tokens=10).usage.completion_tokens == 10
    # n choices and logprob alternatives share one call's bound: 65,536 // (128 × 21) = 24 tokens each
    many = chat(messages=[{"role": "user", "content": long}], n=128, logprobs=True, top_logprobs=20)
    assert {c.finish_reason for c in many.choices} == {"length"} and many.usage.completion_tokens == 128 * 24
    assert responses(input=long).usage.output_tokens == 4096


def test_a_responses_answer_over_max_output_tokens_is_incomplete():
    words = " ".join(f"w{i}" for i in range(30))
    cut = responses(input=words, max_output_tokens=16)
    assert cut.status == "incomplete" and cut.incomplete_details.reason == "max_output_tokens"
    assert cut.output_text == "Mock answer to: " + " ".join(f"w{i}" for i in range(13))
    assert cut.usage.output_tokens == 16 and cut.output[0].status == "incomplete"  # the item too, as OpenAI marks it
    events = responses_events(input=words, max_output_tokens=16)
    assert events[-1].type == "response.incomplete" and events[-1].response.output_text == cut.output_text
    assert responses(input="short", max_output_tokens=16).status == "completed"


BAD_TOOLS = [
    ("chat/completions", [{"type": "function", "function": {"parameters": WEATHER}}], "tools[0].function.name"),
    ("chat/completions", [CHAT_TOOLS[0], {"type": "function", "function": {"name": "a b"}}], "tools[1].function.name"),
    ("chat/completions", [{"type": "function"}], "tools[0].function.name"),
    ("responses", [{"type": "function", "parameters": WEATHER}], "tools[0].name"),
    ("responses", [{"type": "function", "name": "x" * 65}], "tools[0].name"),
]


@pytest.mark.parametrize(("endpoint", "tools", "param"), BAD_TOOLS)
def test_a_function_tool_without_a_valid_name_is_a_400_naming_it(endpoint, tools, param):
    asked = {"messages": user("x")} if endpoint == "chat/completions" else {"input": "x"}
    status, body = send(endpoint, {**asked, "tools": tools})
    error = orjson.loads(body)["error"]
    assert status == 400 and error["param"] == param and error["type"] == "invalid_request_error"


BAD_TURNS = [
    ("chat/completions", {"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ("chat/completions", {"messages": [{"role": "user"}]}, "messages[0].content"),
    ("chat/completions", {"messages": [{"role": "assistant", "content": None}]}, "messages[0].content"),
    ("chat/completions", {"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ("chat/completions", {"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages[0].content[0].text"),
    ("chat/completions", {"messages": [{"role": "user", "content": ["x"]}]}, "messages[0].content[0]"),
    ("chat/completions", {"messages": [{"role": "user", "content": [{"type": "input_text", "text": "x"}]}]},
     "messages[0].content[0].type"),
    ("responses", {"input": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]}, "input[0].content[0].type"),
    ("responses", {"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
    ("chat/completions", {"messages": [*user("x"), {"role": "tool", "content": "ok"}]}, "messages[2].tool_call_id"),
    ("chat/completions", {"messages": user("x"), "response_format": {"type": "xml"}}, "response_format.type"),
    ("chat/completions", {"messages": user("x"), "tools": []}, "tools"),
    ("chat/completions", {"messages": user("x"), "tool_choice": "required"}, "tool_choice"),
    ("responses", {"input": "x", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
    ("responses", {"input": [{"role": "user", "content": "x"}, {"type": "telepathy"}]}, "input[1].type"),
    ("responses", {"input": [{"type": "message", "role": "tool", "content": "x"}]}, "input[0].role"),
    ("responses", {"input": [{"type": "message", "content": "x"}]}, "input[0].role"),
    ("responses", {"input": "x", "prompt": {"id": "pmpt_123"}}, "prompt"),
    ("responses", {"input": "x", "conversation": "conv_123"}, "conversation"),
    ("responses", {"input": "x", "tools": [{"type": "web_search"}], "tool_choice": "required"}, "tool_choice"),
    ("responses", {"input": "x", "tools": [{"type": "web_search"}], "tool_choice": {"type": "web_search"}}, "tool_choice"),
    ("chat/completions", {"messages": user("x"), "tools": [{"type": "custom", "custom": {"name": "run"}}],
                          "tool_choice": "required"}, "tool_choice"),
]


@pytest.mark.parametrize(("endpoint", "payload", "param"), BAD_TURNS)
def test_a_role_or_an_input_item_no_model_knows_is_a_400_naming_it(endpoint, payload, param):
    status, body = send(endpoint, payload)
    error = orjson.loads(body)["error"]
    assert status == 400 and error["param"] == param
    assert param in error["message"]


CALL = {"id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
ASKED = {"role": "assistant", "content": None, "tool_calls": [CALL]}
FUNCTION_CALL = {"type": "function_call", "call_id": "call_1", "name": "get_time", "arguments": "{}"}
UNPAIRED_CALLS = [
    ("chat/completions", [*user("x"), {"role": "tool", "tool_call_id": "call_1", "content": "ok"}],
     "messages[2].role", "must be a response to a preceding message with 'tool_calls'"),
    ("chat/completions", [*user("x"), ASKED, {"role": "tool", "tool_call_id": "call_2", "content": "ok"}],
     "messages[3].role", "must be a response to a preceding message"),
    ("chat/completions", [*user("x"), ASKED], "messages[2].role", "did not have response messages: call_1"),
    ("chat/completions", [*user("x"), ASKED, *user("and?")], "messages[2].role", "did not have response messages: call_1"),
    ("chat/completions", [*user("x"), {**ASKED, "tool_calls": [{"type": "function", "function": {"name": "f"}}]}],
     "messages[2].tool_calls[0].id", "Missing required parameter"),
    ("responses", [{"type": "function_call_output", "call_id": "call_9", "output": "x"}],
     "input", "No tool call found for function call output with call_id call_9."),
    ("responses", [{"role": "user", "content": "x"}, FUNCTION_CALL], "input", "No tool output found for function call call_1."),
]


@pytest.mark.parametrize(("endpoint", "turns", "param", "said"), UNPAIRED_CALLS)
def test_a_tool_result_without_its_call_or_a_call_without_its_result_is_openais_400(endpoint, turns, param, said):
    field = "messages" if endpoint == "chat/completions" else "input"
    status, body = send(endpoint, {field: turns})
    error = orjson.loads(body)["error"]
    assert status == 400 and error["param"] == param and said in error["message"]


def test_answered_tool_calls_pass_in_both_apis():
    answered = [*user("x"), {**ASKED, "tool_calls": [CALL, {**CALL, "id": "call_2"}]},
                {"role": "tool", "tool_call_id": "call_2", "content": "b"}, {"role": "tool", "tool_call_id": "call_1", "content": "a"}]
    assert send("chat/completions", {"messages": answered})[0] == 200
    items = [{"role": "user", "content": "x"}, FUNCTION_CALL, {"type": "function_call_output", "call_id": "call_1", "output": "a"}]
    assert send("responses", {"input": items})[0] == 200


def test_an_assistant_turn_of_tool_calls_alone_and_content_parts_are_taken():
    call = {"id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
    messages = [{"role": "user", "content": [{"type": "text", "text": "now?"}, {"type": "image_url", "image_url": {"url": "x"}}]},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_1", "content": "noon"}]
    answer = chat(messages=messages, tools=CHAT_TOOLS, response_format={"type": "text"})
    text = answer.choices[0].message.content
    assert text.startswith("Mock answer to: now?") and text.endswith("(tool said: noon)")


def test_input_items_the_mock_does_not_read_are_taken_as_said():
    items = [{"type": "reasoning", "id": "rs_1", "summary": []}, {"role": "user", "content": "go on"}]
    assert responses(input=items).output_text == "Mock answer to: go on"


# -- Responses API -----------------------------------------------------------------------


def test_responses_text_answer_and_usage():
    response = responses(input="hello there", instructions="Be brief.")
    assert response.status == "completed" and response.object == "response"
    assert response.output_text == "Mock answer to: hello there"
    assert response.output[0].type == "message" and response.output[0].role == "assistant"
    assert response.instructions == "Be brief."
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.total_tokens) == (4, 5, 9)


def test_responses_input_items_parts_and_the_last_user_turn():
    items = [
        {"role": "user", "content": "first question"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "an answer"}]},
        {"type": "message", "role": "user",
         "content": [{"type": "input_text", "text": "second"}, {"type": "input_text", "text": "part"}]},
    ]
    assert responses(input=items).output_text == "Mock answer to: second\npart"


def test_responses_stream_is_the_full_event_sequence():
    events = responses_events(input="one two")
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert deltas == ["Mock", " answer", " to:", " one", " two"]
    assert {"response.output_text.done", "response.content_part.done", "response.output_item.done"} <= set(types)
    final = events[-1].response
    assert final.output_text == "Mock answer to: one two" and final.usage.output_tokens == 5


def test_responses_tool_call_is_a_function_call_item():
    response = responses(input="Weather in Oslo?", tools=RESPONSES_TOOLS, tool_choice="required")
    (item,) = response.output
    assert item.type == "function_call" and item.name == "get_weather" and item.call_id.startswith("call_")
    jsonschema.validate(orjson.loads(item.arguments), WEATHER)
    named = responses(input="x", tools=RESPONSES_TOOLS, tool_choice={"type": "function", "name": "get_time"})
    assert named.output[0].name == "get_time"


def test_hosted_tools_are_never_called_and_functions_beside_them_are():
    searched = responses(input="news?", tools=[{"type": "web_search"}])
    assert searched.output_text == "Mock answer to: news?"
    called = responses(input="Weather in Oslo?", tools=[{"type": "web_search"}, *RESPONSES_TOOLS], tool_choice="required")
    assert [item.name for item in called.output] == ["get_weather"]


def test_compaction_keeps_the_users_messages_and_folds_the_rest_into_one_item():
    items = [
        {"role": "user", "content": "Weather in Oslo?"},
        {"type": "function_call", "call_id": "call_9", "name": "get_weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_9", "output": "snow"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "And Rome?"}]},
    ]
    status, body = send("responses/compact", {"input": items})
    compacted = orjson.loads(body)  # user messages in `output`, as OpenAI's: not a strict ResponseOutputMessage
    assert status == 200 and compacted["object"] == "response.compaction"
    kept, folded = compacted["output"][:-1], compacted["output"][-1]
    assert [(m["role"], m["content"]) for m in kept] == [
        ("user", [{"type": "input_text", "text": "Weather in Oslo?"}]), ("user", items[3]["content"])]
    assert folded["type"] == "compaction" and orjson.loads(base64.b64decode(folded["encrypted_content"])) == items[1:3]
    assert compacted["usage"]["input_tokens"] == 6 and compacted["usage"]["output_tokens"] > 0


def test_the_input_token_count_is_what_a_response_would_count():
    status, body = send("responses/input_tokens", {"input": "three small words", "instructions": "Be brief."})
    assert status == 200 and orjson.loads(body) == {"object": "response.input_tokens", "input_tokens": 5}
    assert responses(input="three small words", instructions="Be brief.").usage.input_tokens == 5


def test_responses_streamed_tool_call():
    events = responses_events(input="Weather in Oslo?", tools=RESPONSES_TOOLS)
    added = next(e for e in events if e.type == "response.output_item.added")
    assert added.item.type == "function_call" and added.item.name == "get_weather"
    pieces = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert done.arguments == pieces
    jsonschema.validate(orjson.loads(pieces), WEATHER)
    assert events[-1].response.output[0].type == "function_call"


@pytest.mark.parametrize("tools", [None, RESPONSES_TOOLS])
def test_a_replay_from_the_final_response_is_the_stream_the_mock_sent(tools):
    """proxy/responses/replay.py rebuilds a stored response's events; for the mock's answers,
    text and tool calls alike, they are the events it streamed, number for number."""
    sent = responses_events(input="Weather in a rather long city name?", **({"tools": tools} if tools else {}))
    replayed = [STREAM_EVENT.validate_python(event) for event in replayed_events(sent[-1].response.model_dump())]
    assert [e.model_dump(exclude={"response"}) for e in replayed] == [e.model_dump(exclude={"response"}) for e in sent]


def test_responses_function_call_output_ends_the_round_trip():
    items = [
        {"role": "user", "content": "Weather in Oslo?"},
        {"type": "function_call", "call_id": "call_9", "name": "get_weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_9", "output": "snow"},
    ]
    response = responses(input=items, tools=RESPONSES_TOOLS, previous_response_id="resp_ignored")
    assert response.output_text == "Mock answer to: Weather in Oslo? (tool said: snow)"
    assert responses(input=items, tools=RESPONSES_TOOLS, tool_choice="required").output[0].name == "get_time"


def test_responses_text_format_json_schema_and_json_object():
    text = {"format": {"type": "json_schema", "name": "answer", "schema": ANSWER_SCHEMA, "strict": True}}
    response = responses(input="sum up", text=text)
    jsonschema.validate(orjson.loads(response.output_text), ANSWER_SCHEMA)
    assert response.text.format.type == "json_schema"
    plain = responses(input="sum up", text={"format": {"type": "json_object"}})
    assert orjson.loads(plain.output_text) == {"answer": "Mock answer to: sum up"}
    for schema in ({"schema": False}, {}):
        format = {"type": "json_schema", "name": "x", **schema}
        status, body = send("responses", {"input": "x", "text": {"format": format}})
        assert status == 400 and orjson.loads(body)["error"]["param"] == "text.format"


# -- Embeddings ----------------------------------------------------------------------------


def embed(**payload) -> CreateEmbeddingResponse:
    status, body = send("embeddings", payload)
    assert status == 200, body
    return CreateEmbeddingResponse.model_validate_json(body)


def test_embeddings_default_to_eight_float_dimensions():
    result = embed(input=["x", "y"])
    assert [len(d.embedding) for d in result.data] == [8, 8]
    assert result.data[0].embedding == vector("x") != vector("y")


def test_embeddings_base64_is_little_endian_float32_of_the_same_vector():
    status, body = send("embeddings", {"input": "some text", "encoding_format": "base64", "dimensions": 16})
    assert status == 200
    raw = base64.b64decode(orjson.loads(body)["data"][0]["embedding"])
    decoded = struct.unpack("<16f", raw)
    assert decoded == pytest.approx(vector("some text", 16), abs=1e-6)
    assert embed(input="some text", dimensions=16).data[0].embedding == vector("some text", 16)


def test_embeddings_dimensions_are_honoured_and_deterministic():
    long = embed(input="t", dimensions=100).data[0].embedding
    assert len(long) == 100 and long == vector("t", 100) and all(-1 <= v <= 1 for v in long)
    assert vector("t", 100) == vector("t", 100)


REFUSED = [("input", ""), ("input", []), ("input", [""]), ("input", ["a", 5]), ("input", [{"a": 1}]), ("input", [[1], []]),
           ("input", 5), ("input", None), ("dimensions", 0), ("dimensions", "8"), ("dimensions", 3073), ("encoding_format", "hex"), ("input", ["x"] * 2049)]


def test_token_ids_embed_as_one_input_a_list_of_them_as_several():
    assert len(embed(input=[1, 2, 3]).data) == 1 and embed(input=[1, 2, 3]).usage.prompt_tokens == 3
    assert len(embed(input=[[1, 2], [3]]).data) == 2


@pytest.mark.parametrize(("field", "value"), REFUSED)
def test_embeddings_refuse_what_openai_refuses(field, value):
    status, body = send("embeddings", {"input": "x", field: value})
    assert status == 400 and orjson.loads(body)["error"]["param"] == field


def test_a_batch_of_legacy_prompts_gets_n_choices_for_each_prompt_after_prompt():
    status, body = send("completions", {"prompt": ["one", "two three"], "n": 2})
    answer = orjson.loads(body)
    assert status == 200
    assert [(c["index"], c["text"]) for c in answer["choices"]] == [
        (0, "Mock answer to: one"), (1, "Mock answer to: one"),
        (2, "Mock answer to: two three"), (3, "Mock answer to: two three"),
    ]
    assert answer["usage"]["prompt_tokens"] == 3  # each prompt read once
    assert answer["usage"]["completion_tokens"] == 2 * 4 + 2 * 5
    status, body = send("completions", {"prompt": [[1, 2], [3]], "stream": True})
    texts: dict[int, str] = {}
    for line in body.decode().splitlines():
        if line.startswith("data: {"):
            (choice,) = orjson.loads(line[6:])["choices"]
            texts[choice["index"]] = texts.get(choice["index"], "") + choice["text"]
    assert status == 200 and texts == {0: "Mock answer to: 1 2", 1: "Mock answer to: 3"}
    status, body = send("completions", {"prompt": [5, 6, 7]})
    assert status == 200 and [c["text"] for c in orjson.loads(body)["choices"]] == ["Mock answer to: 5 6 7"]


@pytest.mark.parametrize("payload", [
    {"prompt": []}, {"prompt": ["a", 1]}, {"prompt": [[1], "a"]}, {"prompt": [[]]}, {"prompt": {"text": "a"}},
    {"prompt": ["a"] * 2049}, {"prompt": "a", "best_of": 1, "n": 2}, {"prompt": "a", "best_of": 21},
    {"prompt": "a", "best_of": 2, "stream": True},
])
def test_a_legacy_prompt_or_best_of_openai_would_refuse_is_a_400_naming_it(payload):
    status, body = send("completions", payload)
    param = orjson.loads(body)["error"]["param"]
    assert status == 400 and param == ("best_of" if "best_of" in payload else "prompt")
