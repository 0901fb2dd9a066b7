"""A built-in upstream that answers in-process, so that the whole loop works offline.

It behaves enough like a model for SDKs and agent frameworks to run against it: it echoes
the user's last message (`Mock answer to: …`), calls tools and answers in JSON when asked
(the rule is in mock_answer.py), serves Chat Completions, legacy completions, the Responses
API (mock_responses.py) and embeddings, streamed or whole, and of the forwarded endpoints
moderations and its model list (mock_forward.py). Its "tokens" are
whitespace-separated words: honest counts of what it produced, not a tokenizer's.

A plain echo reads no schema and builds no tool call: benchmarks use this path.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from ..errors import error_body
from ..upstream import UpstreamClient, UpstreamRequest, UpstreamResponse
from .base import Provider
from .mock_answer import Answer, answer
from .mock_conversation import MockRequestError, completion_prompts, from_chat, from_completions, from_responses
from .mock_embeddings import embeddings
from .mock_forward import forwarded_answer
from .mock_logprobs import completions_logprobs, completions_wanted, logprobs, responses_wanted, wanted
from .mock_params import check_parameters, choices, stop_sequences, token_limit
from .mock_responses import compaction, input_token_count, responses_body, responses_events

#: Forwarded calls (everything but the proxy's own endpoints) go to `mock:///v1/{path}`.
FORWARDED = "mock:///v1/"


class MockProvider(Provider):
    keeps_responses = False  # the proxy answers follow-ups about the mock's responses from its log

    def url(self, endpoint: str, upstream_model: str) -> str:
        return f"mock:///{endpoint}"

    def forward_url(self, path: str) -> str:
        return FORWARDED + path

    async def send(self, client: UpstreamClient, request: UpstreamRequest) -> UpstreamResponse:
        try:
            if request.url.startswith(FORWARDED):
                return _forwarded(request)
            return _answered(request.url.removeprefix("mock:///"), orjson.loads(request.body))
        except MockRequestError as exc:
            body = error_body(str(exc), "invalid_request_error", exc.param, "invalid_request")
        except (TypeError, ValueError, AttributeError, LookupError, RecursionError) as exc:
            # A value of a type no model expects, somewhere the mock reads (a schema whose
            # `properties` is a number, a tool name that is an object…): OpenAI answers 400.
            body = error_body(f"The mock model cannot read this request ({type(exc).__name__}: {exc}).",
                              "invalid_request_error", None, "invalid_request")
        return MockResponse(orjson.dumps(body), status_code=400)


def _answered(endpoint: str, payload: dict[str, Any]) -> MockResponse:
    stream = bool(payload.get("stream"))
    if endpoint == "embeddings":
        return MockResponse(orjson.dumps(embeddings(payload)))
    check_parameters(endpoint, payload)
    if endpoint == "responses/input_tokens":
        return MockResponse(orjson.dumps(input_token_count(from_responses(payload))))
    if endpoint == "responses/compact":
        return MockResponse(orjson.dumps(compaction(payload, from_responses(payload))))
    if endpoint == "responses":
        top = responses_wanted(payload)
        said = answer(from_responses(payload)).within(token_limit(endpoint, payload, top))
        if stream:
            return MockResponse(responses_events(payload, said, top), content_type="text/event-stream")
        return MockResponse(responses_body(payload, said, top))
    if endpoint == "completions":  # a batch of prompts: `n` choices for each, prompt after prompt
        conversations = [from_completions(prompt) for prompt in completion_prompts(payload)]
        top = completions_wanted(payload)
    else:
        conversations, top = [from_chat(payload)], wanted(payload)
    limit = token_limit(endpoint, payload, top, len(conversations))
    stops = stop_sequences(endpoint, payload)
    n = choices(payload)
    said = [answer(one).stopped(stops).within(limit) for one in conversations for _ in range(n)]  # own call ids
    if stream:
        return MockResponse(_sse(endpoint, payload, said, top, n), content_type="text/event-stream")
    return MockResponse(orjson.dumps(_completion(endpoint, payload, said, top, n)))


class MockResponse:
    """An `UpstreamResponse` held in memory."""

    def __init__(
        self, body: bytes | list[bytes], content_type: str = "application/json", status_code: int = 200
    ) -> None:
        self._chunks = body if isinstance(body, list) else [body]
        self.status_code = status_code
        self.headers = {"content-type": content_type, "x-request-id": f"mock-{time.monotonic_ns():x}"}

    async def read(self) -> bytes:
        return b"".join(self._chunks)

    async def iter_bytes(self, bounded: bool = True) -> AsyncIterator[bytes]:
        """Its chunks (made by the mock, which bounds its own answers: `bounded` changes nothing)."""
        for chunk in self._chunks:
            yield chunk

    async def close(self) -> None:
        return None


def _forwarded(request: UpstreamRequest) -> MockResponse:
    path = request.url.removeprefix(FORWARDED).partition("?")[0]
    status, body = forwarded_answer(request.method, path, request.body)
    return MockResponse(body, status_code=status)


def _usage(said: list[Answer], n: int) -> dict[str, int]:
    """Each prompt is read once (the `n` choices of a prompt are together); each choice's words count."""
    prompt, completion = sum(one.prompt_tokens for one in said[::n]), sum(one.completion_tokens for one in said)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _envelope(endpoint: str, payload: dict[str, Any], chunk: bool) -> dict[str, Any]:
    kind = "text_completion" if endpoint == "completions" else "chat.completion"
    return {
        "id": f"mock-{time.monotonic_ns():x}",
        "object": f"{kind}.chunk" if chunk and endpoint != "completions" else kind,
        "created": int(time.time()),
        "model": payload.get("model", "echo"),
    }


def _finish_reason(said: Answer) -> str:
    return "length" if said.cut else "stop" if said.call is None else "tool_calls"


def _completion(endpoint: str, payload: dict[str, Any], said: list[Answer], top: int | None, n: int) -> dict[str, Any]:
    choices = [_choice(endpoint, i, one, top) for i, one in enumerate(said)]
    return {**_envelope(endpoint, payload, chunk=False), "choices": choices, "usage": _usage(said, n)}


def _choice(endpoint: str, index: int, said: Answer, top: int | None) -> dict[str, Any]:
    if endpoint == "completions":
        return {"index": index, "text": said.text, "finish_reason": _finish_reason(said),
                "logprobs": completions_logprobs(said.pieces(), top)}
    message: dict[str, Any] = {"role": "assistant", "content": said.text}
    if said.call is not None:
        call = said.call
        message["tool_calls"] = [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
        ]
    return {"index": index, "message": message, "logprobs": logprobs(said, top), "finish_reason": _finish_reason(said)}


def _sse(endpoint: str, payload: dict[str, Any], said: list[Answer], top: int | None, n: int) -> list[bytes]:
    """The answer's chunks, one choice after the other: the first of each carries the role
    (chat), then a word or an arguments piece each, then its finish reason."""
    envelope = _envelope(endpoint, payload, chunk=True)
    choices: list[dict[str, Any]] = []
    for i, one in enumerate(said):
        if endpoint == "completions":
            offset = 0  # where each piece starts in the text, for `text_offset`
            for piece in one.pieces():
                choices.append({"index": i, "text": piece, "finish_reason": None,
                                "logprobs": completions_logprobs([piece], top, offset)})
                offset += len(piece)
            choices.append({"index": i, "text": "", "finish_reason": _finish_reason(one), "logprobs": None})
        else:
            choices += [{"index": i, "delta": delta, "logprobs": _chunk_logprobs(one, top, delta), "finish_reason": None}
                        for delta in _deltas(one)]
            choices.append({"index": i, "delta": {}, "logprobs": None, "finish_reason": _finish_reason(one)})
    events = [{**envelope, "choices": [choice]} for choice in choices]
    if (payload.get("stream_options") or {}).get("include_usage"):
        events.append({**envelope, "choices": [], "usage": _usage(said, n)})
    return [b"data: " + orjson.dumps(e) + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]


def _chunk_logprobs(said: Answer, top: int | None, delta: dict[str, Any]) -> dict[str, Any] | None:
    content = delta.get("content")
    return logprobs(said, top, [content] if isinstance(content, str) else [])


def _deltas(said: Answer) -> list[dict[str, Any]]:
    pieces = said.pieces()
    call = said.call
    if call is None:
        return [{"role": "assistant", "content": pieces[0]}, *({"content": piece} for piece in pieces[1:])]
    head = {"index": 0, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
    return [
        {"role": "assistant", "content": None, "tool_calls": [head]},
        *({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]} for piece in pieces),
    ]
