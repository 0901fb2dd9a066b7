"""Chat Completions answer → Responses answer: whole completions, and streams fed in odd-sized pieces."""

import orjson
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from proxy.responses.translate_answer import StreamTranslator, to_response, usage

EVENTS = TypeAdapter(ResponseStreamEvent)
REQUEST = {"model": "hyperbolic/m", "input": "hi", "instructions": "Be brief.", "temperature": 0.5}
CHAT_USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18,
              "prompt_tokens_details": {"cached_tokens": 4}, "completion_tokens_details": {"reasoning_tokens": 2}}


def completion(message, finish="stop", usage=CHAT_USAGE, model="org/model-x"):
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
            "usage": usage}


# -- whole answers -------------------------------------------------------------------------


def test_text_answer_with_usage_and_echo():
    response = Response.model_validate(to_response(completion({"content": "Hello there."}), REQUEST, "m"))
    assert response.output_text == "Hello there."
    assert response.status == "completed" and response.incomplete_details is None
    assert response.model == "org/model-x"
    assert (response.instructions, response.temperature) == ("Be brief.", 0.5)
    assert response.id.startswith("resp_")
    assert response.usage.input_tokens == 11 and response.usage.output_tokens == 7
    assert response.usage.total_tokens == 18
    assert response.usage.input_tokens_details.cached_tokens == 4
    assert response.usage.output_tokens_details.reasoning_tokens == 2


def test_tool_calls_become_function_call_items():
    calls = [{"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}},
             {"id": "call_2", "type": "function", "function": {"name": "time", "arguments": "{}"}}]
    answer = to_response(completion({"content": "Checking.", "tool_calls": calls}, "tool_calls"), REQUEST, "m")
    response = Response.model_validate(answer)
    message, first, second = response.output
    assert message.type == "message" and response.output_text == "Checking."
    assert (first.type, first.call_id, first.name, first.arguments) == ("function_call", "call_1", "weather",
                                                                        '{"city":"Paris"}')
    assert (second.call_id, second.name, second.arguments) == ("call_2", "time", "{}")
    assert response.status == "completed"


@pytest.mark.parametrize("finish, reason", [("length", "max_output_tokens"), ("content_filter", "content_filter")])
def test_truncated_and_filtered_answers_are_incomplete(finish, reason):
    response = Response.model_validate(to_response(completion({"content": "Once upon"}, finish), REQUEST, "m"))
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == reason
    assert response.output_text == "Once upon"


def test_refusal_is_answer_text_and_missing_usage_and_model_are_none_and_the_upstream_model():
    answer = completion({"content": None, "refusal": "I can't help with that."}, usage=None, model=None)
    response = Response.model_validate(to_response(answer, REQUEST, "m"))
    assert response.output_text == "I can't help with that."
    assert response.usage is None
    assert response.model == "m"


def test_usage_names():
    assert usage({"prompt_tokens": 3, "completion_tokens": 2}) == {
        "input_tokens": 3, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 2, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 5}
    assert usage(None) is None


# -- streams -------------------------------------------------------------------------------


def chunk(delta=None, finish=None, model="org/model-x", **extra):
    choices = [] if delta is None and finish is None else [{"index": 0, "delta": delta or {}, "finish_reason": finish}]
    return {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": model, "choices": choices,
            **extra}


def sse(*chunks, done=True):
    frames = [b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks]
    return frames + ([b"data: [DONE]\n\n"] if done else [])


def events_of(out):
    """Parse the encoded events, checking the `event:` line and that each is a valid stream event."""
    parsed = []
    for frame in out:
        head, data = frame.split(b"\n", 1)
        assert frame.endswith(b"\n\n")
        event = orjson.loads(data.removeprefix(b"data: "))
        assert head == b"event: " + event["type"].encode()
        EVENTS.validate_python(event)
        parsed.append(event)
    return parsed


def translate(frames, piece=7, close=True):
    """Feed the frames' bytes in `piece`-byte slices; return every event produced."""
    translator = StreamTranslator(REQUEST, "m")
    data = b"".join(frames)
    out = []
    for i in range(0, len(data), piece):
        out += translator.feed(data[i : i + piece])
    if close:
        out += translator.close()
    return events_of(out)


TEXT_STREAM = sse(
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Hel"}),
    chunk({"content": "lo, "}),
    chunk({"content": "world."}),
    chunk(finish="stop"),
    chunk(usage=CHAT_USAGE),
)


@pytest.mark.parametrize("piece", [1, 7, 64, 10_000])
def test_text_stream_in_odd_pieces(piece):
    events = translate(TEXT_STREAM, piece)
    types = [e["type"] for e in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    assert [e["delta"] for e in events if e["type"] == "response.output_text.delta"] == ["Hel", "lo, ", "world."]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    final = Response.model_validate(events[-1]["response"])
    assert final.output_text == "Hello, world."
    assert final.model == "org/model-x"
    assert final.usage.input_tokens == 11 and final.usage.output_tokens_details.reasoning_tokens == 2
    assert final.instructions == "Be brief."


def entry(token, top=()):
    return {"token": token, "logprob": -0.5, "bytes": list(token.encode()),
            "top_logprobs": [{"token": t, "logprob": -1.0, "bytes": list(t.encode())} for t in top]}


def test_chat_logprobs_become_the_output_texts_when_include_asks():
    asked = {**REQUEST, "include": ["message.output_text.logprobs"], "top_logprobs": 1}
    whole = completion({"content": "Hi you"})
    whole["choices"][0]["logprobs"] = {"content": [entry("Hi", ["Hey"]), entry(" you", [" u"])], "refusal": None}
    part = Response.model_validate(to_response(whole, asked, "m")).output[0].content[0]
    assert [(t.token, t.logprob, [a.token for a in t.top_logprobs]) for t in part.logprobs] == [
        ("Hi", -0.5, ["Hey"]), (" you", -0.5, [" u"])]
    assert Response.model_validate(to_response(whole, REQUEST, "m")).output[0].content[0].logprobs == []  # not asked

    first = chunk({"role": "assistant", "content": "Hi"})
    first["choices"][0]["logprobs"] = {"content": [entry("Hi")], "refusal": None}
    frames = sse(first, chunk(finish="stop"))
    translator = StreamTranslator(asked, "m")
    events = events_of([e for frame in frames for e in translator.feed(frame)] + translator.close())
    [delta] = [e for e in events if e["type"] == "response.output_text.delta"]
    assert [t["token"] for t in delta["logprobs"]] == ["Hi"]
    assert [t.token for t in Response.model_validate(events[-1]["response"]).output[0].content[0].logprobs] == ["Hi"]


def test_each_delta_comes_out_as_its_chunk_goes_in():
    translator = StreamTranslator(REQUEST, "m")
    role, first, second, third, finish, usage_chunk, done = TEXT_STREAM
    assert [e["type"] for e in events_of(translator.feed(role))] == ["response.created", "response.in_progress"]
    half = len(first) // 2
    assert translator.feed(first[:half]) == []
    [added, part, delta] = events_of(translator.feed(first[half:]))
    assert (added["type"], part["type"], delta["delta"]) == ("response.output_item.added",
                                                             "response.content_part.added", "Hel")
    assert [e["delta"] for e in events_of(translator.feed(second))] == ["lo, "]
    assert [e["delta"] for e in events_of(translator.feed(third))] == ["world."]
    assert translator.feed(finish) == [] and translator.feed(usage_chunk) == []  # the usage comes last
    final = events_of(translator.feed(done))[-1]
    assert final["type"] == "response.completed" and final["response"]["usage"]["input_tokens"] == 11
    assert translator.ended and translator.close() == []


def test_tool_call_stream_with_arguments_split_over_chunks():
    frames = sse(
        chunk({"role": "assistant", "content": None}),
        chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                               "function": {"name": "weather", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Paris"}'}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "call_2", "type": "function",
                               "function": {"name": "time", "arguments": "{}"}}]}),
        chunk(finish="tool_calls"),
        chunk(usage=CHAT_USAGE),
    )
    events = translate(frames, piece=5)
    deltas = [(e["output_index"], e["delta"]) for e in events if e["type"] == "response.function_call_arguments.delta"]
    assert deltas == [(0, '{"ci'), (0, 'ty": "Paris"}'), (1, "{}")]
    done = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert [(e["name"], e["arguments"]) for e in done] == [("weather", '{"city": "Paris"}'), ("time", "{}")]
    final = Response.model_validate(events[-1]["response"])
    assert [(o.type, o.call_id, o.name) for o in final.output] == [("function_call", "call_1", "weather"),
                                                                  ("function_call", "call_2", "time")]
    assert final.output[0].arguments == '{"city": "Paris"}'


def test_length_finish_ends_incomplete():
    events = translate(sse(chunk({"content": "Once"}), chunk(finish="length")))
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert events[-1]["response"]["usage"] is None


def test_azure_filter_chunk_crlf_and_keepalive_comments_are_skipped():
    azure_first = {"id": "", "object": "", "created": 0, "model": "", "choices": [], "prompt_filter_results": []}
    frames = [b": keep-alive\n\n"] + sse(azure_first, chunk({"content": "Hi"}), chunk(finish="stop"))
    events = translate([f.replace(b"\n", b"\r\n") for f in frames], piece=3)
    assert events[0]["response"]["model"] == "org/model-x"
    assert Response.model_validate(events[-1]["response"]).output_text == "Hi"


def test_stream_without_done_ends_at_the_upstream_end_when_it_finished():
    events = translate(sse(chunk({"content": "Hi"}), chunk(finish="stop"), done=False))
    assert events[-1]["type"] == "response.completed"


def test_stream_that_breaks_off_ends_with_an_error_event():
    events = translate(sse(chunk({"content": "Hel"}), done=False) + [b'data: {"id": "chatcmpl-s", "cho'])
    assert [e["type"] for e in events][-2:] == ["response.output_text.delta", "error"]
    assert events[-1]["code"] == "upstream_stream_error"


def test_error_chunk_ends_with_an_error_event_and_nothing_after():
    error = {"error": {"message": "model overloaded", "type": "server_error", "code": "overloaded"}}
    events = translate(sse(chunk({"content": "Hel"}), error, chunk({"content": "lo"}), chunk(finish="stop")))
    assert events[-1]["type"] == "error"
    assert (events[-1]["message"], events[-1]["code"]) == ("model overloaded", "overloaded")
    assert [e["delta"] for e in events if e["type"] == "response.output_text.delta"] == ["Hel"]


def test_failure_before_any_chunk_still_opens_the_stream():
    translator = StreamTranslator(REQUEST, "m")
    events = events_of(translator.fail("upstream stream broke", "upstream_stream_error"))
    assert [e["type"] for e in events] == ["response.created", "response.in_progress", "error"]
    assert translator.fail("again") == [] and translator.close() == []
