"""The mock's Responses API answers: the `response` object, or its event stream, from one `Answer`.

ResponseBuilder (proxy/responses/builder.py) does the shapes; this feeds it the answer a
delta at a time, as a model would, with usage in the Responses shape.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..responses.builder import ResponseBuilder, responses_usage
from .mock_answer import Answer


def responses_body(payload: dict[str, Any], said: Answer) -> bytes:
    """The whole `response` object."""
    builder = _builder(payload, events=False)
    _feed(builder, said, [said.call.arguments if said.call else said.text or ""])
    return orjson.dumps(builder.response(*_ending(said)))


def responses_events(payload: dict[str, Any], said: Answer) -> list[bytes]:
    """The SSE events, `response.created` to `response.completed` (no `[DONE]`: the API sends none)."""
    builder = _builder(payload, events=True)
    return builder.start() + _feed(builder, said, said.pieces())


def _builder(payload: dict[str, Any], events: bool) -> ResponseBuilder:
    return ResponseBuilder(payload, str(payload.get("model", "echo")), events=events)


def _feed(builder: ResponseBuilder, said: Answer, pieces: list[str]) -> list[bytes]:
    out = []
    if said.call is not None:
        out += builder.tool_call(0, said.call.id, said.call.name)
        for piece in pieces:
            out += builder.tool_call(0, arguments=piece)
    else:
        for piece in pieces:
            out += builder.text(piece)
    return out + builder.finish(responses_usage(said.prompt_tokens, said.completion_tokens), *_ending(said))


def _ending(said: Answer) -> tuple[str, str | None]:
    """The response's status and why it is incomplete: cut at `max_output_tokens`, or whole."""
    return ("incomplete", "max_output_tokens") if said.cut else ("completed", None)
