"""A stored response streamed again: `GET /v1/responses/{id}?stream=true` for providers that keep nothing.

OpenAI streams a response again to a client that (re)connects, from the event after
`starting_after`. The mock and translated providers keep no responses; the proxy has the
final response object in its log and rebuilds the events from it: the same items with the
same ids, text a word at a time and arguments in short pieces, as the mock streams them.
For the mock that is the very sequence it sent the first time, so a client that resumes
after the event it saw last gets exactly the rest. For a translated provider the content and
the numbering are the same rule's, not the upstream's own chunks. Deltas carry no logprobs
(the parts at the end have them).
"""

from __future__ import annotations

from itertools import count
from typing import Any

from .builder import FINAL_EVENTS, argument_pieces, word_pieces


def replayed_events(response: dict[str, Any]) -> list[dict[str, Any]]:
    """The event sequence of `response`, `response.created` to its final event, numbered from 0."""
    numbers = count()

    def event(kind: str, **fields: Any) -> dict[str, Any]:
        return {"type": kind, **fields, "sequence_number": next(numbers)}

    snapshot = {**response, "status": "in_progress", "output": [], "usage": None, "incomplete_details": None}
    events = [event("response.created", response=snapshot), event("response.in_progress", response=snapshot)]
    for index, item in enumerate(_list(response.get("output"))):
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        opened = {**item, "status": "in_progress"}
        if kind == "message":
            opened["content"] = []
        elif kind == "function_call":
            opened["arguments"] = ""
        events.append(event("response.output_item.added", output_index=index, item=opened))
        if kind == "message":
            events += _message_events(event, item, index)
        elif kind == "function_call":
            arguments = str(item.get("arguments") or "")
            events += [event("response.function_call_arguments.delta", item_id=item.get("id"), output_index=index,
                             delta=piece) for piece in argument_pieces(arguments)]
            events.append(event("response.function_call_arguments.done", item_id=item.get("id"), output_index=index,
                                name=item.get("name"), arguments=arguments))
        events.append(event("response.output_item.done", output_index=index, item=item))
    final = FINAL_EVENTS.get(str(response.get("status")), "response.completed")
    return [*events, event(final, response=response)]


def _message_events(event: Any, item: dict[str, Any], index: int) -> list[dict[str, Any]]:
    events = []
    for part_index, part in enumerate(_list(item.get("content"))):
        if not isinstance(part, dict):
            continue
        at = {"item_id": item.get("id"), "output_index": index, "content_index": part_index}
        text, is_text = str(part.get("text") or ""), part.get("type") == "output_text"
        events.append(event("response.content_part.added", **at, part={**part, "text": "", "logprobs": []} if is_text else part))
        if is_text:
            events += [event("response.output_text.delta", **at, delta=piece, logprobs=[])
                       for piece in word_pieces(text) if piece]
            events.append(event("response.output_text.done", **at, text=text, logprobs=part.get("logprobs") or []))
        events.append(event("response.content_part.done", **at, part=part))
    return events


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
