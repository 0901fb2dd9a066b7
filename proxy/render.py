"""Readable renderings of requests and answers for the log's `prompt` and `response` columns."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from typing import Any

from .endpoints import RESPONSES_ENDPOINTS

#: Bytes per dimension of a base64 embedding: OpenAI packs little-endian float32 values.
FLOAT32_BYTES = 4


def content_text(content: Any) -> str:
    """The text of a message's `content`: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict):
                if part.get("type") == "text" or "text" in part:
                    parts.append(str(part.get("text", "")))
                else:
                    parts.append(f"[{part.get('type', 'part')}]")
        return "\n".join(parts)
    return ""


def render_prompt(endpoint: str, payload: dict[str, Any]) -> str | None:
    """`role: text` blocks for chat and the Responses API, the prompt for completions, the input for embeddings."""
    if endpoint in RESPONSES_ENDPOINTS:
        from .responses.rows import render_prompt as render_responses_prompt

        return render_responses_prompt(payload)
    if endpoint == "chat/completions":
        messages = payload.get("messages")
        if not isinstance(messages, list):
            return None
        blocks = []
        for message in messages:
            if isinstance(message, dict):
                text = with_tool_calls(content_text(message.get("content")), message.get("tool_calls"))
                blocks.append(f"{message.get('role', '?')}: {text}")
        return "\n\n".join(blocks)
    value = payload.get("prompt" if endpoint == "completions" else "input")
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        if value and all(isinstance(v, int) for v in value):  # one prompt as token ids: one line
            return " ".join(map(str, value))
        return "\n".join(v if isinstance(v, str) else str(v) for v in value)  # a batch: one line each
    return None


def render_answer(endpoint: str, answer: dict[str, Any]) -> str | None:
    """The assistant's text of a non-streamed answer (choices joined when there are several)."""
    if endpoint.startswith("responses"):
        from .responses.rows import render_answer as render_responses_answer

        return render_responses_answer(answer)
    if endpoint == "embeddings":
        data = answer.get("data")
        if isinstance(data, list) and data and isinstance(data[0], dict):
            dimensions = embedding_dimensions(data[0].get("embedding"))
            return f"[{len(data)} embedding(s) of {'?' if dimensions is None else dimensions} dimensions]"
        return None
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices:
        return None
    texts = []
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        if endpoint == "completions":
            texts.append(str(choice.get("text") or ""))
            continue
        message = choice.get("message") or {}
        text = content_text(message.get("content")) or str(message.get("refusal") or "")
        texts.append(with_tool_calls(text, message.get("tool_calls")))
    return "\n\n---\n\n".join(texts)


#: How an answer ends by itself; any other `finish_reason` (`length`, `content_filter`…) cut it.
NATURAL_ENDINGS = frozenset({"stop", "tool_calls", "function_call"})


def ending_metadata(answer: dict[str, Any] | None) -> dict[str, Any]:
    """`finish_reason` for the row's metadata when a chat or legacy completion was cut
    (`length`, `content_filter`…), so that a study can find the answers that did not end
    by themselves; one value, or each choice's when one of `n` was cut."""
    choices = answer.get("choices") if isinstance(answer, dict) else None
    reasons = [c.get("finish_reason") for c in choices or () if isinstance(c, dict)]
    if all(reason in NATURAL_ENDINGS or not isinstance(reason, str) for reason in reasons):
        return {}
    return {"finish_reason": reasons[0] if len(set(reasons)) == 1 else reasons}


def embedding_dimensions(embedding: Any) -> int | None:
    """How many numbers an embedding holds: a list's length, or a base64 string's float32 count
    (the SDKs ask for base64 by default, and its length in characters says nothing)."""
    if isinstance(embedding, list):
        return len(embedding)
    if isinstance(embedding, str):
        try:
            return len(base64.b64decode(embedding, validate=True)) // FLOAT32_BYTES
        except binascii.Error:
            return None
    return None


def with_tool_calls(text: str, calls: Any) -> str:
    """The message's text, then one `[tool call] name(arguments)` line per call, joined by
    newlines: how a message with tool calls reads in the `prompt` and `response` columns."""
    lines = [text] if text else []
    lines += [line for call in (calls if isinstance(calls, Iterable) else ()) if (line := tool_call_text(call))]
    return "\n".join(lines)


def tool_call_text(call: Any) -> str:
    """`[tool call] name(arguments)`, or "" for something that is not a function call."""
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict):
        return ""
    return f"[tool call] {function.get('name', '')}({function.get('arguments', '')})"
