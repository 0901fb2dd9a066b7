"""A fake OpenAI-compatible upstream for the end-to-end tests.

It runs a small Starlette app under uvicorn in a background thread on a free loopback
port, records every request it receives, and answers like OpenAI (any path ending in
`/chat/completions`, `/completions` or `/embeddings`, so several "providers" can live
under different prefixes of one server) or like Azure OpenAI
(`/openai/deployments/{deployment}/{endpoint}?api-version=…`); it also lists models and
answers the other endpoints that the proxy forwards (see below).

What it answers depends on the model (the deployment on Azure paths); only the last
path segment of the model counts, so `meta-llama/no-usage-x` behaves like `no-usage-x`:

    fail-400-*        400 with an OpenAI error body
    fail-500-*        500 with an OpenAI error body
    fail-429-once-*   the first call: 429 with `retry-after-ms: 300` and `retry-after: 1`;
                      then normal answers
    fail-429-date-once-*  the first call: 429 with `retry-after: <HTTP date 2 s ahead>` only;
                      then normal answers
    fail-429-*        429 with an OpenAI error body and `retry-after: 1`
    fail-503-twice-*  the first two calls: 503; then normal answers
    fail-503-*        503 with an OpenAI error body, always
    fail-NNN-*        any other 4xx/5xx status NNN with an OpenAI error body, always
    hang-once-*       the first call hangs like hang-*; then normal answers
    hang-*            never answers (until the client goes away or the fake stops)
    slow-stream-*     streams SLOW_CHUNKS chunks SLOW_DELAY seconds apart
    slow-*            a normal answer (streamed or not) after SLOW_ANSWER_DELAY seconds
    stall-stream-*    streams STALL_AFTER events, then goes silent with the connection open
    cut-stream-*      streams CUT_AFTER chunks, then drops the connection
    no-usage-*        never reports usage (Hyperbolic's quirk), streamed or not
    tool-call-*       (chat) calls the tool TOOL_CALL instead of answering in text, under the name
                      of the request's first tool when it offers one; streamed, the call's id,
                      type and name come first, then its arguments in pieces. Once the last
                      message is a tool result, a text answer quoting it (`tool_result_answer`)
    json-*            (chat) answers fake_responses.FAKE_JSON as its text, streamed or not
    anything else     a canned answer that quotes the last user message, with `usage`

The "once"/"twice" modes count calls per full model name (the deployment on Azure
paths), so tests give each a unique name, e.g. f"fail-503-twice-{uuid4().hex[:8]}".
`count(model)` / `calls(model)` tell how many requests the fake received for a model.

`…/responses` (OpenAI's path, and Azure's v1 surface `/openai/v1/responses`) answers like
OpenAI's Responses API, with the same failure modes; the responses it made are kept for
follow-ups by id (tests/fake_responses.py).

The same model modes apply on the endpoints the proxy forwards (see below) when the
body (JSON, or a multipart form's `model` field) names a model.

`GET …/models` under any prefix lists MODELS, except under FAILING_MODELS_PREFIX
(`/hyperbolic/v1`: a 500) and HANGING_MODELS_PREFIX (`/hang/v1`: no answer until the
client leaves). Any other path (the endpoints the proxy forwards: `/v1/moderations`,
`/openai/v1/files`, …) answers by how it ends: `/audio/speech` with SPEECH bytes as
`audio/mpeg`, `/audio/transcriptions` (a multipart form, whose text fields and files are
recorded in `form` and `files`) with `transcription_text(filename, size)`, `/moderations`,
`/images/generations` and `GET …/files` with small OpenAI-shaped objects, and anything
else with a JSON echo of what it received (`?pad=N` adds N bytes to the echo).

Streams carry a final usage chunk (`choices: []`) only when the request asked for it
with `stream_options.include_usage`. On Azure paths the first chunk is Azure's
content-filter chunk (`id: ""`, `choices: []`, only `prompt_filter_results`), and an
api-version older than 2024-09-01 rejects `stream_options` as Azure does.

Embeddings honour `dimensions` (VECTOR repeated to that length) and `encoding_format: base64`
(little-endian float32, as OpenAI sends it).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qsl

import orjson
import uvicorn
from fake_responses import FAKE_JSON, StoredResponses, last_user_text, response_object, tool_result_answer
from fake_responses import stream_events as response_stream_events
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

#: Usage reported for every chat and completions answer (streamed or not).
USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
#: Usage reported for an embeddings call: 3 tokens per input.
EMBEDDING_TOKENS_PER_INPUT = 3
#: The vector every embedding input gets (index i adds i to the first component).
VECTOR = [0.25, -0.5, 0.125, 1.0]
#: The tool call a `tool-call-*` model makes.
TOOL_CALL = {"id": "call_fake_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
#: How many characters of TOOL_CALL's arguments each streamed piece carries.
TOOL_ARGUMENT_PIECE = 6

SLOW_CHUNKS = 50
SLOW_DELAY = 0.02
CUT_AFTER = 3
#: How long a `slow-*` model thinks before it answers (long enough for concurrent calls to overlap).
SLOW_ANSWER_DELAY = 0.3
#: Events a `stall-stream-*` answer sends before it goes silent.
STALL_AFTER = 3
#: The longest a `hang-*` or stalled answer waits (the fake's stop and the client leaving end it sooner).
HANG_SECONDS = 120.0
#: The advertised delay of a `fail-429-once-*` answer.
RETRY_AFTER_MS = 300
#: How far ahead the HTTP date of a `fail-429-date-once-*` answer lies (whole seconds: dates have no finer grain).
RETRY_AFTER_DATE_SECONDS = 2
#: `fail-NNN-*` for a status without a mode of its own.
FAIL_STATUS = re.compile(r"^fail-(?P<status>[45]\d\d)(?:-|$)")

#: The ids every `GET …/models` lists (but see FAILING_MODELS_PREFIX and HANGING_MODELS_PREFIX).
MODELS = ("fake-model", "gpt-4o-mini", "whisper-1")
#: The provider living under this prefix cannot list its models: its `GET …/models` answers 500.
FAILING_MODELS_PREFIX = "/hyperbolic/v1"
#: The provider living under this prefix never answers its `GET …/models` (until the client leaves).
HANGING_MODELS_PREFIX = "/hang/v1"
#: The body of every `…/audio/speech` answer (`audio/mpeg`).
SPEECH = b"ID3\x04\x00fake-mp3" + bytes(range(256)) * 8

RATELIMIT_HEADERS = {"x-ratelimit-remaining-requests": "4999", "x-ratelimit-limit-requests": "5000"}
AZURE_PATH = re.compile(r"^/openai/deployments/(?P<deployment>[^/]+)/(?P<endpoint>chat/completions|completions|embeddings)$")
AZURE_STREAM_OPTIONS_SINCE = "2024-09-01"


def chat_answer(last_user_message: str) -> str:
    """The text the fake answers to a chat request."""
    return f"Fake answer to: {last_user_message}"


def completion_answer(prompt: str) -> str:
    """The text the fake answers to a (legacy) completions request."""
    return f"Fake completion of: {prompt}"


def slow_answer() -> str:
    """The whole text of a `slow-stream-*` answer (one word per chunk)."""
    return " ".join(f"w{i}" for i in range(SLOW_CHUNKS))


def stream_words(text: str) -> list[str]:
    """How an answer is split into chunks: word by word, spaces kept."""
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def stalled_text(text: str) -> str:
    """What a `stall-stream-*` chat answer (OpenAI paths) sends before it goes silent: the role
    chunk, then the first STALL_AFTER - 1 words."""
    return "".join(stream_words(text)[: STALL_AFTER - 1])


class StreamCut(ConnectionAbortedError):
    """Raised on purpose by `cut-stream-*` answers."""


class _HideStreamCuts(logging.Filter):
    """uvicorn logs a traceback for the deliberate cut; keep the test output readable."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], StreamCut))


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


class FakeUpstream:
    """The server, its thread and the list of what it received."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self._ids = itertools.count(1)
        self._calls: dict[str, int] = {}  # full model name → requests received so far
        self.stored = StoredResponses()
        self._stopping = threading.Event()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- what the tests use -------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:PORT`: the Azure endpoint; add `/v1` for an OpenAI base URL."""
        return f"http://127.0.0.1:{self.port}"

    def clear(self) -> None:
        self.requests.clear()

    def calls(self, model: str | None = None, content: str | None = None) -> list[RecordedRequest]:
        """The requests received (since the last `clear()`) for `model` and/or whose last user
        message (or prompt) is `content`."""
        return [
            r for r in list(self.requests)
            if (model is None or r.model == model)
            and (content is None or _asked_text(r.json) == content)
        ]

    def count(self, model: str | None = None, content: str | None = None) -> int:
        """How many requests the fake received for `model` and/or with that last user message."""
        return len(self.calls(model, content))

    def wait_count(self, n: int, model: str | None = None, content: str | None = None, timeout: float = 5.0) -> int:
        """Wait until at least `n` matching requests arrived; return the count."""
        deadline = time.monotonic() + timeout
        while (found := self.count(model, content)) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return found

    def only(self) -> RecordedRequest:
        """The single request received since the last `clear()`."""
        assert len(self.requests) == 1, [f"{r.method} {r.path}" for r in self.requests]
        return self.requests[0]

    def wait_completed(self, request: RecordedRequest, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while not request.completed and time.monotonic() < deadline:
            time.sleep(0.01)
        return request.completed

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> FakeUpstream:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["GET", "POST", "DELETE", "PUT", "PATCH"])])
        config = uvicorn.Config(app, log_level="error", lifespan="off", access_log=False, timeout_keep_alive=30,
                                timeout_graceful_shutdown=3)
        self._server = uvicorn.Server(config)
        logging.getLogger("uvicorn.error").addFilter(_HideStreamCuts())
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fake upstream did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._stopping.set()  # ends every hanging or stalled answer
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    # -- the app --------------------------------------------------------------------------

    async def _handle(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        recorded = RecordedRequest(
            method=request.method,
            path=request.url.path,
            query=request.url.query,
            headers={k.lower(): v for k, v in request.headers.items()},
            raw_body=raw,
            json=body,
        )
        self.requests.append(recorded)
        response = await self._answer(request, recorded)
        if not isinstance(response, StreamingResponse):
            recorded.completed = True
        return response

    async def _answer(self, request: Request, recorded: RecordedRequest) -> Response:
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
            if "/responses/" in path:
                status, answer = self.stored.follow_up(request.method, path.split("/responses/", 1)[1])
                return JSONResponse(answer, status_code=status)
            if request.method == "GET" and path.endswith("/models"):
                return await self._models(request, path)
            if endpoint is None:
                return await self._forwarded(request, recorded)
        if request.method != "POST":
            return error(405, "fake upstream: use POST", "invalid_request_error")
        if not isinstance(model, str) or not model:
            return error(400, "fake upstream: you must provide a model parameter", "invalid_request_error", param="model")
        headers = self._counted(recorded, model)
        failed = await self._failure(request, model, recorded.call, headers)
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
            self._stream(recorded, events, delay, cut, stall), media_type="text/event-stream", headers=headers
        )

    async def _failure(self, request: Request, model: str, call: int, headers: dict[str, str]) -> Response | None:
        """The answer of a `fail-*`, `hang-*` or `slow-*` model (after its delay); None for a normal answer."""
        kind = model.rsplit("/", 1)[-1]
        if kind.startswith("hang-once"):
            if call == 1:
                await self._wait_until_released(request)
                return error(504, "Fake upstream hung.", "server_error", None, None, headers)
        elif kind.startswith("hang"):
            await self._wait_until_released(request)
            return error(504, "Fake upstream hung.", "server_error", None, None, headers)
        if kind.startswith("slow-") and not kind.startswith("slow-stream"):
            await asyncio.sleep(SLOW_ANSWER_DELAY)
        if kind.startswith("fail-400"):
            return error(400, f"Fake upstream rejects model {model}.", "invalid_request_error", "model", "fake_bad_request", headers)
        if kind.startswith(("fail-429-once", "fail-429-date-once")):
            if call == 1:
                if kind.startswith("fail-429-once"):
                    headers |= {"retry-after-ms": str(RETRY_AFTER_MS), "retry-after": "1"}
                else:
                    headers["retry-after"] = formatdate(time.time() + RETRY_AFTER_DATE_SECONDS, usegmt=True)
                headers["x-ratelimit-remaining-requests"] = "0"
                return error(429, "Fake upstream: rate limit reached.", "requests", None, "rate_limit_exceeded", headers)
        elif kind.startswith("fail-429"):
            headers |= {"retry-after": "1", "x-ratelimit-remaining-requests": "0"}
            return error(429, "Fake upstream: rate limit reached.", "requests", None, "rate_limit_exceeded", headers)
        if kind.startswith("fail-500"):
            return error(500, "Fake upstream had an internal error.", "server_error", None, None, headers)
        if kind.startswith("fail-503-twice"):
            if call <= 2:
                return error(503, "Fake upstream is overloaded.", "server_error", None, "overloaded", headers)
        elif kind.startswith("fail-503"):
            return error(503, "Fake upstream is overloaded.", "server_error", None, "overloaded", headers)
        elif (other := FAIL_STATUS.match(kind)) and other["status"] not in ("400", "429", "500"):
            status = int(other["status"])
            kind_of_error = "server_error" if status >= 500 else "invalid_request_error"
            return error(status, f"Fake upstream fails with {status}.", kind_of_error, None, f"fake_{status}", headers)
        return None

    def _counted(self, recorded: RecordedRequest, model: str | None) -> dict[str, str]:
        """Count the call for its model, give it a request id; the headers every answer carries."""
        if model:
            recorded.call = self._calls[model] = self._calls.get(model, 0) + 1
        recorded.request_id = f"req-fake-{next(self._ids)}"
        return {"x-request-id": recorded.request_id, **RATELIMIT_HEADERS}

    async def _models(self, request: Request, path: str) -> Response:
        prefix = path.removesuffix("/models")
        if prefix == FAILING_MODELS_PREFIX:
            return error(500, "Fake upstream cannot list its models.", "server_error")
        if prefix == HANGING_MODELS_PREFIX:
            await self._wait_until_released(request)
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
            failed = await self._failure(request, model, recorded.call, headers)
            if failed is not None:
                return failed
        return forwarded_answer(recorded, headers)

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
            self._stream(recorded, events, delay, kind.startswith("cut-stream"), kind.startswith("stall-stream")),
            media_type="text/event-stream", headers=headers,
        )

    async def _wait_until_released(self, request: Request | None) -> None:
        """Sleep until the fake stops, the client goes away (when `request` is given) or HANG_SECONDS."""
        deadline = time.monotonic() + HANG_SECONDS
        while not self._stopping.is_set() and time.monotonic() < deadline:
            if request is not None and await request.is_disconnected():
                return
            await asyncio.sleep(0.05)

    async def _stream(
        self, recorded: RecordedRequest, events: list[dict[str, Any]] | list[bytes], delay: float, cut: bool,
        stall: bool = False,
    ):
        """Chat events (dicts, framed as `data:` and ended by `[DONE]`) or ready Responses events (bytes)."""
        for i, event in enumerate(events):
            if cut and i == CUT_AFTER:
                # An exception after the response started makes uvicorn drop the connection
                # without the final empty chunk: the client sees a truncated body.
                raise StreamCut("fake upstream cuts the stream")
            if stall and i == STALL_AFTER:
                # Silence with the connection open; Starlette cancels this when the client leaves.
                await self._wait_until_released(None)
                return
            yield event if isinstance(event, bytes) else b"data: " + orjson.dumps(event) + b"\n\n"
            if delay:
                await asyncio.sleep(delay)
        if events and not isinstance(events[0], bytes):
            yield b"data: [DONE]\n\n"
        recorded.completed = True


def forwarded_answer(recorded: RecordedRequest, headers: dict[str, str]) -> Response:
    """What the fake answers on an endpoint the proxy forwards, by the path's end."""
    path, body = recorded.path, recorded.json if isinstance(recorded.json, dict) else {}
    if path.endswith("/audio/speech"):
        return Response(SPEECH, media_type="audio/mpeg", headers=headers)
    if path.endswith("/audio/transcriptions"):
        filename, _, data = recorded.files.get("file", (None, None, b""))
        return JSONResponse({"text": transcription_text(filename, len(data))}, headers=headers)
    if path.endswith("/moderations"):
        result = {"flagged": False, "categories": {"hate": False}, "category_scores": {"hate": 0.001}}
        return JSONResponse({"id": "modr-fake", "model": body.get("model"), "results": [result]}, headers=headers)
    if path.endswith("/images/generations"):
        image = {"url": "https://images.invalid/fake.png", "revised_prompt": body.get("prompt")}
        return JSONResponse({"created": 1_700_000_000, "data": [image]}, headers=headers)
    if recorded.method == "GET" and path.endswith("/files"):
        files = [{"id": "file-abc123", "object": "file", "bytes": 120, "created_at": 1_700_000_000,
                  "filename": "batch.jsonl", "purpose": "batch", "status": "processed"}]
        return JSONResponse({"object": "list", "data": files, "has_more": False}, headers=headers)
    echo = {
        "object": "fake.echo", "method": recorded.method, "path": path, "query": recorded.query,
        "model": recorded.model, "bytes": len(recorded.raw_body),
        "pad": "p" * int(recorded.query_params.get("pad", "0")),
    }
    return JSONResponse(echo, headers=headers)


def transcription_text(filename: str | None, size: int) -> str:
    """The text the fake transcribes an uploaded file to."""
    return f"Fake transcription of {filename} ({size} bytes)"


def _asked_text(body: Any) -> str | None:
    """The last user message of a chat body, or the prompt of a completions body."""
    if not isinstance(body, dict):
        return None
    if "messages" in body:
        return last_user_message(body["messages"])
    prompt = body.get("prompt")
    return prompt if isinstance(prompt, str) else None


def last_user_message(messages: Any) -> str:
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
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def completion(endpoint: str, model: str, text: str, with_usage: bool) -> dict[str, Any]:
    chat = endpoint == "chat/completions"
    choice: dict[str, Any] = {"index": 0, "finish_reason": "stop", "logprobs": None}
    if chat:
        choice["message"] = {"role": "assistant", "content": text, "refusal": None}
    else:
        choice["text"] = text
    answer = {
        "id": "chatcmpl-fake" if chat else "cmpl-fake",
        "object": "chat.completion" if chat else "text_completion",
        "created": 1_700_000_000,
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [choice],
    }
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
    envelope = {"id": "chatcmpl-fake-tool", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**envelope, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

    first = {"index": 0, "id": TOOL_CALL["id"], "type": "function", "function": {"name": name, "arguments": ""}}
    events = [chunk({"role": "assistant", "content": None, "tool_calls": [first]})]
    arguments = TOOL_CALL["function"]["arguments"]
    events += [
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": arguments[i : i + TOOL_ARGUMENT_PIECE]}}]})
        for i in range(0, len(arguments), TOOL_ARGUMENT_PIECE)
    ]
    events.append(chunk({}, "tool_calls"))
    if include_usage:
        events.append({**envelope, "choices": [], "usage": dict(USAGE)})
    return events


def stream_events(endpoint: str, model: str, text: str, include_usage: bool, azure_first: bool) -> list[dict[str, Any]]:
    chat = endpoint == "chat/completions"
    envelope = {
        "id": "chatcmpl-fake-stream" if chat else "cmpl-fake-stream",
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": 1_700_000_000,
        "model": model,
        "system_fingerprint": "fp_fake",
    }

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
        events.append({**envelope, "choices": [choice("", None, role=True)]})
    events += [{**envelope, "choices": [choice(word, None)]} for word in stream_words(text)]
    events.append({**envelope, "choices": [choice(None if chat else "", "stop")]})
    if include_usage:
        events.append({**envelope, "choices": [], "usage": dict(USAGE)})
    return events


def embedding_vector(index: int, dimensions: int = len(VECTOR)) -> list[float]:
    """The vector of input `index`: VECTOR repeated to `dimensions` numbers, `index` added to the first."""
    vector = [VECTOR[j % len(VECTOR)] for j in range(dimensions)]
    vector[0] += index
    return vector


def embeddings(body: dict[str, Any], model: str) -> dict[str, Any]:
    inputs = body.get("input")
    inputs = [inputs] if isinstance(inputs, str) else list(inputs or [])
    dimensions = body.get("dimensions")
    size = dimensions if isinstance(dimensions, int) and dimensions > 0 else len(VECTOR)
    data = []
    for i, _ in enumerate(inputs):
        vector = embedding_vector(i, size)
        if body.get("encoding_format") == "base64":
            embedding: Any = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        else:
            embedding = vector
        data.append({"object": "embedding", "index": i, "embedding": embedding})
    tokens = EMBEDDING_TOKENS_PER_INPUT * len(inputs)
    return {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
