"""`CallRecord`: what the handler learned about one client request, turned into log rows later.

The handler only stores raw facts (bodies, timings, status); rendering the prompt, parsing
the answer and serialising JSON happen in `rows()`, which the recorder calls after the
client has its answer, so logging in full costs the response nothing.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from .clock import utc_now
from .endpoints import METERED_ENDPOINTS, RESPONSES_ENDPOINTS
from .pricing import Pricer
from .render import ending_metadata, render_answer, render_prompt
from .responses.rows import response_metadata, usage_columns

SENSITIVE_HEADER_WORDS = ("auth", "key", "token", "secret", "cookie", "password", "signature")
#: One search per header name for any of the words (a generator over the words cost ~7 steps a header).
_SENSITIVE = re.compile("|".join(SENSITIVE_HEADER_WORDS))


def new_request_id() -> str:
    """A time-ordered (version 7) UUID as 32 hex digits: ours, never the provider's id.

    48 bits of Unix milliseconds first, then 74 random bits: ids sort by time, so each row
    lands at the right edge of the UNIQUE indexes on `inference_runs.request_id` and
    `attempts(request_id, attempt)`, where their b-tree pages are in cache. With random
    (version 4) ids the same inserts grew from 35 to 65-95 µs a row by 100,000 rows; with
    these they stay at 29-41. The random bits come from Python's generator (seeded from
    os.urandom), not `uuid.uuid4()`, whose os.urandom system call on every call was 5% of
    the proxy's CPU under load.
    """
    bits = (time.time_ns() // 1_000_000) << 80 | random.getrandbits(80)
    bits = (bits & ~(0xF000 << 64)) | (0x7000 << 64)  # version 7
    bits = (bits & ~(0xC000 << 48)) | (0x8000 << 48)  # RFC 9562 variant
    return f"{bits:032x}"


def redact_headers(headers: Any) -> dict[str, str]:
    """Request headers as stored: any credential-looking header's value is replaced."""
    search = _SENSITIVE.search
    redacted = {}
    for name, value in headers.items():
        name = name.lower()
        redacted[name] = "[redacted]" if search(name) else value
    return redacted


@dataclass(slots=True)
class Attempt:
    """One upstream call made for a request."""

    attempt: int
    provider: str
    url_path: str
    started_at: str = field(default_factory=utc_now)
    started: float = field(default_factory=time.perf_counter)
    status_code: int | None = None
    error: str | None = None
    latency_ms: float | None = None

    def finish(self, status_code: int | None = None, error: str | None = None) -> None:
        self.status_code = status_code
        self.error = error
        self.latency_ms = round((time.perf_counter() - self.started) * 1000, 3)


@dataclass(slots=True)
class CallRecord:
    """One client request, whatever happened to it: the source of one `inference_runs` row."""

    endpoint: str
    request_id: str = field(default_factory=lambda: new_request_id())
    created_at: str = field(default_factory=utc_now)
    started: float = field(default_factory=time.perf_counter)
    log_full: bool = True
    provider: str | None = None
    model: str | None = None
    upstream_model: str | None = None
    payload: dict[str, Any] | None = None
    request_text: str | None = None
    #: `payload` is `request_text` parsed, unchanged: the journal keeps the text alone.
    payload_is_text: bool = False
    response_body: bytes | None = None
    answer: dict[str, Any] | None = None  # parsed answer, for streams the assembled one
    response_text: str | None = None  # assembled text of a stream
    status_code: int | None = None
    error: str | None = None
    stream: bool = False
    usage: dict[str, Any] | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    cache: str | None = None
    session_id: str | None = None
    tags: list[str] | None = None
    user: str | None = None
    client: str | None = None
    request_headers: dict[str, str] | None = None
    study_metadata: dict[str, Any] | None = None  # from X-Study-Metadata: ours, never sent upstream
    pricer: Pricer | None = None
    notes: list[str] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    #: `price()`'s answer and the answer model it was for (not a fact of the call: not journaled).
    _priced: tuple[Any, tuple[float | None, str | None]] | None = field(default=None, init=False, repr=False)

    def elapsed_ms(self) -> float:
        return round((time.perf_counter() - self.started) * 1000, 3)

    def begin_attempt(self, provider: str, url_path: str) -> Attempt:
        attempt = Attempt(len(self.attempts) + 1, provider, url_path)
        self.attempts.append(attempt)
        return attempt

    def finish(self, status_code: int, error: str | None = None) -> None:
        """Close the record when the client got its last byte (or could get no more)."""
        self.status_code = status_code
        if error is not None:
            self.error = error
        self.latency_ms = self.elapsed_ms()

    def price(self, usage: dict[str, Any], answer_model: Any) -> tuple[float | None, str | None]:
        """(USD, why not) of this call's usage (chat's names), for its row and its metrics alike:
        priced once, not once for each (a few µs a call)."""
        assert self.pricer is not None and self.provider is not None
        priced = self._priced
        if priced is None or priced[0] != answer_model:
            priced = self._priced = (answer_model, self.pricer.cost(self.provider, (answer_model, self.upstream_model), usage))
        return priced[1]

    def rows(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The `inference_runs` row and the `attempts` rows."""
        payload = self.payload if isinstance(self.payload, dict) else {}
        answer = self.answer
        if answer is None and self.response_body:
            answer = _parse_object(self.response_body)
        metered = self.endpoint in METERED_ENDPOINTS
        usage = (self.usage if self.usage is not None else (answer or {}).get("usage")) if metered else None
        usage = usage if isinstance(usage, dict) else None
        if self.endpoint in RESPONSES_ENDPOINTS:
            extra = response_metadata(answer, usage)
        else:
            extra = ending_metadata(answer) if self.endpoint in ("chat/completions", "completions") else None
        if usage is not None and "input_tokens" in usage:
            usage = usage_columns(usage)
        notes = list(self.notes)
        if usage is None and metered and self.status_code == 200 and self.error is None:
            notes.append("upstream reported no usage: token columns left NULL")
        cost = None
        if self.pricer is not None and usage is not None and self.provider and self.status_code == 200:
            cost, why_not = self.price(usage, (answer or {}).get("model"))
            if why_not:
                notes.append(why_not)
        if self.cache in ("hit", "dedup") and cost:
            notes.append("cost_usd is what this call would have cost: it was saved")
        metadata = payload.get("metadata") if isinstance(payload.get("metadata"), dict) else {}
        if extra:
            metadata = {**metadata, **extra}
        if self.study_metadata:
            metadata = {**metadata, **self.study_metadata}
        if notes:
            metadata = {**metadata, "study_notes": notes}
        body_user = payload.get("user")
        full = self.log_full
        run = {
            "request_id": self.request_id,
            "created_at": self.created_at,
            "endpoint": self.endpoint,
            "provider": self.provider,
            "model": self.model,
            "upstream_model": self.upstream_model,
            "prompt": render_prompt(self.endpoint, payload) if full and payload else None,
            "response": (
                (self.response_text if self.response_text is not None else render_answer(self.endpoint, answer or {}))
                if full
                else None
            ),
            "request_json": self.request_text if full else None,
            "response_json": _response_json(self, answer) if full else None,
            "status_code": self.status_code,
            "error": self.error or _answer_error(answer, self.status_code),
            "stream": int(self.stream),
            "prompt_tokens": _int(usage, "prompt_tokens"),
            "completion_tokens": _int(usage, "completion_tokens"),
            "total_tokens": _int(usage, "total_tokens"),
            "latency_ms": self.latency_ms,
            "ttft_ms": self.ttft_ms,
            "attempts": len(self.attempts),
            "cache": self.cache,
            "cost_usd": cost,
            "session_id": self.session_id,
            "tags": orjson.dumps(self.tags).decode() if self.tags else None,
            "user": self.user or (body_user if isinstance(body_user, str) else None),
            "client": self.client,
            "metadata": orjson.dumps(metadata).decode() if metadata else None,
            "request_headers": orjson.dumps(self.request_headers).decode() if self.request_headers else None,
        }
        attempts = [
            {
                "request_id": self.request_id,
                "attempt": a.attempt,
                "provider": a.provider,
                "url_path": a.url_path,
                "status_code": a.status_code,
                "error": a.error,
                "latency_ms": a.latency_ms,
                "started_at": a.started_at,
            }
            for a in self.attempts
        ]
        return run, attempts


def _parse_object(body: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _response_json(record: CallRecord, answer: dict[str, Any] | None) -> str | None:
    if record.stream and answer is not None:
        return orjson.dumps(answer).decode()
    if record.response_body is None:
        return None
    return record.response_body.decode("utf-8", "replace")


def _answer_error(answer: dict[str, Any] | None, status_code: int | None) -> str | None:
    """An upstream error body's message, so failed rows say why without opening the JSON."""
    if status_code is None or status_code < 400:
        return None
    error = (answer or {}).get("error")
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    return f"upstream answered HTTP {status_code}"


def _int(usage: dict[str, Any] | None, key: str) -> int | None:
    value = (usage or {}).get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None
