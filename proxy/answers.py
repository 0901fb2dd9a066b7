"""Complete answers the proxy can hand to more than one client: de-duplicated followers, cache hits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Upstream response headers worth passing on to the client.
PASSTHROUGH_HEADERS = frozenset({"x-request-id", "retry-after", "retry-after-ms", "openai-processing-ms"})
PASSTHROUGH_PREFIXES = ("x-ratelimit-",)


def passthrough_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The useful upstream headers, and the content type."""
    kept = {}
    for name, value in headers.items():
        name = name.lower()
        if name in PASSTHROUGH_HEADERS or name.startswith(PASSTHROUGH_PREFIXES):
            kept[name] = value
    kept["content-type"] = headers.get("content-type", "application/json")
    return kept


@dataclass(frozen=True, slots=True)
class WholeAnswer:
    """A non-streamed upstream answer, exactly as the client receives it."""

    status_code: int
    headers: dict[str, str]
    body: bytes
    provider: str
    upstream_model: str | None
    retried: bool = False
    #: What the log keeps instead of `body`, when not the body itself (a forwarded answer: capped,
    #: or only the type and size of a binary one).
    logged: bytes | None = None


@dataclass(frozen=True, slots=True)
class CapturedStream:
    """A finished stream as the client saw it, with what the log needs, replayable from the cache."""

    events: bytes
    headers: dict[str, str]
    answer: dict[str, Any]
    text: str
    usage: dict[str, Any] | None
    provider: str
    upstream_model: str


def answer_size(answer: WholeAnswer | CapturedStream) -> int:
    """About what an answer holds in memory: its bytes, and for a stream its text twice more
    (as text and in the assembled answer)."""
    if isinstance(answer, WholeAnswer):
        return len(answer.body) + len(answer.logged or b"")
    return len(answer.events) + 2 * len(answer.text)
