"""ResponsesRelay: events forwarded unchanged as they complete, read for the log after they were sent."""

from __future__ import annotations

import orjson

from proxy.responses.builder import ResponseBuilder, responses_usage
from proxy.responses.relay import ResponsesRelay


def _stream() -> tuple[list[bytes], dict]:
    builder = ResponseBuilder({"model": "m", "input": "hi"}, "m", events=True)
    events = builder.start() + builder.text("Hello") + builder.text(" there")
    events += builder.tool_call(0, "call_1", "f", '{"a": 1}') + builder.finish(responses_usage(3, 4, cached=1))
    return events, builder.response()


def test_events_pass_unchanged_whatever_the_chunking():
    events, final = _stream()
    body = b"".join(events)
    for size in (1, 7, 64, len(body)):
        relay = ResponsesRelay()
        out = b"".join(relay.feed(body[i : i + size]) for i in range(0, len(body), size)) + relay.flush()
        assert out == body
        assert relay.final["id"] == final["id"] and relay.done
        assert relay.usage["input_tokens_details"]["cached_tokens"] == 1
        assert relay.text == 'Hello there\n[tool call] f({"a": 1})'


def test_the_first_token_is_timed_when_its_chunk_passes():
    events, _ = _stream()
    relay = ResponsesRelay()
    relay.feed(b"".join(events[:3]))  # created, in_progress, output_item.added
    assert relay.first_token_at is None
    relay.feed(b"".join(events[3:5]))  # content_part.added, the first delta
    assert relay.first_token_at is not None


def test_a_stream_cut_short_keeps_its_text_and_ends_with_the_next_sequence_number():
    events, _ = _stream()
    relay = ResponsesRelay()
    relay.feed(b"".join(events[:6]))
    assert not relay.done
    assert relay.assembled()["output"][0]["content"][0]["text"] == "Hello there"
    error = orjson.loads(relay.fail("broke", "upstream_stream_error").split(b"data: ", 1)[1])
    assert error["type"] == "error" and error["sequence_number"] == 6
    assert error["error"]["message"] == "broke"  # what makes the SDK raise


def test_an_upstream_error_event_is_remembered():
    relay = ResponsesRelay()
    relay.feed(b'event: error\ndata: {"type":"error","code":"x","message":"overloaded","sequence_number":0}\n\n')
    assert relay.error == {"message": "overloaded", "code": "x"}
