"""The fake upstream's answers, prebuilt as bytes: Chat Completions and the Responses API.

Each API is one object with the same two methods, so the server's request path is one:
`whole(n)` is a complete HTTP response, `stream(chunks, usage, n)` the pieces of a chunked
SSE response (the first write, the token events to space out, the tail that ends it).
Everything is built once (streams once per chunk count); `n`, the request's serial number,
only stamps a unique `resp_…` id into Responses answers, because the proxy keeps recent
responses by id and a real upstream never repeats one.
"""

from __future__ import annotations

try:
    import orjson

    def dumps(obj: object) -> bytes:
        return orjson.dumps(obj)
except ImportError:  # pragma: no cover - the bench venvs have orjson
    import json

    def dumps(obj: object) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()


USAGE = {"prompt_tokens": 14, "completion_tokens": 9, "total_tokens": 23}
CREATED = 1_764_000_000
ANSWER = "This is a canned answer from the benchmark's fake upstream."

COMPLETION = dumps(
    {
        "id": "chatcmpl-bench0000000000000000000000",
        "object": "chat.completion",
        "created": CREATED,
        "model": "bench-model",
        "system_fingerprint": "fp_bench",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": ANSWER, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": USAGE,
    }
)

_JSON_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-request-id: req_bench\r\n"
    b"openai-processing-ms: 1\r\ncontent-length: %d\r\n\r\n"
)
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\n"
    b"x-request-id: req_bench\r\ntransfer-encoding: chunked\r\n\r\n"
)
LAST_CHUNK = b"0\r\n\r\n"

Stream = tuple[bytes, list[bytes], bytes]  # first write (head included), token events after it, tail


def http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _whole(body: bytes) -> bytes:
    return _JSON_HEAD % len(body) + body


class ChatAnswers:
    """`POST …/chat/completions`: N `chat.completion.chunk` events, a usage chunk if asked, `[DONE]`."""

    endpoint = "chat/completions"
    _WHOLE = _whole(COMPLETION)
    _USAGE = http_chunk(
        b"data: "
        + dumps({"id": "chatcmpl-bench-stream", "object": "chat.completion.chunk", "created": CREATED,
                 "model": "bench-model", "choices": [], "usage": USAGE})
        + b"\n\n"
    )
    _DONE = http_chunk(b"data: [DONE]\n\n") + LAST_CHUNK

    def __init__(self) -> None:
        self._streams: dict[int, tuple[bytes, list[bytes]]] = {}

    def whole(self, n: int) -> bytes:
        return self._WHOLE

    def stream(self, chunks: int, usage: bool, n: int) -> Stream:
        built = self._streams.get(chunks)
        if built is None:
            events = [http_chunk(self._chunk(i, i == chunks - 1)) for i in range(chunks)]
            built = self._streams[chunks] = (STREAM_HEAD + events[0], events[1:])
        return built[0], built[1], (self._USAGE + self._DONE) if usage else self._DONE

    @staticmethod
    def _chunk(index: int, last: bool) -> bytes:
        delta: dict[str, object] = {"content": f"tok{index} "}
        if index == 0:
            delta["role"] = "assistant"
        event = {
            "id": "chatcmpl-bench-stream", "object": "chat.completion.chunk", "created": CREATED,
            "model": "bench-model", "system_fingerprint": "fp_bench",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": "stop" if last else None}],
        }
        return b"data: " + dumps(event) + b"\n\n"


#: Stamped per answer with the request's serial number (same width, so lengths never change).
RESPONSE_ID = "resp_bench" + "0" * 16
MESSAGE_ID = "msg_bench0000000000000000"
RESPONSES_USAGE = {
    "input_tokens": 14, "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 9, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 23,
}


def _response(status: str, text: str | None) -> dict[str, object]:
    """A response object as OpenAI's reference shows it; `text` None: no output yet."""
    output = [] if text is None else [_message("completed", text)]
    return {
        "id": RESPONSE_ID, "object": "response", "created_at": CREATED, "status": status, "error": None,
        "incomplete_details": None, "instructions": None, "max_output_tokens": 16, "model": "bench-model",
        "output": output, "parallel_tool_calls": True, "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None}, "store": True, "temperature": 1.0,
        "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [], "top_p": 1.0,
        "truncation": "disabled", "usage": RESPONSES_USAGE if status == "completed" else None,
        "user": None, "metadata": {},
    }


def _message(status: str, text: str | None) -> dict[str, object]:
    content = [] if text is None else [{"type": "output_text", "text": text, "annotations": []}]
    return {"id": MESSAGE_ID, "type": "message", "status": status, "role": "assistant", "content": content}


class ResponsesAnswers:
    """`POST …/responses`: the response object, or created … N text deltas … completed."""

    endpoint = "responses"
    _WHOLE = _whole(dumps(_response("completed", ANSWER)))

    def __init__(self) -> None:
        self._streams: dict[int, Stream] = {}

    def whole(self, n: int) -> bytes:
        return _stamp(self._WHOLE, n)

    def stream(self, chunks: int, usage: bool, n: int) -> Stream:
        built = self._streams.get(chunks)
        if built is None:
            built = self._streams[chunks] = self._build(chunks)
        return _stamp(built[0], n), built[1], _stamp(built[2], n)

    @staticmethod
    def _build(chunks: int) -> Stream:
        words = [f"tok{i} " for i in range(chunks)]
        position = {"item_id": MESSAGE_ID, "output_index": 0, "content_index": 0}
        started = _response("in_progress", None)
        head = [
            {"type": "response.created", "response": started},
            {"type": "response.in_progress", "response": started},
            {"type": "response.output_item.added", "output_index": 0, "item": _message("in_progress", None)},
            {"type": "response.content_part.added", **position,
             "part": {"type": "output_text", "text": "", "annotations": []}},
        ]
        deltas = [{"type": "response.output_text.delta", **position, "delta": w, "logprobs": []} for w in words]
        final = _response("completed", "".join(words))
        message = final["output"][0]  # type: ignore[index]
        tail = [
            {"type": "response.output_text.done", **position, "text": "".join(words), "logprobs": []},
            {"type": "response.content_part.done", **position, "part": message["content"][0]},
            {"type": "response.output_item.done", "output_index": 0, "item": message},
            {"type": "response.completed", "response": final},
        ]
        encoded = [
            b"event: " + e["type"].encode() + b"\ndata: " + dumps({**e, "sequence_number": i}) + b"\n\n"
            for i, e in enumerate(head + deltas + tail)
        ]
        first = STREAM_HEAD + http_chunk(b"".join(encoded[: len(head) + 1]))
        rest = [http_chunk(e) for e in encoded[len(head) + 1 : len(head) + chunks]]
        return first, rest, http_chunk(b"".join(encoded[len(head) + chunks :])) + LAST_CHUNK


_ID_MARK = RESPONSE_ID.encode()


def _stamp(data: bytes, n: int) -> bytes:
    return data.replace(_ID_MARK, b"resp_bench%016d" % n)
