"""Responses request → Chat Completions request: every row of docs/responses.md's field table."""

import copy

import pytest

from proxy.errors import ProxyError
from proxy.responses.translate import to_chat


def chat(**payload):
    return to_chat({"model": "hyperbolic/m", **payload}, "m")


def refused(payload, param, code="unsupported_parameter"):
    with pytest.raises(ProxyError) as caught:
        to_chat({"model": "hyperbolic/m", "input": "hi", **payload}, "m")
    error = caught.value
    assert error.status_code == 400
    body = error.body()["error"]
    assert (body["type"], body["param"], body["code"]) == ("invalid_request_error", param, code)
    assert body["message"]
    return body["message"]


# -- messages ------------------------------------------------------------------------------


def test_model_is_the_upstream_model_and_input_string_is_a_user_message():
    assert chat(input="Hello") == {"model": "m", "messages": [{"role": "user", "content": "Hello"}]}


def test_instructions_become_a_leading_system_message():
    body = chat(instructions="Be brief.", input=[{"role": "user", "content": "Hi"}])
    assert body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


@pytest.mark.parametrize("role, sent", [("user", "user"), ("assistant", "assistant"), ("system", "system"),
                                        ("developer", "system")])
def test_message_roles(role, sent):
    assert chat(input=[{"role": role, "content": "x"}])["messages"] == [{"role": sent, "content": "x"}]
    typed = chat(input=[{"type": "message", "role": role, "content": [{"type": "input_text", "text": "x"}]}])
    assert typed["messages"] == [{"role": sent, "content": "x"}]


def test_content_parts_text_and_images():
    parts = [
        {"type": "input_text", "text": "What is this?"},
        {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "low"},
        {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
    ]
    [message] = chat(input=[{"role": "user", "content": parts}])["messages"]
    assert message == {"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]}


def test_earlier_assistant_output_message_with_text_and_refusal():
    item = {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed", "content": [
        {"type": "output_text", "text": "Sure.", "annotations": []},
        {"type": "refusal", "refusal": "Not that part."},
    ]}
    [message] = chat(input=[item])["messages"]
    assert message == {"role": "assistant", "content": [{"type": "text", "text": "Sure."},
                                                        {"type": "text", "text": "Not that part."}]}


def test_function_calls_group_into_one_assistant_message_and_outputs_become_tool_messages():
    items = [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "function_call", "call_id": "call_a", "name": "weather", "arguments": '{"city":"Paris"}',
         "id": "fc_1"},
        {"type": "function_call", "call_id": "call_b", "name": "weather", "arguments": '{"city":"Rome"}'},
        {"type": "function_call_output", "call_id": "call_a", "output": "18C"},
        {"type": "function_call_output", "call_id": "call_b",
         "output": [{"type": "input_text", "text": "21"}, {"type": "input_text", "text": "C"}]},
    ]
    assert chat(input=items)["messages"] == [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_b", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Rome"}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_a", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_b", "content": "21C"},
    ]


def test_a_function_call_joins_the_assistant_text_before_it():
    items = [{"role": "assistant", "content": "Let me look."},
             {"type": "function_call", "call_id": "c1", "name": "look", "arguments": ""}]
    assert chat(input=items)["messages"] == [{"role": "assistant", "content": "Let me look.", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "look", "arguments": "{}"}}]}]


def test_reasoning_items_are_dropped():
    items = [{"type": "reasoning", "id": "rs", "summary": [], "encrypted_content": "opaque"},
             {"role": "user", "content": "q"}]
    assert chat(input=items)["messages"] == [{"role": "user", "content": "q"}]


def test_large_strings_are_not_copied_and_the_request_is_not_changed():
    text = "word " * 100_000
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    payload = {"model": "x", "input": [{"role": "user", "content": text}],
               "text": {"format": {"type": "json_schema", "name": "A", "schema": schema}}}
    before = copy.deepcopy(payload)
    body = to_chat(payload, "m")
    assert body["messages"][0]["content"] is text
    assert body["response_format"]["json_schema"]["schema"] is schema
    assert payload == before


@pytest.mark.parametrize("items, param", [
    ([{"type": "item_reference", "id": "msg_1"}], "input[0]"),
    ([{"type": "web_search_call", "id": "ws"}], "input[0].type"),
    ([{"type": "computer_call_output", "call_id": "c"}], "input[0].type"),
    ([{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}], "input[0].content[0].type"),
    ([{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}], "input[0].content[0]"),
    ([{"type": "function_call_output", "call_id": "c", "output": [{"type": "input_image", "image_url": "u"}]}],
     "input[0].output[0]"),
])
def test_refused_input(items, param):
    refused({"input": items}, param)


@pytest.mark.parametrize("payload, param", [
    ({"input": 3}, "input"),
    ({"input": ["text"]}, "input[0]"),
    ({"input": [{"role": "critic", "content": "x"}]}, "input[0].role"),
    ({"input": [{"role": "user", "content": 5}]}, "input[0].content"),
    ({"input": [{"type": "function_call", "name": "f"}]}, "input[0]"),
    ({"input": [{"type": "function_call_output", "call_id": "c", "output": 5}]}, "input[0].output"),
    ({"instructions": ["not", "a", "string"]}, "instructions"),
    ({"tools": {"type": "function"}}, "tools"),
    ({"text": "json"}, "text"),
    ({"reasoning": "high"}, "reasoning"),
])
def test_malformed_values_are_400s(payload, param):
    refused(payload, param, code="invalid_value")


# -- tools ---------------------------------------------------------------------------------


WEATHER = {"type": "function", "name": "weather", "description": "Weather of a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}, "strict": True}


def test_function_tools_in_chat_shape():
    body = chat(input="x", tools=[WEATHER, {"type": "function", "name": "now", "parameters": None, "strict": None}])
    assert body["tools"] == [
        {"type": "function", "function": {"name": "weather", "description": "Weather of a city",
                                          "parameters": WEATHER["parameters"], "strict": True}},
        {"type": "function", "function": {"name": "now"}},
    ]


@pytest.mark.parametrize("kind", ["web_search", "web_search_preview", "file_search", "computer_use_preview",
                                  "code_interpreter", "mcp", "image_generation", "custom", "local_shell"])
def test_other_tool_types_are_refused_by_name(kind):
    message = refused({"tools": [WEATHER, {"type": kind}]}, "tools[1].type")
    assert f"`{kind}`" in message


@pytest.mark.parametrize("choice", ["auto", "none", "required"])
def test_tool_choice_strings(choice):
    assert chat(input="x", tools=[WEATHER], tool_choice=choice)["tool_choice"] == choice


def test_tool_choice_function_by_name():
    body = chat(input="x", tools=[WEATHER], tool_choice={"type": "function", "name": "weather"})
    assert body["tool_choice"] == {"type": "function", "function": {"name": "weather"}}


@pytest.mark.parametrize("choice", [{"type": "allowed_tools", "mode": "auto", "tools": []},
                                    {"type": "web_search_preview"}, {"type": "mcp", "server_label": "s"}, "any"])
def test_other_tool_choices_are_refused(choice):
    refused({"tools": [WEATHER], "tool_choice": choice}, "tool_choice")


def test_parallel_tool_calls_with_tools_and_dropped_without():
    assert chat(input="x", tools=[WEATHER], parallel_tool_calls=False)["parallel_tool_calls"] is False
    body = chat(input="x", parallel_tool_calls=False, tool_choice="auto", tools=[])
    assert {"tools", "tool_choice", "parallel_tool_calls"}.isdisjoint(body)


# -- text, sampling, limits ----------------------------------------------------------------


def test_json_schema_format():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    body = chat(input="x", text={"format": {"type": "json_schema", "name": "A", "schema": schema, "strict": True,
                                            "description": "an A"}, "verbosity": "low"})
    assert body["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "A", "schema": schema, "strict": True, "description": "an A"}}
    assert body["verbosity"] == "low"


def test_json_object_and_text_formats():
    assert chat(input="x", text={"format": {"type": "json_object"}})["response_format"] == {"type": "json_object"}
    assert "response_format" not in chat(input="x", text={"format": {"type": "text"}})
    assert "verbosity" not in chat(input="x", text={"format": {"type": "text"}, "verbosity": None})


def test_unknown_text_format_is_refused():
    refused({"text": {"format": {"type": "grammar", "grammar": "x"}}}, "text.format")


def test_sampling_limits_and_user():
    body = chat(input="x", max_output_tokens=50, temperature=0.2, top_p=0.9, user="u1", safety_identifier="s1",
                top_logprobs=3)
    assert body | {"messages": None} == {"model": "m", "messages": None, "max_tokens": 50, "temperature": 0.2,
                                         "top_p": 0.9, "user": "u1", "logprobs": True, "top_logprobs": 3}


def test_safety_identifier_is_the_user_when_no_user_is_given():
    assert chat(input="x", safety_identifier="s1")["user"] == "s1"


def test_reasoning_effort():
    body = chat(input="x", reasoning={"effort": "low", "summary": None, "context": "auto", "mode": "standard"})
    assert body["reasoning_effort"] == "low"
    assert "reasoning" not in body


@pytest.mark.parametrize("reasoning, param", [({"effort": "low", "summary": "auto"}, "reasoning.summary"),
                                              ({"generate_summary": "concise"}, "reasoning.generate_summary"),
                                              ({"mode": "pro"}, "reasoning.mode")])
def test_reasoning_summaries_and_modes_are_refused(reasoning, param):
    refused({"reasoning": reasoning}, param)


def test_stream_asks_for_usage_unless_the_upstream_cannot():
    body = chat(input="x", stream=True, stream_options={"include_obfuscation": False})
    assert (body["stream"], body["stream_options"]) == (True, {"include_usage": True})
    old_azure = to_chat({"input": "x", "stream": True}, "m", usage_in_stream=False)
    assert old_azure["stream"] is True and "stream_options" not in old_azure
    assert {"stream", "stream_options"}.isdisjoint(chat(input="x", stream=False))


def test_chat_parameters_from_extra_body_are_sent_on():
    extra = {"seed": 7, "stop": ["\n"], "presence_penalty": 0.1, "frequency_penalty": 0.2, "logit_bias": {"1": -1},
             "top_k": 40, "min_p": 0.05, "repetition_penalty": 1.1}
    assert chat(input="x", **extra).items() >= extra.items()


# -- ignored and refused fields ------------------------------------------------------------


@pytest.mark.parametrize("field, value", [
    ("store", True), ("store", False), ("metadata", {"k": "v"}), ("previous_response_id", "resp_1"),
    ("stream_options", {"include_obfuscation": True}), ("prompt_cache_key", "k"), ("prompt_cache_retention", "24h"),
    ("prompt_cache_options", {"mode": "implicit"}), ("image", {"context_compression": "auto"}),
    ("max_tool_calls", 3), ("background_options", {"completion_window": "soonest"}), ("background", False),
    ("include", []), ("truncation", "disabled"), ("service_tier", "auto"), ("service_tier", "default"),
    ("context_management", []), ("temperature", None), ("conversation", None), ("prompt", None),
])
def test_harmless_fields_are_ignored(field, value):
    assert chat(input="x", **{field: value}) == {"model": "m", "messages": [{"role": "user", "content": "x"}]}


def test_the_output_logprobs_are_asked_of_chat():
    body = chat(input="x", include=["message.output_text.logprobs"], top_logprobs=2)
    assert (body["logprobs"], body["top_logprobs"]) == (True, 2)
    assert chat(input="x", include=["message.output_text.logprobs"])["logprobs"] is True


@pytest.mark.parametrize("field, value, param", [
    ("background", True, "background"),
    ("include", ["reasoning.encrypted_content"], "include"),
    ("include", ["message.output_text.logprobs", "reasoning.encrypted_content"], "include"),
    ("include", "message.output_text.logprobs", "include"),
    ("truncation", "auto", "truncation"),
    ("service_tier", "flex", "service_tier"),
    ("service_tier", "priority", "service_tier"),
    ("prompt", {"id": "pmpt_1", "variables": {}}, "prompt"),
    ("conversation", "conv_1", "conversation"),
    ("context_management", [{"type": "compaction"}], "context_management"),
    ("moderation", {"model": "omni-moderation-latest"}, "moderation"),
    ("access_programs", {"cyber": "standard"}, "access_programs"),
    ("prompt_cache_options", {"prewarm": True}, "prompt_cache_options.prewarm"),
    ("n", 2, "n"),
    ("some_future_field", 1, "some_future_field"),
])
def test_fields_that_would_change_the_answer_are_refused(field, value, param):
    message = refused({field: value}, param)
    assert field in message
