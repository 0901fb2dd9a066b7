"""A Chat Completions answer as the Responses API answer the client asked for: whole, or event by event.

Both go through `ResponseBuilder`, so a translated answer has the same shape as the mock's
and the echo of the request's fields comes from the client's own Responses request.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..event_buffer import EventBuffer, events_of
from .builder import ResponseBuilder, responses_usage, wants_logprobs

#: Chat finish reasons that end a response as `incomplete`, and the reason it gives.
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def usage(chat_usage: Any) -> dict[str, Any] | None:
    """Chat's `prompt_tokens`/`completion_tokens` (and their details) under the Responses names."""
    if not isinstance(chat_usage, dict):
        return None
    prompt_details = chat_usage.get("prompt_tokens_details") or {}
    completion_details = chat_usage.get("completion_tokens_details") or {}
    return responses_usage(
        chat_usage.get("prompt_tokens") or 0,
        chat_usage.get("completion_tokens") or 0,
        cached=prompt_details.get("cached_tokens") or 0,
        reasoning=completion_details.get("reasoning_tokens") or 0,
    )


def ending(finish_reason: Any) -> tuple[str, str | None]:
    """(status, incomplete reason) for a chat finish reason."""
    reason = INCOMPLETE.get(finish_reason)  # type: ignore[arg-type]
    return ("incomplete", reason) if reason else ("completed", None)


def to_response(chat: dict[str, Any], request: dict[str, Any], model: str) -> dict[str, Any]:
    """The `response` object for a chat completion (its first choice) answering `request`."""
    builder = ResponseBuilder(request, chat.get("model") or model)
    choices = chat.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    builder.text(_text(message.get("content")) or message.get("refusal") or "", _logprobs(request, choice))
    for index, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") or {}
        builder.tool_call(index, call.get("id"), function.get("name"), function.get("arguments") or "")
    status, reason = ending(choice.get("finish_reason"))
    builder.finish(usage(chat.get("usage")), status, reason)
    return builder.response(status, reason)


def _logprobs(request: dict[str, Any], choice: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The choice's (or chunk's) content logprobs, when the request's `include` asked for them:
    chat's entries have the Responses shape already (token, logprob, bytes, top_logprobs)."""
    if not wants_logprobs(request):
        return None
    logprobs = choice.get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    return [entry for entry in content if isinstance(entry, dict)] if isinstance(content, list) else []


def _text(content: Any) -> str:
    if isinstance(content, list):  # a few servers answer with parts
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


class StreamTranslator:
    """Chat completion chunks in, Responses events out, chunk by chunk.

    `feed()` takes upstream bytes as they arrive and returns the encoded events the
    complete chunks among them produced; `close()` ends the stream when upstream did. The
    final event waits for `[DONE]` (or upstream's end), since the usage chunk comes after
    the one with the finish reason.
    """

    def __init__(self, request: dict[str, Any], model: str) -> None:
        self.builder = ResponseBuilder(request, model, events=True)
        self.request = request
        self.ended = False
        self._events = EventBuffer()
        self._started = False
        self._finish_reason: str | None = None
        self._usage: dict[str, Any] | None = None

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        for event in events_of(self._events.push(data)):
            if self.ended:  # what comes after the end is not passed on
                break
            out += self._event(event)
        return out

    def close(self) -> list[bytes]:
        """Upstream's stream is over: the final event, or an error when the answer had not ended."""
        if self.ended:
            return []
        rest = self._events.rest()
        if rest.strip():
            out = self._event(rest)
            if self.ended:
                return out
        else:
            out = []
        if self._finish_reason is None:
            return out + self.fail("upstream's stream ended before the answer was complete", "upstream_stream_error")
        return out + self._end()

    def fail(self, message: str, code: str | None = None) -> list[bytes]:
        """End with the Responses `error` event (the SDKs raise it)."""
        if self.ended:
            return []
        self.ended = True
        return self._start() + self.builder.fail(message, code)

    def _event(self, event: bytes) -> list[bytes]:
        data = b"\n".join(line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:"))
        if not data:
            return []  # a comment or a keep-alive
        if data == b"[DONE]":
            return self._end()
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return self.fail("upstream sent an event that is not JSON", "upstream_stream_error")
        if not isinstance(chunk, dict):
            return []
        error = chunk.get("error")
        if error is not None:
            error = error if isinstance(error, dict) else {"message": str(error)}
            return self.fail(str(error.get("message") or "upstream reported an error"), error.get("code"))
        return self._chunk(chunk)

    def _chunk(self, chunk: dict[str, Any]) -> list[bytes]:
        choices = chunk.get("choices") or []
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        elif not choices:
            return []  # e.g. Azure's prompt-filter chunk, before the answer
        if not self._started and chunk.get("model"):
            self.builder.model = chunk["model"]
        out = self._start()
        builder = self.builder
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            out += builder.text(delta.get("content") or delta.get("refusal") or "", _logprobs(self.request, choice))
            for call in delta.get("tool_calls") or []:
                function = call.get("function") or {}
                out += builder.tool_call(call.get("index", 0), call.get("id"), function.get("name"),
                                         function.get("arguments") or "")
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
        return out

    def _start(self) -> list[bytes]:
        if self._started:
            return []
        self._started = True
        return self.builder.start()

    def _end(self) -> list[bytes]:
        self.ended = True
        status, reason = ending(self._finish_reason)
        return self._start() + self.builder.finish(usage(self._usage), status, reason)
