"""The mock's Responses API answers: the `response` object, or its event stream, from one `Answer`.

ResponseBuilder (proxy/responses/builder.py) does the shapes; this feeds it the answer a
delta at a time, as a model would, with usage in the Responses shape.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..responses.builder import ResponseBuilder, responses_usage
from .mock_answer import Answer
from .mock_logprobs import tokens


def responses_body(payload: dict[str, Any], said: Answer, top: int | None) -> bytes:
    """The whole `response` object; `top`: logprob alternatives per token, None for no logprobs."""
    builder = _builder(payload, events=False)
    _feed(builder, said, top)
    return orjson.dumps(builder.response(*_ending(said)))


def responses_events(payload: dict[str, Any], said: Answer, top: int | None) -> list[bytes]:
    """The SSE events, `response.created` to `response.completed` (no `[DONE]`: the API sends none)."""
    builder = _builder(payload, events=True)
    return builder.start() + _feed(builder, said, top)


def _builder(payload: dict[str, Any], events: bool) -> ResponseBuilder:
    return ResponseBuilder(payload, str(payload.get("model", "echo")), events=events)


def _feed(builder: ResponseBuilder, said: Answer, top: int | None) -> list[bytes]:
    """The answer a piece at a time, as a model streams it (a whole answer is fed the same way)."""
    out = []
    if said.call is not None:
        out += builder.tool_call(0, said.call.id, said.call.name)
        for piece in said.pieces():
            out += builder.tool_call(0, arguments=piece)
    else:
        for piece in said.pieces():
            out += builder.text(piece, None if top is None else tokens([piece], top))
    return out + builder.finish(responses_usage(said.prompt_tokens, said.completion_tokens), *_ending(said))


def _ending(said: Answer) -> tuple[str, str | None]:
    """The response's status and why it is incomplete: cut at `max_output_tokens`, or whole."""
    return ("incomplete", "max_output_tokens") if said.cut else ("completed", None)
