"""The bodies of chat and completions answers, whole and streamed, and what the fake reads from a request.

Tests import the same functions to know what the proxy should have passed through:
`chat_answer(text)` is what any chat call answers, `USAGE` what it reports.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

#: Usage reported for every chat and completions answer (streamed or not).
USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
#: The tool call a `tool-call-*` model makes.
TOOL_CALL = {"id": "call_fake_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
#: How many characters of TOOL_CALL's arguments each streamed piece carries.
TOOL_ARGUMENT_PIECE = 6


def chat_answer(last_user_message: str) -> str:
    """The text the fake answers to a chat request."""
    return f"Fake answer to: {last_user_message}"


def completion_answer(prompt: str) -> str:
    """The text the fake answers to a (legacy) completions request."""
    return f"Fake completion of: {prompt}"


def stream_words(text: str) -> list[str]:
    """How an answer is split into chunks: word by word, spaces kept."""
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def asked_text(body: Any) -> str | None:
    """The last user message of a chat body, or the prompt of a completions body."""
    if not isinstance(body, dict):
        return None
    if "messages" in body:
        return last_user_message(body["messages"])
    prompt = body.get("prompt")
    return prompt if isinstance(prompt, str) else None


def last_user_message(messages: Any) -> str:
    """The text of the last user message (its text parts joined); "" when there is none."""
    for message in reversed(messages if isinstance(messages, list) else []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            return str(content)
    return ""


def last_tool_output(messages: Any) -> str | None:
    """The content of the last chat message when it is a tool result."""
    last = messages[-1] if isinstance(messages, list) and messages else None
    if isinstance(last, dict) and last.get("role") == "tool":
        return str(last.get("content"))
    return None


def first_tool_name(body: dict[str, Any]) -> str | None:
    """The name of the first function in a chat body's `tools`."""
    tools = body.get("tools")
    if isinstance(tools, list) and tools and isinstance(tools[0], dict):
        name = (tools[0].get("function") or {}).get("name")
        return name if isinstance(name, str) else None
    return None


def error(
    status: int,
    message: str,
    type: str,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An answer with an OpenAI error body."""
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def envelope(endpoint: str, model: str, stream: bool) -> dict[str, Any]:
    """The fields around the choices of a chat or text completion, or of each chunk of one streamed."""
    chat = endpoint == "chat/completions"
    suffix = "-stream" if stream else ""
    return {
        "id": ("chatcmpl-fake" if chat else "cmpl-fake") + suffix,
        "object": ("chat.completion.chunk" if stream else "chat.completion") if chat else "text_completion",
        "created": 1_700_000_000,
        "model": model,
        "system_fingerprint": "fp_fake",
    }


def completion(endpoint: str, model: str, text: str, with_usage: bool) -> dict[str, Any]:
    """A whole chat completion (or, on `completions`, a text completion) answering `text`."""
    chat = endpoint == "chat/completions"
    choice: dict[str, Any] = {"index": 0, "finish_reason": "stop", "logprobs": None}
    if chat:
        choice["message"] = {"role": "assistant", "content": text, "refusal": None}
    else:
        choice["text"] = text
    answer = {**envelope(endpoint, model, stream=False), "choices": [choice]}
    if with_usage:
        answer["usage"] = dict(USAGE)
    return answer


def tool_call_completion(model: str, name: str = TOOL_CALL["function"]["name"]) -> dict[str, Any]:
    """A chat answer that is TOOL_CALL (of the function `name`) and no text."""
    answer = completion("chat/completions", model, "", with_usage=True)
    call = {**TOOL_CALL, "function": {**TOOL_CALL["function"], "name": name}}
    message = {"role": "assistant", "content": None, "tool_calls": [call]}
    answer["choices"][0] |= {"finish_reason": "tool_calls", "message": message}
    return answer


def tool_call_events(
    model: str, include_usage: bool, name: str = TOOL_CALL["function"]["name"]
) -> list[dict[str, Any]]:
    """TOOL_CALL streamed as OpenAI streams it: id, type and name in the first delta, then the arguments."""
    head = {"id": "chatcmpl-fake-tool", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

    first = {"index": 0, "id": TOOL_CALL["id"], "type": "function", "function": {"name": name, "arguments": ""}}
    events = [chunk({"role": "assistant", "content": None, "tool_calls": [first]})]
    arguments = TOOL_CALL["function"]["arguments"]
    events += [
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": arguments[i : i + TOOL_ARGUMENT_PIECE]}}]})
        for i in range(0, len(arguments), TOOL_ARGUMENT_PIECE)
    ]
    events.append(chunk({}, "tool_calls"))
    if include_usage:
        events.append({**head, "choices": [], "usage": dict(USAGE)})
    return events


def stream_events(endpoint: str, model: str, text: str, include_usage: bool, azure_first: bool) -> list[dict[str, Any]]:
    """`text` streamed word by word as chunks, after Azure's content-filter chunk when `azure_first`."""
    chat = endpoint == "chat/completions"
    head = envelope(endpoint, model, stream=True)

    def choice(piece: str | None, finish: str | None, role: bool = False) -> dict[str, Any]:
        if not chat:
            return {"index": 0, "text": piece or "", "finish_reason": finish, "logprobs": None}
        delta: dict[str, Any] = {}
        if role:
            delta["role"] = "assistant"
        if piece is not None:
            delta["content"] = piece
        return {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}

    events: list[dict[str, Any]] = []
    if azure_first:
        events.append({
            "id": "", "object": "", "created": 0, "model": "", "choices": [],
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {"hate": {"filtered": False, "severity": "safe"}}}],
        })
    if chat:
        events.append({**head, "choices": [choice("", None, role=True)]})
    events += [{**head, "choices": [choice(word, None)]} for word in stream_words(text)]
    events.append({**head, "choices": [choice(None if chat else "", "stop")]})
    if include_usage:
        events.append({**head, "choices": [], "usage": dict(USAGE)})
    return events
