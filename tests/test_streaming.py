import orjson

from proxy.streaming import StreamRelay, error_event


def sse(obj) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def chunk(content=None, finish=None, usage=None, index=0, choices=True):
    body = {"id": "c1", "model": "m", "choices": []}
    if choices:
        body["choices"] = [{"index": index, "delta": {"content": content} if content else {}, "finish_reason": finish}]
    if usage is not None:
        body["usage"] = usage
    return sse(body)


USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def test_events_are_forwarded_whole_even_when_split_across_reads():
    relay = StreamRelay("chat/completions", strip_usage=False)
    data = chunk("Hel") + chunk("lo") + b"data: [DONE]\n\n"
    out = b"".join(relay.feed(data[i : i + 7]) for i in range(0, len(data), 7))
    assert out == data
    assert relay.text == "Hello" and relay.done


def test_injected_usage_chunk_is_stripped_but_kept_for_the_log():
    relay = StreamRelay("chat/completions", strip_usage=True)
    out = relay.feed(chunk("Hi") + chunk(finish="stop") + chunk(usage=USAGE, choices=False) + b"data: [DONE]\n\n")
    assert b"usage" not in out
    assert out.endswith(b"data: [DONE]\n\n")
    assert relay.usage == USAGE


def test_usage_riding_on_a_content_chunk_is_nulled_not_dropped():
    relay = StreamRelay("chat/completions", strip_usage=True)
    out = relay.feed(chunk("Hi", finish="stop", usage=USAGE))
    assert orjson.loads(out[6:])["usage"] is None
    assert relay.text == "Hi" and relay.usage == USAGE


def test_client_asked_usage_passes_through():
    relay = StreamRelay("chat/completions", strip_usage=False)
    usage_event = chunk(usage=USAGE, choices=False)
    assert relay.feed(usage_event) == usage_event


def test_azure_first_chunk_without_choices_is_not_mistaken_for_usage():
    relay = StreamRelay("chat/completions", strip_usage=True)
    azure_first = sse({"id": "", "choices": [], "prompt_filter_results": [{"prompt_index": 0}]})
    assert relay.feed(azure_first) == azure_first
    relay.feed(chunk("x"))
    assert relay.assembled()["id"] == "c1"


def test_crlf_separated_events_and_comments():
    relay = StreamRelay("chat/completions", strip_usage=False)
    out = relay.feed(b": keep-alive\r\n\r\n" + chunk("a").replace(b"\n", b"\r\n"))
    assert out.startswith(b": keep-alive\n\n") and relay.text == "a"


def test_assembly_of_completions_choices_and_ttft():
    relay = StreamRelay("completions", strip_usage=False)
    relay.feed(sse({"id": "t", "choices": [{"index": 0, "text": "ab", "finish_reason": None}]}))
    relay.feed(sse({"id": "t", "choices": [{"index": 0, "text": "c", "finish_reason": "length"}]}))
    assert relay.first_token_at is not None
    assert relay.assembled()["choices"] == [{"index": 0, "text": "abc", "finish_reason": "length"}]


def tool_deltas(*calls):
    return b"".join(
        sse({"id": "t", "choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]})
        for call in calls
    )


def test_streamed_tool_call_keeps_its_id_and_type_and_reads_without_a_leading_newline():
    relay = StreamRelay("chat/completions", strip_usage=False)
    relay.feed(tool_deltas(
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"ci'}},
        {"index": 0, "function": {"arguments": 'ty": "Oslo"}'}},
    ))
    message = relay.assembled()["choices"][0]["message"]
    assert message["tool_calls"] == [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
    ]
    assert relay.text == '[tool call] get_weather({"city": "Oslo"})'


def test_text_then_parallel_tool_calls_one_line_each_in_index_order():
    relay = StreamRelay("chat/completions", strip_usage=False)
    relay.feed(chunk("Checking."))
    relay.feed(tool_deltas(
        {"index": 1, "id": "call_b", "type": "function", "function": {"name": "b", "arguments": "{}"}},
        {"index": 0, "id": "call_a", "type": "function", "function": {"name": "a", "arguments": "{}"}},
    ))
    calls = relay.assembled()["choices"][0]["message"]["tool_calls"]
    assert [c["id"] for c in calls] == ["call_a", "call_b"]
    assert relay.text == "Checking.\n[tool call] a({})\n[tool call] b({})"


def test_tool_call_without_an_id_from_upstream_says_so():
    relay = StreamRelay("chat/completions", strip_usage=False)
    relay.feed(tool_deltas({"index": 0, "function": {"name": "f", "arguments": "{}"}}))
    assert relay.assembled()["choices"][0]["message"]["tool_calls"] == [
        {"id": None, "type": "function", "function": {"name": "f", "arguments": "{}"}}
    ]



def test_upstream_error_event_is_forwarded_and_remembered():
    relay = StreamRelay("chat/completions", strip_usage=False)
    event = error_event("overloaded", code="x")
    assert relay.feed(event) == event
    assert relay.error == {"message": "overloaded", "type": "upstream_error", "param": None, "code": "x"}


def test_partial_event_left_at_the_end_is_flushed():
    relay = StreamRelay("chat/completions", strip_usage=False)
    assert relay.feed(b'data: {"choices": [{"index": 0, "delta": {"content": "z"}}]}') == b""
    assert relay.flush().startswith(b"data: ")
    assert relay.text == "z"
