"""One Responses API answer built from pieces of text and tool calls: as a whole object or as events.

The mock and the translation from Chat Completions both produce answers the same way, a
delta at a time; this builder turns those deltas into what OpenAI's Responses API sends:
the `response` object and, for a stream, the event sequence (`response.created` …
`response.completed`) with its `sequence_number`s, in the shapes the SDKs parse.
"""

from __future__ import annotations

import random
import time
from typing import Any

import orjson

#: What a request's `include` lists to get the output text's logprobs.
LOGPROBS_INCLUDE = "message.output_text.logprobs"


def wants_logprobs(request: dict[str, Any]) -> bool:
    """Whether the request's `include` asks for the output text's logprobs."""
    include = request.get("include")
    return isinstance(include, list) and LOGPROBS_INCLUDE in include


#: Request fields a response object echoes back, with OpenAI's defaults when the request left them out.
ECHOED_FIELDS: dict[str, Any] = {
    "instructions": None,
    "max_output_tokens": None,
    "metadata": {},
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "reasoning": {"effort": None, "summary": None},
    "store": True,
    "temperature": 1.0,
    "text": {"format": {"type": "text"}},
    "tool_choice": "auto",
    "tools": [],
    "top_p": 1.0,
    "truncation": "disabled",
    "user": None,
}

FINAL_EVENTS = {"completed": "response.completed", "incomplete": "response.incomplete", "failed": "response.failed"}


def new_id(prefix: str) -> str:
    """An id in OpenAI's style (`resp_…`, `msg_…`, `fc_…`, `call_…`): 128 random bits from Python's
    generator, not `uuid4()`, whose system call per id shows in a translated call's cost."""
    return f"{prefix}_{random.getrandbits(128):032x}"


#: Tool-call arguments stream in pieces of this many characters, as models send them.
ARGUMENT_PIECE = 16


def word_pieces(text: str) -> list[str]:
    """Text as it streams: a word at a time, each after the first with its leading space."""
    words = text.split(" ")
    return [words[0], *(f" {word}" for word in words[1:])]


def argument_pieces(arguments: str) -> list[str]:
    """Tool-call arguments as they stream: short pieces."""
    return [arguments[i : i + ARGUMENT_PIECE] for i in range(0, len(arguments), ARGUMENT_PIECE)]


def sse_event(event: dict[str, Any]) -> bytes:
    """One server-sent event as the Responses API frames it: `event:` then `data:`."""
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


def error_event(message: str, code: str | None = None) -> dict[str, Any]:
    """OpenAI's `error` event; the `error` object in it is what makes the SDKs raise."""
    error = {"type": "upstream_error", "code": code, "message": message, "param": None}
    return {"type": "error", "code": code, "message": message, "param": None, "error": error}


def responses_usage(input_tokens: int, output_tokens: int, cached: int = 0, reasoning: int = 0) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": input_tokens + output_tokens,
    }


class ResponseBuilder:
    """Collects an answer's text and function calls; `events=True` also yields its stream events.

    Every method returns the encoded events that step produced (none when `events` is off),
    so a streaming caller forwards them as they come and a whole-answer caller ignores them.
    """

    def __init__(
        self, request: dict[str, Any], model: str, *, events: bool = False, response_id: str | None = None
    ) -> None:
        self.request = request
        self.model = model
        self.events = events
        self.id = response_id or new_id("resp")
        self.created_at = int(time.time())
        self.output: list[dict[str, Any]] = []
        self._message: dict[str, Any] | None = None
        self._calls: dict[int, dict[str, Any]] = {}  # open function calls by their upstream index
        self._sequence = 0
        self.usage: dict[str, Any] | None = None

    def start(self) -> list[bytes]:
        """`response.created` and `response.in_progress`."""
        snapshot = self.response("in_progress")
        return self._emit(
            {"type": "response.created", "response": snapshot},
            {"type": "response.in_progress", "response": snapshot},
        )

    def text(self, delta: str, logprobs: list[dict[str, Any]] | None = None) -> list[bytes]:
        """More assistant text (with its tokens' `logprobs` when asked for); opens the message
        item (closing any open calls) the first time."""
        if not delta:
            return []
        out = []
        if self._message is None:
            out += self._close_calls()
            self._message = {"id": new_id("msg"), "type": "message", "status": "in_progress", "role": "assistant", "content": []}
            self.output.append(self._message)
            out += self._emit(
                {"type": "response.output_item.added", "output_index": self._index(self._message),
                 "item": {**self._message, "content": []}},
                {"type": "response.content_part.added", **self._part_position(), "part": _text_part("")},
            )
            self._message["content"].append(_text_part(""))
        part = self._message["content"][0]
        part["text"] += delta
        part["logprobs"] += logprobs or ()
        return out + self._emit({"type": "response.output_text.delta", **self._part_position(), "delta": delta,
                                 "logprobs": logprobs or []})

    def tool_call(self, index: int, call_id: str | None = None, name: str | None = None, arguments: str = "") -> list[bytes]:
        """A piece of function call number `index`: its first piece opens the item, later ones add arguments."""
        out = []
        call = self._calls.get(index)
        if call is None:
            out += self._close_message()
            call = {
                "id": new_id("fc"), "type": "function_call", "status": "in_progress",
                "call_id": call_id or new_id("call"), "name": name or "", "arguments": "",
            }
            self._calls[index] = call
            self.output.append(call)
            out += self._emit({"type": "response.output_item.added", "output_index": self._index(call),
                               "item": {**call, "arguments": ""}})
        elif name and not call["name"]:
            call["name"] = name
        if arguments:
            call["arguments"] += arguments
            out += self._emit({"type": "response.function_call_arguments.delta", "item_id": call["id"],
                               "output_index": self._index(call), "delta": arguments})
        return out

    def finish(self, usage: dict[str, Any] | None, status: str = "completed", reason: str | None = None) -> list[bytes]:
        """Close every open item and end with `response.completed` (or `.incomplete` with its reason)."""
        item_status = "incomplete" if status == "incomplete" else "completed"  # as OpenAI marks a cut item
        out = self._close_message(item_status) + self._close_calls(item_status)
        self.usage = usage
        if not self.events:  # a whole answer: the caller takes `response()` itself
            return out
        return out + self._emit({"type": FINAL_EVENTS[status], "response": self.response(status, reason)})

    def fail(self, message: str, code: str | None = None) -> list[bytes]:
        """End the stream with OpenAI's `error` event."""
        return self._emit(error_event(message, code))

    def response(self, status: str = "completed", reason: str | None = None) -> dict[str, Any]:
        """The `response` object as it stands."""
        request = self.request
        echoed = {name: request.get(name, default) for name, default in ECHOED_FIELDS.items()}
        if echoed["text"] is None or not isinstance(echoed["text"], dict):
            echoed["text"] = ECHOED_FIELDS["text"]
        finished = status != "in_progress"
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": request.get("background") is True,  # a mock's answer comes at once, background or not
            "error": None,
            "incomplete_details": {"reason": reason} if status == "incomplete" else None,
            "model": self.model,
            "output": [dict(item) for item in self.output] if finished else [],
            **echoed,
            "usage": self.usage if finished else None,
        }

    # -- the item life cycle ---------------------------------------------------------------

    def _close_message(self, status: str = "completed") -> list[bytes]:
        message, self._message = self._message, None
        if message is None:
            return []
        message["status"] = status
        part = message["content"][0]
        return self._emit(
            {"type": "response.output_text.done", **self._part_position(message), "text": part["text"],
             "logprobs": part["logprobs"]},
            {"type": "response.content_part.done", **self._part_position(message), "part": dict(part)},
            {"type": "response.output_item.done", "output_index": self._index(message), "item": dict(message)},
        )

    def _close_calls(self, status: str = "completed") -> list[bytes]:
        out = []
        for call in self._calls.values():
            call["status"] = status
            out += self._emit(
                {"type": "response.function_call_arguments.done", "item_id": call["id"],
                 "output_index": self._index(call), "name": call["name"], "arguments": call["arguments"]},
                {"type": "response.output_item.done", "output_index": self._index(call), "item": dict(call)},
            )
        self._calls = {}
        return out

    def _index(self, item: dict[str, Any]) -> int:
        return next(i for i, other in enumerate(self.output) if other is item)

    def _part_position(self, message: dict[str, Any] | None = None) -> dict[str, Any]:
        message = message or self._message
        assert message is not None
        return {"item_id": message["id"], "output_index": self._index(message), "content_index": 0}

    def _emit(self, *events: dict[str, Any]) -> list[bytes]:
        if not self.events:
            return []
        out = []
        for event in events:
            event["sequence_number"] = self._sequence
            self._sequence += 1
            out.append(sse_event(event))
        return out


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
