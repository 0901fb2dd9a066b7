"""The model modes that misbehave or take their time: `fail-*`, `hang-*`, `slow-*`, `cut-stream-*`,
`stall-stream-*`, `bomb-*`.

`failure()` answers for the model before any normal answer is made; `stream()` sends a
streamed answer, paced, cut or stalled as the model asks. The catalogue of modes is in
fake_upstream.py.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import re
import threading
import time
from collections.abc import AsyncIterator
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

import orjson
from fake_answers import error, stream_words
from starlette.requests import Request
from starlette.responses import Response

if TYPE_CHECKING:
    from fake_routes import RecordedRequest

#: A `slow-stream-*` answer: SLOW_CHUNKS chunks, SLOW_DELAY seconds apart.
SLOW_CHUNKS = 50
SLOW_DELAY = 0.02
#: Chunks a `cut-stream-*` answer sends before it drops the connection.
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
#: What a `bomb-*` answer inflates to: zeros, gzip-compressed (about 1/1000 of it is sent).
BOMB_BYTES = 64 * 1024 * 1024
#: `fail-NNN-*` for a status without a mode of its own.
FAIL_STATUS = re.compile(r"^fail-(?P<status>[45]\d\d)(?:-|$)")


def slow_answer() -> str:
    """The whole text of a `slow-stream-*` answer (one word per chunk)."""
    return " ".join(f"w{i}" for i in range(SLOW_CHUNKS))


def stalled_text(text: str) -> str:
    """What a `stall-stream-*` chat answer (OpenAI paths) sends before it goes silent: the role
    chunk, then the first STALL_AFTER - 1 words."""
    return "".join(stream_words(text)[: STALL_AFTER - 1])


class StreamCut(ConnectionAbortedError):
    """Raised on purpose by `cut-stream-*` answers."""


async def failure(
    request: Request, model: str, call: int, headers: dict[str, str], stopping: threading.Event
) -> Response | None:
    """The answer of a `fail-*`, `hang-*` or `slow-*` model (after its delay); None for a normal answer."""
    kind = model.rsplit("/", 1)[-1]
    if kind.startswith("hang-once"):
        if call == 1:
            await wait_until_released(stopping, request)
            return error(504, "Fake upstream hung.", "server_error", None, None, headers)
    elif kind.startswith("hang"):
        await wait_until_released(stopping, request)
        return error(504, "Fake upstream hung.", "server_error", None, None, headers)
    if kind.startswith("bomb-"):
        media_type = "text/event-stream" if kind.startswith("bomb-stream") else "application/json"
        return Response(bomb(), media_type=media_type, headers={**headers, "content-encoding": "gzip"})
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


@functools.cache
def bomb() -> bytes:
    """BOMB_BYTES of zeros, gzip-compressed (~65 KB)."""
    return gzip.compress(bytes(BOMB_BYTES), 9)


async def wait_until_released(stopping: threading.Event, request: Request | None) -> None:
    """Sleep until the fake stops, the client goes away (when `request` is given) or HANG_SECONDS."""
    deadline = time.monotonic() + HANG_SECONDS
    while not stopping.is_set() and time.monotonic() < deadline:
        if request is not None and await request.is_disconnected():
            return
        await asyncio.sleep(0.05)


async def stream(
    recorded: RecordedRequest, events: list[dict[str, Any]] | list[bytes], delay: float, cut: bool, stall: bool,
    stopping: threading.Event,
) -> AsyncIterator[bytes]:
    """Chat events (dicts, framed as `data:` and ended by `[DONE]`) or ready Responses events (bytes)."""
    for i, event in enumerate(events):
        if cut and i == CUT_AFTER:
            # An exception after the response started makes uvicorn drop the connection
            # without the final empty chunk: the client sees a truncated body.
            raise StreamCut("fake upstream cuts the stream")
        if stall and i == STALL_AFTER:
            # Silence with the connection open; Starlette cancels this when the client leaves.
            await wait_until_released(stopping, None)
            return
        yield event if isinstance(event, bytes) else b"data: " + orjson.dumps(event) + b"\n\n"
        if delay:
            await asyncio.sleep(delay)
    if events and not isinstance(events[0], bytes):
        yield b"data: [DONE]\n\n"
    recorded.completed = True
