"""Readable renderings of requests and answers for the log's `prompt` and `response` columns."""

from __future__ import annotations

from typing import Any


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
    if endpoint == "responses":
        from .responses.rows import render_prompt as render_responses_prompt

        return render_responses_prompt(payload)
    if endpoint == "chat/completions":
        messages = payload.get("messages")
        if not isinstance(messages, list):
            return None
        blocks = []
        for message in messages:
            if isinstance(message, dict):
                text = content_text(message.get("content"))
                for call in message.get("tool_calls") or []:
                    text += tool_call_text(call)
                blocks.append(f"{message.get('role', '?')}: {text}")
        return "\n\n".join(blocks)
    value = payload.get("prompt" if endpoint == "completions" else "input")
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(v if isinstance(v, str) else str(v) for v in value)
    return None


def render_answer(endpoint: str, answer: dict[str, Any]) -> str | None:
    """The assistant's text of a non-streamed answer (choices joined when there are several)."""
    if endpoint.startswith("responses"):
        from .responses.rows import render_answer as render_responses_answer

        return render_responses_answer(answer)
    if endpoint == "embeddings":
        data = answer.get("data")
        if isinstance(data, list) and data and isinstance(data[0], dict):
            return f"[{len(data)} embedding(s) of {len(data[0].get('embedding') or [])} dimensions]"
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
        for call in message.get("tool_calls") or []:
            text += tool_call_text(call)
        texts.append(text)
    return "\n\n---\n\n".join(texts)


def tool_call_text(call: Any) -> str:
    """`[tool call] name(arguments)`: how a tool call reads in the `response` column."""
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict):
        return ""
    return f"\n[tool call] {function.get('name', '')}({function.get('arguments', '')})"
