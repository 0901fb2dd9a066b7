"""The fake upstream's Responses API: `POST …/responses` (whole or streamed) and follow-ups by id.

Written by hand from OpenAI's API reference, independently of the proxy's own builder, so
that tests compare the proxy against an outside idea of the format. Like OpenAI it keeps
the responses it created: `GET`/`DELETE …/responses/{id}`, `GET …/input_items` and
`POST …/cancel` answer from that memory; a `previous_response_id` it does not know is a
400, as OpenAI answers.

The answer quotes the last user text of `input` ("Fake answer to: …"); usage is
`RESPONSES_USAGE`, with cached and reasoning token details so the log's metadata can be
checked. Two model modes of the fake upstream shape the answer here:

    tool-call-*   a `function_call` of the first tool offered, with TOOL_ARGUMENTS; once
                  the input ends with a `function_call_output`, text quoting that output
    json-*        the JSON text FAKE_JSON (for `text.format` json_schema)
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import orjson

RESPONSES_USAGE = {
    "input_tokens": 21,
    "input_tokens_details": {"cached_tokens": 5},
    "output_tokens": 9,
    "output_tokens_details": {"reasoning_tokens": 2},
    "total_tokens": 30,
}

#: What a `json-*` model answers, and the arguments of a `tool-call-*` model's call.
FAKE_JSON = {"city": "Paris", "celsius": 21, "sunny": True}
TOOL_ARGUMENTS = {"city": "Paris"}

_ids = itertools.count(1)


def tool_result_answer(output: Any) -> str:
    """The text a `tool-call-*` model answers once it has the tool's output (here and on chat paths)."""
    return f"Fake answer after the tool said: {output}"


def answer_items(body: dict[str, Any], kind: str, text: str, number: int) -> list[dict[str, Any]]:
    """The output items for a model mode (see the module docstring)."""
    value = body.get("input")
    last = value[-1] if isinstance(value, list) and value and isinstance(value[-1], dict) else {}
    tools = [tool for tool in body.get("tools") or [] if isinstance(tool, dict) and tool.get("type") == "function"]
    if kind.startswith("tool-call") and tools and last.get("type") != "function_call_output":
        return [{"id": f"fc_fake{number}", "type": "function_call", "status": "completed", "call_id": f"call_fake{number}",
                 "name": tools[0]["name"], "arguments": orjson.dumps(TOOL_ARGUMENTS).decode()}]
    if last.get("type") == "function_call_output":
        text = tool_result_answer(last.get("output"))
    elif kind.startswith("json"):
        text = orjson.dumps(FAKE_JSON).decode()
    return [{"id": f"msg_fake{number}", "type": "message", "status": "completed", "role": "assistant",
             "content": [{"type": "output_text", "text": text, "annotations": []}]}]


def last_user_text(body: dict[str, Any]) -> str:
    value = body.get("input")
    if isinstance(value, str):
        return value
    for item in reversed(value if isinstance(value, list) else []):
        if isinstance(item, dict) and item.get("role") == "user":
            content = item.get("content")
            if isinstance(content, str):
                return content
            return " ".join(str(part.get("text", "")) for part in content or [] if isinstance(part, dict))
    return ""


def response_object(body: dict[str, Any], model: str, text: str, kind: str = "") -> dict[str, Any]:
    number = next(_ids)
    status = "completed"
    return {
        "id": f"resp_fake{number}", "object": "response", "created_at": 1_700_000_000, "status": status,
        "error": None, "incomplete_details": None, "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"), "model": model,
        "output": answer_items(body, kind, text, number),
        "parallel_tool_calls": True, "previous_response_id": body.get("previous_response_id"),
        "temperature": 1.0, "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [],
        "top_p": 1.0, "truncation": "disabled", "usage": dict(RESPONSES_USAGE),
        "metadata": {}, "store": True,
    }


def stream_events(final: dict[str, Any], split: Callable[[str], list[str]]) -> list[bytes]:
    """The event sequence of `final` (a completed response), each text or arguments cut by `split`."""
    started = {**final, "status": "in_progress", "output": [], "usage": None}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
    ]
    item = final["output"][0]
    if item["type"] == "function_call":
        position = {"item_id": item["id"], "output_index": 0}
        events.append({"type": "response.output_item.added", "output_index": 0,
                       "item": {**item, "status": "in_progress", "arguments": ""}})
        events += [{"type": "response.function_call_arguments.delta", **position, "delta": piece}
                   for piece in split(item["arguments"])]
        events.append({"type": "response.function_call_arguments.done", **position, "arguments": item["arguments"]})
    else:
        position = {"item_id": item["id"], "output_index": 0, "content_index": 0}
        text = item["content"][0]["text"]
        events += [
            {"type": "response.output_item.added", "output_index": 0, "item": {**item, "status": "in_progress", "content": []}},
            {"type": "response.content_part.added", **position, "part": {"type": "output_text", "text": "", "annotations": []}},
        ]
        events += [{"type": "response.output_text.delta", **position, "delta": word, "logprobs": []} for word in split(text)]
        events += [
            {"type": "response.output_text.done", **position, "text": text, "logprobs": []},
            {"type": "response.content_part.done", **position, "part": item["content"][0]},
        ]
    events += [
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": "response.completed", "response": final},
    ]
    return [
        b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps({**event, "sequence_number": n}) + b"\n\n"
        for n, event in enumerate(events)
    ]


#: What the fake counts as any conversation's input tokens (`POST …/responses/input_tokens`).
FAKE_INPUT_TOKENS = 7


def conversation_answer(action: str, body: dict[str, Any]) -> dict[str, Any]:
    """`POST …/responses/input_tokens` (a count) or `…/responses/compact` (the user's text kept, then
    one opaque compaction item), in OpenAI's shapes."""
    if action == "input_tokens":
        return {"object": "response.input_tokens", "input_tokens": FAKE_INPUT_TOKENS}
    kept = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": last_user_text(body)}]}
    return {"id": "cmp_fake", "object": "response.compaction", "created_at": 1,
            "output": [kept, {"type": "compaction", "id": "cmp_item_fake", "encrypted_content": "opaque"}],
            "usage": RESPONSES_USAGE}


class StoredResponses:
    """What an upstream with a Responses API remembers."""

    def __init__(self) -> None:
        self.responses: dict[str, dict[str, Any]] = {}
        self.inputs: dict[str, list[dict[str, Any]]] = {}

    def keep(self, body: dict[str, Any], response: dict[str, Any]) -> None:
        value = body.get("input")
        items = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": value}]}] \
            if isinstance(value, str) else list(value or [])
        self.inputs[response["id"]] = [{"id": f"item_{n}", **item} for n, item in enumerate(items)]
        self.responses[response["id"]] = response

    def follow_up(self, method: str, rest: str) -> tuple[int, dict[str, Any]]:
        """(status, body) for `GET|DELETE responses/{id}`, `POST …/cancel`, `GET …/input_items`."""
        response_id, _, action = rest.partition("/")
        if response_id not in self.responses:
            return 404, {"error": {"message": f"Response with id '{response_id}' not found.",
                                   "type": "invalid_request_error", "param": None, "code": None}}
        if method == "GET" and not action:
            return 200, self.responses[response_id]
        if method == "DELETE" and not action:
            del self.responses[response_id]
            return 200, {"id": response_id, "object": "response", "deleted": True}
        if method == "POST" and action == "cancel":
            return 400, {"error": {"message": "Cannot cancel a response that is not running in the background.",
                                   "type": "invalid_request_error", "param": None, "code": None}}
        if method == "GET" and action == "input_items":
            data = list(reversed(self.inputs[response_id]))
            return 200, {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                         "last_id": data[-1]["id"] if data else None, "has_more": False}
        return 404, {"error": {"message": "fake upstream: no such follow-up", "type": "invalid_request_error",
                               "param": None, "code": None}}
