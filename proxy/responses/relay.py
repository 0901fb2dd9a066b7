"""A Responses API event stream, forwarded as it comes and read on the way for the log.

`ResponsesRelay` has the same face as `streaming.StreamRelay` (feed, flush, text,
assembled, usage, error, first_token_at, fail), so `RelayedStream` carries either. The
events pass through unchanged; the relay notes the response id, the text deltas (the
first one is the time to first token), and the final `response` object that
`response.completed`, `response.incomplete` or `response.failed` carries, which is what
the row's `response_json` keeps. Events are read after they were forwarded (at the next
chunk, or when the log asks): only the first token's time is taken as the bytes pass.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from ..event_buffer import EventBuffer
from .builder import error_event, sse_event
from .rows import render_answer

FINAL_TYPES = frozenset({"response.completed", "response.incomplete", "response.failed"})
#: The events whose delta is a token of the answer: the first one sets `ttft_ms`.
TOKEN_TYPES = frozenset({"response.output_text.delta", "response.refusal.delta", "response.function_call_arguments.delta"})
TOKEN_MARKS = tuple(kind.encode() for kind in TOKEN_TYPES)


class ResponsesRelay:
    def __init__(self) -> None:
        self._events = EventBuffer()
        self._texts: list[str] = []
        self._forwarded: list[bytes] = []  # sent on, not read yet
        self._last_sequence = -1
        self._final: dict[str, Any] | None = None
        self._usage: dict[str, Any] | None = None
        self._error: dict[str, Any] | None = None
        self.first_token_at: float | None = None
        self.id: str | None = None
        self.model: str | None = None

    @property
    def final(self) -> dict[str, Any] | None:
        self._read_forwarded()
        return self._final

    @property
    def usage(self) -> dict[str, Any] | None:
        self._read_forwarded()
        return self._usage

    @property
    def error(self) -> dict[str, Any] | None:
        self._read_forwarded()
        return self._error

    @property
    def done(self) -> bool:
        return self.final is not None

    def feed(self, chunk: bytes) -> bytes:
        """Bytes to forward now (whole events), keeping a partial event for later."""
        self._read_forwarded()
        ready = self._events.push(chunk)
        if not ready:
            return b""
        if self.first_token_at is None and any(mark in ready for mark in TOKEN_MARKS):
            self.first_token_at = time.perf_counter()
        self._forwarded.append(ready)
        return ready

    def flush(self) -> bytes:
        """A partial event left when upstream closed, forwarded as it is."""
        rest = self._events.rest()
        if not rest.strip():
            return b""
        self._forwarded.append(rest)
        return rest + b"\n\n"

    @property
    def text(self) -> str:
        if self.final is not None:
            return render_answer(self.final) or ""
        return "".join(self._texts)

    def assembled(self) -> dict[str, Any]:
        """The final response object; for a stream cut short, what had arrived of it."""
        if self.final is not None:
            return self.final
        partial: dict[str, Any] = {
            "id": self.id, "object": "response", "status": "incomplete", "model": self.model,
            "output": [{"type": "message", "role": "assistant",
                        "content": [{"type": "output_text", "text": "".join(self._texts)}]}],
            "usage": self.usage,
        }
        if self.error is not None:
            partial["error"] = self.error
        return partial

    def fail(self, message: str, code: str | None = None) -> bytes:
        """The `error` event that ends a stream the proxy could not finish (the SDK raises it)."""
        self._read_forwarded()
        return sse_event({**error_event(message, code), "sequence_number": self._last_sequence + 1})

    def _read_forwarded(self) -> None:
        while self._forwarded:
            for event in self._forwarded.pop(0).split(b"\n\n"):
                if event:
                    self._read(event)

    def _read(self, event: bytes) -> None:
        data = b"\n".join(line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:"))
        if not data:
            return
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(obj, dict):
            return
        sequence = obj.get("sequence_number")
        if isinstance(sequence, int):
            self._last_sequence = sequence
        kind = obj.get("type")
        if kind in TOKEN_TYPES:
            if kind != "response.function_call_arguments.delta" and isinstance(obj.get("delta"), str):
                self._texts.append(obj["delta"])
        elif kind == "response.created":
            self._note(obj.get("response"))
        elif kind in FINAL_TYPES:
            response = obj.get("response")
            if isinstance(response, dict):
                self._note(response)
                self._final = response
                usage = response.get("usage")
                self._usage = usage if isinstance(usage, dict) else None
                if kind == "response.failed":
                    error = response.get("error")
                    self._error = error if isinstance(error, dict) else {"message": "the response failed"}
        elif kind == "error" or isinstance(obj.get("error"), dict) and kind is None:
            error = obj.get("error")
            self._error = error if isinstance(error, dict) else {"message": obj.get("message"), "code": obj.get("code")}

    def _note(self, response: Any) -> None:
        if isinstance(response, dict):
            self.id = self.id or response.get("id")
            self.model = self.model or response.get("model")
