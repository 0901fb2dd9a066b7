"""Server-sent events: forward each upstream event as it completes, assemble the answer for the log.

`StreamRelay.feed()` takes raw upstream bytes and returns the bytes the client should get
now: whole events only, unchanged except for the usage chunk the proxy asked for itself,
which is taken out so the client sees what it asked for.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from .errors import error_body
from .event_buffer import EventBuffer, events_of
from .render import with_tool_calls

DONE = b"[DONE]"


class StreamRelay:
    def __init__(self, endpoint: str, strip_usage: bool) -> None:
        self.endpoint = endpoint
        self.strip_usage = strip_usage
        self._events = EventBuffer()
        self._texts: dict[int, list[str]] = {}
        self._tools: dict[int, dict[int, dict[str, Any]]] = {}  # choice → call index → tool call
        self._finish: dict[int, str | None] = {}
        self.usage: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.first_token_at: float | None = None
        self.id: str | None = None
        self.model: str | None = None
        self.done = False

    def feed(self, chunk: bytes) -> bytes:
        """Bytes to forward now (complete events), keeping any partial event for later."""
        out = []
        for event in events_of(self._events.push(chunk)):
            forwarded = self._event(event)
            if forwarded:
                out.append(forwarded)
        return b"".join(out)

    def flush(self) -> bytes:
        """Whatever partial event is left when upstream closes (forwarded as it is)."""
        rest = self._events.rest()
        return self._event(rest + b"\n\n") if rest.strip() else b""

    @property
    def text(self) -> str:
        return "\n\n---\n\n".join(self._choice_text(i) for i in sorted(self._texts) or [0])

    def assembled(self) -> dict[str, Any]:
        """The streamed answer as one non-streaming object, for `response_json`."""
        choices = []
        for index in sorted(set(self._texts) | set(self._finish)):
            text = "".join(self._texts.get(index, []))
            if self.endpoint == "completions":
                choices.append({"index": index, "text": text, "finish_reason": self._finish.get(index)})
                continue
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if index in self._tools:
                message["tool_calls"] = [call for _, call in sorted(self._tools[index].items())]
            choices.append({"index": index, "message": message, "finish_reason": self._finish.get(index)})
        answer: dict[str, Any] = {"id": self.id, "model": self.model, "choices": choices, "usage": self.usage}
        if self.error is not None:
            answer["error"] = self.error
        return answer

    @staticmethod
    def fail(message: str, code: str | None = None) -> bytes:
        """The final event of a stream the proxy could not finish."""
        return error_event(message, code=code)

    def _choice_text(self, index: int) -> str:
        calls = [call for _, call in sorted(self._tools.get(index, {}).items())]
        return with_tool_calls("".join(self._texts.get(index, [])), calls)

    def _event(self, event: bytes) -> bytes:
        data = b"\n".join(
            line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:")
        )
        if not data:
            return event
        if data == DONE:
            self.done = True
            return event
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return event
        if not isinstance(obj, dict):
            return event
        if isinstance(obj.get("error"), dict):
            self.error = obj["error"]
            return event
        self.id = self.id or obj.get("id") or None
        self.model = self.model or obj.get("model")
        choices = obj.get("choices") or []
        self._collect(choices)
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
            if self.strip_usage:
                if not choices:
                    return b""
                obj["usage"] = None
                return b"data: " + orjson.dumps(obj) + b"\n\n"
        return event

    def _collect(self, choices: list[Any]) -> None:
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            if choice.get("finish_reason") is not None:
                self._finish[index] = choice["finish_reason"]
            if self.endpoint == "completions":
                piece = choice.get("text")
            else:
                delta = choice.get("delta") or {}
                piece = delta.get("content") or delta.get("refusal")
                for call in delta.get("tool_calls") or []:
                    self._tool_delta(index, call)
            if piece:
                if self.first_token_at is None:
                    self.first_token_at = time.perf_counter()
                self._texts.setdefault(index, []).append(piece)
            else:
                self._texts.setdefault(index, [])

    def _tool_delta(self, index: int, call: dict[str, Any]) -> None:
        """One piece of a streamed tool call: its first piece carries `id` and `type`, every
        piece may carry a part of the name and the arguments."""
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        slot = self._tools.setdefault(index, {}).setdefault(
            call.get("index", 0), {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
        )
        slot["id"] = slot["id"] or call.get("id")
        if call.get("type"):
            slot["type"] = call["type"]
        function = call.get("function") or {}
        slot["function"]["name"] += function.get("name") or ""
        slot["function"]["arguments"] += function.get("arguments") or ""


def error_event(message: str, type: str = "upstream_error", code: str | None = None) -> bytes:
    """A final SSE event in OpenAI's error shape; the OpenAI SDK raises it as an APIError."""
    return b"data: " + orjson.dumps(error_body(message, type, None, code)) + b"\n\n"
