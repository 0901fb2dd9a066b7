"""What the log keeps of a Responses API call: readable prompt and answer, token columns, metadata.

A Responses request is `instructions` plus `input` (a string or a list of items: messages,
function calls and their outputs); its answer is a list of output items. Both are rendered
as `role: text` blocks like chat, so rows of the two APIs read and search alike.
"""

from __future__ import annotations

from typing import Any

from ..render import content_text, tool_call_text


def render_prompt(payload: dict[str, Any]) -> str | None:
    """`system: <instructions>` then one block per input item."""
    blocks = []
    instructions = payload.get("instructions")
    if isinstance(instructions, str) and instructions:
        blocks.append(f"system: {instructions}")
    value = payload.get("input")
    if isinstance(value, str):
        blocks.append(f"user: {value}")
    elif isinstance(value, list):
        blocks.extend(_item_block(item) for item in value if isinstance(item, dict))
    elif not blocks:
        return None
    return "\n\n".join(blocks)


def render_answer(answer: dict[str, Any]) -> str | None:
    """The output text, with each function call as `[tool call] name(arguments)`; for a
    compaction, the messages it kept as blocks, then `[compaction]`; for a count, the count."""
    if answer.get("object") == "response.input_tokens":
        return f"[{answer.get('input_tokens')} input tokens]"
    output = answer.get("output")
    if not isinstance(output, list):
        return None
    if answer.get("object") == "response.compaction":
        return "\n\n".join(_item_block(item) for item in output if isinstance(item, dict))
    pieces = [_output_text(item) for item in output if isinstance(item, dict)]
    return "\n".join(piece for piece in pieces if piece)


def usage_columns(usage: dict[str, Any]) -> dict[str, Any]:
    """Responses usage (`input_tokens`, `output_tokens`, …) under chat's names, as the columns and the pricer read them."""
    if "input_tokens" not in usage:
        return usage
    details = usage.get("input_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return {
        "prompt_tokens": usage.get("input_tokens"),
        "completion_tokens": usage.get("output_tokens"),
        "total_tokens": usage.get("total_tokens"),
        "prompt_tokens_details": {"cached_tokens": cached or 0},
    }


def response_metadata(answer: dict[str, Any] | None, usage: dict[str, Any] | None) -> dict[str, Any]:
    """The upstream's response id, the token details that have no column of their own, and
    for a response that did not complete, its `status` and `incomplete_reason`."""
    metadata: dict[str, Any] = {}
    if isinstance(answer, dict) and isinstance(answer.get("id"), str):
        metadata["response_id"] = answer["id"]
    status = answer.get("status") if isinstance(answer, dict) else None
    if isinstance(status, str) and status != "completed":
        metadata["status"] = status
        details = answer.get("incomplete_details")  # type: ignore[union-attr]
        if isinstance(details, dict) and isinstance(details.get("reason"), str):
            metadata["incomplete_reason"] = details["reason"]
    if isinstance(usage, dict):
        for name, details, key in (
            ("cached_tokens", "input_tokens_details", "cached_tokens"),
            ("reasoning_tokens", "output_tokens_details", "reasoning_tokens"),
        ):
            value = usage.get(details)
            if isinstance(value, dict) and isinstance(value.get(key), int):
                metadata[name] = value[key]
    return metadata


def _item_block(item: dict[str, Any]) -> str:
    kind = item.get("type") or "message"
    if kind == "message":
        return f"{item.get('role', '?')}: {content_text(item.get('content'))}"
    if kind == "function_call":
        return "assistant: " + _call_text(item)
    if kind == "function_call_output":
        output = item.get("output")
        return f"tool: {output if isinstance(output, str) else content_text(output)}"
    return f"[{kind}]"


def _output_text(item: dict[str, Any]) -> str:
    kind = item.get("type")
    if kind == "message":
        parts = item.get("content")
        if isinstance(parts, list):
            return "".join(
                str(part.get("text") or part.get("refusal") or "") for part in parts if isinstance(part, dict)
            )
        return content_text(parts)
    if kind == "function_call":
        return _call_text(item)
    return ""


def _call_text(item: dict[str, Any]) -> str:
    return tool_call_text({"function": {"name": item.get("name", ""), "arguments": item.get("arguments", "")}})
