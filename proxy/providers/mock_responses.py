"""The mock's Responses API answers: the `response` object, or its event stream, from one `Answer`;
and the compaction and input token count of a conversation.

ResponseBuilder (proxy/responses/builder.py) does the shapes; this feeds it the answer a
delta at a time, as a model would, with usage in the Responses shape.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import orjson

from ..responses.builder import ResponseBuilder, new_id, responses_usage
from ..responses.rows import render_prompt
from ..responses.state import input_items
from .mock_answer import Answer
from .mock_conversation import Conversation
from .mock_logprobs import tokens


def input_token_count(conversation: Conversation) -> dict[str, Any]:
    """`POST /responses/input_tokens`: the words the mock counts as a response's input tokens."""
    return {"object": "response.input_tokens", "input_tokens": conversation.words()}


def compaction(payload: dict[str, Any], conversation: Conversation) -> dict[str, Any]:
    """`POST /responses/compact`, shaped as OpenAI answers it: the user's messages kept, then one
    `compaction` item standing for everything else. The mock has no secret to encrypt with:
    its `encrypted_content` is the folded items as base64-encoded JSON."""
    kept, folded = [], []
    for item in input_items(payload):
        if item.get("type", "message") == "message" and item.get("role") == "user":
            kept.append({"id": new_id("msg"), "type": "message", "status": "completed", "role": "user",
                         "content": _input_parts(item.get("content"))})
        else:
            folded.append(item)
    content = base64.b64encode(orjson.dumps(folded)).decode()
    summary = render_prompt({"input": folded}) or ""  # what was folded, in words, for the usage
    return {
        "id": new_id("cmp"),
        "object": "response.compaction",
        "created_at": int(time.time()),
        "output": [*kept, {"id": new_id("cmp"), "type": "compaction", "encrypted_content": content}],
        "usage": responses_usage(conversation.words(), len(summary.split())),
    }


def _input_parts(content: Any) -> list[Any]:
    """A user message's content as a list of parts (a string is one `input_text`)."""
    return [{"type": "input_text", "text": content}] if isinstance(content, str) else list(content or ())


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
