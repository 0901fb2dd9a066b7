"""Where the user's words are in each endpoint's body, and the body with them preprocessed.

Chat Completions: the text of every `user` message (a string, or its `text` parts), so that a
conversation's earlier turns are sent as they were the first time. The Responses API: `input`
as a string, or the text of its user message items. Legacy completions: `prompt`; embeddings:
`input` (strings only: token arrays are left alone). System, developer, assistant and tool
messages are not the user's input and are sent as they are.

The body may not have been validated yet (a row for a bad request must not keep what a step
would have removed either), so anything of an unexpected shape is passed over.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from ..endpoints import RESPONSES_ENDPOINTS
from .steps import Steps, apply_steps


def preprocess_payload(
    endpoint: str, payload: dict[str, Any], steps: Steps, templates: Mapping[str, str]
) -> tuple[dict[str, Any], Counter[str]]:
    """A new body with the user's texts run through `steps` (the client's is not changed), and the counts."""
    counts: Counter[str] = Counter()

    def text(value: str) -> str:
        return apply_steps(value, steps, templates, counts)

    if endpoint == "chat/completions":
        messages = payload.get("messages")
        if isinstance(messages, list):
            payload = {**payload, "messages": [_message(m, text, "text") for m in messages]}
    elif endpoint in RESPONSES_ENDPOINTS:
        value = payload.get("input")
        if isinstance(value, str):
            payload = {**payload, "input": text(value)}
        elif isinstance(value, list):
            payload = {**payload, "input": [_message(item, text, "input_text") for item in value]}
    else:
        field = "prompt" if endpoint == "completions" else "input"
        value = payload.get(field)
        if isinstance(value, str):
            payload = {**payload, field: text(value)}
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            payload = {**payload, field: [text(v) for v in value]}
    return payload, counts


def _message(message: Any, text: Any, part_type: str) -> Any:
    """A user message (or input item) with its text preprocessed; anything else as it is."""
    if not isinstance(message, dict) or message.get("role") != "user" or message.get("type", "message") != "message":
        return message
    content = message.get("content")
    if isinstance(content, str):
        return {**message, "content": text(content)}
    if isinstance(content, list):
        parts = [
            {**part, "text": text(part["text"])}
            if isinstance(part, dict) and part.get("type") in (part_type, "text") and isinstance(part.get("text"), str)
            else part
            for part in content
        ]
        return {**message, "content": parts}
    return message


def summary(steps: Steps, counts: Counter[str]) -> dict[str, Any]:
    """What the row's `metadata.preprocess` says: each step that ran and what it changed, e.g.
    `{"pii": {"EMAIL": 1, "PHONE": 2}, "truncate": 1}` (texts changed; pii: replacements per kind)."""
    noted: dict[str, Any] = {}
    for name in steps.names():
        if name == "pii":
            noted["pii"] = {key[4:]: n for key, n in sorted(counts.items()) if key.startswith("pii:")}
        else:
            noted[name] = counts[name]
    return noted
