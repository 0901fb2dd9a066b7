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
    bomb-stream-*     a 200 `text/event-stream` of BOMB_BYTES zeros, gzip-compressed (~65 KB sent)
    bomb-*            the same as `application/json`
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

This module is the server: its thread, and what it received. What it answers lives beside it:
fake_routes.py (which answer a request gets), fake_answers.py (chat and completions bodies),
fake_failures.py (the modes above that fail, hang, slow down, cut or stall), fake_endpoints.py
(embeddings, the model list, the forwarded endpoints) and fake_responses.py (the Responses API).
"""

from __future__ import annotations

import logging
import socket
import threading
import time

import orjson
import uvicorn
from fake_answers import asked_text
from fake_failures import StreamCut
from fake_routes import RecordedRequest, Router
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route


class _HideStreamCuts(logging.Filter):
    """uvicorn logs a traceback for the deliberate cut; keep the test output readable."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], StreamCut))


class FakeUpstream:
    """The server, its thread and the list of what it received."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self._stopping = threading.Event()
        self._router = Router(self._stopping)
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
            and (content is None or asked_text(r.json) == content)
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

    # -- every request --------------------------------------------------------------------

    async def _handle(self, request: Request) -> Response:
        """Record the request, then answer it; a whole answer marks it completed (a stream does at its end)."""
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
        response = await self._router.answer(request, recorded)
        if not isinstance(response, StreamingResponse):
            recorded.completed = True
        return response
