"""Which answer a request gets: Azure or OpenAI path, endpoint, model mode; and the record of each request.

`Router` keeps what answers depend on across requests: the calls counted per model (for
the "once"/"twice" modes), the request ids, and the responses kept for follow-ups by id.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fake_answers import (
    TOOL_CALL, chat_answer, completion, completion_answer, error, first_tool_name, last_tool_output, last_user_message,
    stream_events, stream_words, tool_call_completion, tool_call_events,
)
from fake_endpoints import FAILING_MODELS_PREFIX, HANGING_MODELS_PREFIX, MODELS, embeddings, forwarded_answer
from fake_failures import SLOW_DELAY, failure, slow_answer, stream, wait_until_released
from fake_responses import (
    FAKE_JSON, StoredResponses, conversation_answer, last_user_text, response_object, tool_result_answer,
)
from fake_responses import stream_events as response_stream_events
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

RATELIMIT_HEADERS = {"x-ratelimit-remaining-requests": "4999", "x-ratelimit-limit-requests": "5000"}
AZURE_PATH = re.compile(r"^/openai/deployments/(?P<deployment>[^/]+)/(?P<endpoint>chat/completions|completions|embeddings)$")
AZURE_STREAM_OPTIONS_SINCE = "2024-09-01"


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names
    raw_body: bytes
    json: Any = None
    request_id: str | None = None  # the x-request-id the fake answered with
    completed: bool = field(default=False)  # set once the whole answer was sent
    received_at: float = field(default_factory=time.monotonic)  # when the request arrived
    call: int = 0  # 1 for the first request with this model, 2 for the second, …
    form: dict[str, str] = field(default_factory=dict)  # a multipart body's text fields
    files: dict[str, tuple[str | None, str | None, bytes]] = field(default_factory=dict)  # field → (filename, type, bytes)

    @property
    def model(self) -> str | None:
        """The model asked for: the body's or the form's `model`, or the deployment on an Azure path."""
        azure = AZURE_PATH.match(self.path)
        if azure:
            return azure["deployment"]
        if isinstance(self.json, dict):
            return self.json.get("model")
        return self.form.get("model")

    @property
    def query_params(self) -> dict[str, str]:
        return dict(parse_qsl(self.query))


class Router:
    """Answers requests; what it remembers between them is per fake upstream."""

    def __init__(self, stopping: threading.Event) -> None:
        self.stopping = stopping  # set when the fake stops: ends every hanging or stalled answer
        self.ids = itertools.count(1)
        self.calls: dict[str, int] = {}  # full model name → requests received so far
        self.stored = StoredResponses()

    async def answer(self, request: Request, recorded: RecordedRequest) -> Response:
        """The answer to one request, by its path (Azure or OpenAI), its endpoint and its model's mode."""
        path = request.url.path
        body = recorded.json if isinstance(recorded.json, dict) else {}
        azure = AZURE_PATH.match(path)
        if azure:
            if "api-version" not in recorded.query_params:
                return JSONResponse({"error": {"code": "404", "message": "Resource not found"}}, status_code=404)
            endpoint, model = azure["endpoint"], azure["deployment"]
        else:
            endpoint = next(
                (e for e in ("chat/completions", "completions", "embeddings", "responses") if path.endswith("/" + e)), None
            )
            model = body.get("model")
            if path.endswith(("/responses/compact", "/responses/input_tokens")):
                return JSONResponse(conversation_answer(path.rsplit("/", 1)[1], body))
            if "/responses/" in path:
                rest = path.split("/responses/", 1)[1]
                if request.method == "GET" and recorded.query_params.get("stream") == "true" and rest in self.stored.responses:
                    return self._streamed_again(recorded, self.stored.responses[rest])
                status, answer = self.stored.follow_up(request.method, rest)
                return JSONResponse(answer, status_code=status)
            if request.method == "GET" and path.endswith("/models"):
                return await self._models(request, path)
            if endpoint is None or (endpoint == "chat/completions" and request.method == "GET"):
                return await self._forwarded(request, recorded)  # GET chat/completions: the stored ones
        if request.method != "POST":
            return error(405, "fake upstream: use POST", "invalid_request_error")
        if not isinstance(model, str) or not model:
            return error(400, "fake upstream: you must provide a model parameter", "invalid_request_error", param="model")
        headers = self._counted(recorded, model)
        failed = await failure(request, model, recorded.call, headers, self.stopping)
        if failed is not None:
            return failed
        kind = model.rsplit("/", 1)[-1]
        stream_options = body.get("stream_options")
        if azure and stream_options is not None and recorded.query_params["api-version"][:10] < AZURE_STREAM_OPTIONS_SINCE:
            return error(400, "Unrecognized request argument supplied: stream_options", "invalid_request_error", None, None, headers)
        if endpoint == "embeddings":
            return JSONResponse(embeddings(body, model), headers=headers)
        if endpoint == "responses":
            return self._responses(recorded, body, model, kind, headers)
        if endpoint == "chat/completions":
            text = chat_answer(last_user_message(body.get("messages")))
            if kind.startswith("json"):
                text = orjson.dumps(FAKE_JSON).decode()
            output = last_tool_output(body.get("messages"))
            if kind.startswith("tool-call") and output is not None:
                text = tool_result_answer(output)
        else:
            prompt = body.get("prompt")
            text = completion_answer(prompt if isinstance(prompt, str) else " ".join(map(str, prompt or [])))
            output = None
        with_usage = not kind.startswith("no-usage")
        tool = endpoint == "chat/completions" and kind.startswith("tool-call") and output is None
        name = first_tool_name(body) or TOOL_CALL["function"]["name"]
        if not body.get("stream"):
            answer = tool_call_completion(model, name) if tool else completion(endpoint, model, text, with_usage)
            return JSONResponse(answer, headers=headers)
        include_usage = with_usage and isinstance(stream_options, dict) and stream_options.get("include_usage") is True
        if kind.startswith("slow-stream"):
            text = slow_answer()
        if tool:
            events = tool_call_events(model, include_usage, name)
        else:
            events = stream_events(endpoint, model, text, include_usage, azure_first=bool(azure))
        cut = kind.startswith("cut-stream")
        stall = kind.startswith("stall-stream")
        delay = SLOW_DELAY if kind.startswith("slow-stream") else 0.0
        return StreamingResponse(
            stream(recorded, events, delay, cut, stall, self.stopping), media_type="text/event-stream", headers=headers
        )

    def _counted(self, recorded: RecordedRequest, model: str | None) -> dict[str, str]:
        """Count the call for its model, give it a request id; the headers every answer carries."""
        if model:
            recorded.call = self.calls[model] = self.calls.get(model, 0) + 1
        recorded.request_id = f"req-fake-{next(self.ids)}"
        return {"x-request-id": recorded.request_id, **RATELIMIT_HEADERS}

    async def _models(self, request: Request, path: str) -> Response:
        prefix = path.removesuffix("/models")
        if prefix == FAILING_MODELS_PREFIX:
            return error(500, "Fake upstream cannot list its models.", "server_error")
        if prefix == HANGING_MODELS_PREFIX:
            await wait_until_released(self.stopping, request)
        data = [{"id": model, "object": "model", "created": 1_700_000_000, "owned_by": "fake"} for model in MODELS]
        return JSONResponse({"object": "list", "data": data})

    async def _forwarded(self, request: Request, recorded: RecordedRequest) -> Response:
        """Any other endpoint: the model's failure modes, else an answer of the endpoint's kind."""
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            async with request.form() as form:
                for name, value in form.multi_items():
                    if isinstance(value, str):
                        recorded.form[name] = value
                    else:
                        recorded.files[name] = (value.filename, value.content_type, await value.read())
        model = recorded.model
        headers = self._counted(recorded, model if isinstance(model, str) else None)
        if isinstance(model, str) and model:
            failed = await failure(request, model, recorded.call, headers, self.stopping)
            if failed is not None:
                return failed
        return forwarded_answer(recorded, headers)

    def _streamed_again(self, recorded: RecordedRequest, final: dict[str, Any]) -> Response:
        """`GET …/responses/{id}?stream=true[&starting_after=N]`: the events after N, as OpenAI resumes a stream."""
        after = int(recorded.query_params.get("starting_after", "-1"))
        events = response_stream_events(final, stream_words)[after + 1 :]
        delay = SLOW_DELAY if final["model"].rsplit("/", 1)[-1].startswith("slow-stream") else 0.0
        return StreamingResponse(stream(recorded, events, delay, False, False, self.stopping), media_type="text/event-stream")

    def _responses(
        self, recorded: RecordedRequest, body: dict[str, Any], model: str, kind: str, headers: dict[str, str]
    ) -> Response:
        previous = body.get("previous_response_id")
        if previous is not None and previous not in self.stored.responses:
            return error(400, f"Previous response with id '{previous}' not found.", "invalid_request_error",
                         "previous_response_id", "previous_response_not_found", headers)
        text = slow_answer() if kind.startswith("slow-stream") else chat_answer(last_user_text(body))
        final = response_object(body, model, text, kind)
        self.stored.keep(body, final)
        if not body.get("stream"):
            return JSONResponse(final, headers=headers)
        events = response_stream_events(final, stream_words)
        delay = SLOW_DELAY if kind.startswith("slow-stream") else 0.0
        return StreamingResponse(
            stream(recorded, events, delay, kind.startswith("cut-stream"), kind.startswith("stall-stream"), self.stopping),
            media_type="text/event-stream", headers=headers,
        )
