"""A built-in upstream that answers in-process, so that the whole loop works offline.

It echoes the last user message, streams word by word and reports usage. Its "tokens"
are whitespace-separated words: honest counts of what it produced, not a tokenizer's.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from ..render import content_text
from ..upstream import UpstreamClient, UpstreamRequest, UpstreamResponse
from .base import Provider


class MockProvider(Provider):
    keeps_responses = False  # the proxy answers follow-ups about the mock's responses from its log

    def url(self, endpoint: str, upstream_model: str) -> str:
        return f"mock:///{endpoint}"

    async def send(self, client: UpstreamClient, request: UpstreamRequest) -> UpstreamResponse:
        payload = orjson.loads(request.body)
        endpoint = request.url.removeprefix("mock:///")
        if endpoint == "embeddings":
            return MockResponse(orjson.dumps(_embeddings(payload)))
        answer = _answer(endpoint, payload)
        if payload.get("stream"):
            return MockResponse(_sse(endpoint, payload, answer), content_type="text/event-stream")
        return MockResponse(orjson.dumps(_completion(endpoint, payload, answer)))


class MockResponse:
    """An `UpstreamResponse` held in memory."""

    def __init__(self, body: bytes | list[bytes], content_type: str = "application/json") -> None:
        self._chunks = body if isinstance(body, list) else [body]
        self.status_code = 200
        self.headers = {"content-type": content_type, "x-request-id": f"mock-{time.monotonic_ns():x}"}

    async def read(self) -> bytes:
        return b"".join(self._chunks)

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk

    async def close(self) -> None:
        return None


def _prompt_text(endpoint: str, payload: dict[str, Any]) -> tuple[str, str]:
    """(everything the client sent, what the user said last)."""
    if endpoint == "completions":
        prompt = payload.get("prompt", "")
        text = prompt if isinstance(prompt, str) else " ".join(map(str, prompt))
        return text, text
    messages = [m for m in payload.get("messages", []) if isinstance(m, dict)]
    said = [content_text(m.get("content")) for m in messages]
    last_user = next((s for m, s in zip(reversed(messages), reversed(said)) if m.get("role") == "user"), "")
    return " ".join(said), last_user


def _answer(endpoint: str, payload: dict[str, Any]) -> str:
    return f"Mock answer to: {_prompt_text(endpoint, payload)[1]}"


def _usage(endpoint: str, payload: dict[str, Any], answer: str) -> dict[str, int]:
    prompt_tokens = len(_prompt_text(endpoint, payload)[0].split())
    completion_tokens = len(answer.split())
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _envelope(endpoint: str, payload: dict[str, Any], chunk: bool) -> dict[str, Any]:
    kind = "text_completion" if endpoint == "completions" else "chat.completion"
    return {
        "id": f"mock-{time.monotonic_ns():x}",
        "object": f"{kind}.chunk" if chunk and endpoint != "completions" else kind,
        "created": int(time.time()),
        "model": payload.get("model", "echo"),
    }


def _choice(endpoint: str, text: str, finish_reason: str | None, delta: bool) -> dict[str, Any]:
    if endpoint == "completions":
        return {"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}
    key = "delta" if delta else "message"
    message = {"content": text} if delta else {"role": "assistant", "content": text}
    return {"index": 0, key: message, "finish_reason": finish_reason}


def _completion(endpoint: str, payload: dict[str, Any], answer: str) -> dict[str, Any]:
    return {
        **_envelope(endpoint, payload, chunk=False),
        "choices": [_choice(endpoint, answer, "stop", delta=False)],
        "usage": _usage(endpoint, payload, answer),
    }


def _sse(endpoint: str, payload: dict[str, Any], answer: str) -> list[bytes]:
    envelope = _envelope(endpoint, payload, chunk=True)
    words = answer.split(" ")
    events = [
        {**envelope, "choices": [_choice(endpoint, word if i == 0 else f" {word}", None, delta=True)]}
        for i, word in enumerate(words)
    ]
    events.append({**envelope, "choices": [_choice(endpoint, "", "stop", delta=True)]})
    if (payload.get("stream_options") or {}).get("include_usage"):
        events.append({**envelope, "choices": [], "usage": _usage(endpoint, payload, answer)})
    return [b"data: " + orjson.dumps(e) + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]


def _embeddings(payload: dict[str, Any]) -> dict[str, Any]:
    inputs = payload.get("input", "")
    inputs = [inputs] if isinstance(inputs, str) else list(inputs)
    data = [
        {"object": "embedding", "index": i, "embedding": _vector(str(text))} for i, text in enumerate(inputs)
    ]
    tokens = sum(len(str(text).split()) for text in inputs)
    return {
        "object": "list",
        "data": data,
        "model": payload.get("model", "echo"),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _vector(text: str, dimensions: int = 8) -> list[float]:
    """A deterministic unit-free vector: the same text always embeds the same way."""
    digest = hashlib.sha256(text.encode()).digest()
    return [round(b / 255 * 2 - 1, 6) for b in digest[:dimensions]]
