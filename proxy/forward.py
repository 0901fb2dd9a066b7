"""Every other `/v1/*` call (files, batches, audio, images, moderations…) passed on to a provider.

The provider is picked from the body's `model` through the Router, as for chat, and the
body's `model` becomes the upstream model; a call without one goes to the default provider.
The path is only ever appended to the provider's configured base URL, and a path that could
leave it (`..`, `//`, anything outside a plain character set) is refused. Short text answers
(and every error) are read whole and passed back with their status and content type; any other
200 answer (speech, a file's content) is relayed as it comes (`proxy.body_relay`). Cache and
de-duplication do not apply (uploads and batch creation are not idempotent).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request

from .answers import WholeAnswer, passthrough_headers
from .bodies import ClientBody, logged_body
from .body_relay import relayed_unread
from .config import Settings
from .endpoints import ENDPOINTS
from .errors import ProxyError
from .providers import Provider
from .record import CallRecord
from .resilience import Outcome, UpstreamCaller
from .routing import Route, Router
from .upstream import UpstreamRequest
from .validation import read_body

#: Methods passed on; OpenAI's API uses GET, POST and DELETE.
FORWARDED_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
#: Request headers that go upstream besides the provider's own auth (never cookies, host or keys).
FORWARDED_HEADERS = ("content-type", "accept", "openai-beta")
#: The paths the proxy answers itself, with the method each takes.
OWN_PATHS = {**dict.fromkeys(ENDPOINTS, "POST"), "models": "GET"}
#: Own paths that OpenAI also serves with another method, which is forwarded like any call:
#: `GET /v1/chat/completions` lists the chat completions stored with `store: true`.
FORWARDED_OWN = {("GET", "chat/completions")}
#: Under these the proxy answers itself too (`models/{id}`, `responses/{id}…`), with these methods.
OWN_PREFIXES = {"models/": ("GET",), "responses/": ("GET", "POST", "DELETE")}

#: One path segment as it may go upstream: a plain name or id, nothing that escapes the path.
SAFE_SEGMENT = re.compile(r"[A-Za-z0-9._~:@+=,-]+")
#: A segment that names a resource kind (`files`, `fine_tuning`); any other is an id.
NAME_SEGMENT = re.compile(r"[a-z]+(?:_[a-z]+)*")
#: The width of the log's `endpoint` column.
ENDPOINT_CAP = 64
#: Content types a web page may POST to another site without asking first (CORS "simple"
#: requests) that no upstream endpoint takes.
SIMPLE_TEXT_TYPES = ("text/plain", "application/x-www-form-urlencoded")


def endpoint_name(path: str, method: str) -> str:
    """The row's `endpoint`: the path after `/v1/` with ids collapsed (`files/file-abc1` → `files/{id}`);
    `chat/completions/list` for the list of stored chat completions, whose rows must not pass
    for chat calls."""
    if (method, path) in FORWARDED_OWN:
        return f"{path}/list"
    segments = path.split("/")
    if all(_safe(s) for s in segments):
        path = "/".join(s if NAME_SEGMENT.fullmatch(s) else "{id}" for s in segments)
    return path[:ENDPOINT_CAP]  # a path that will be refused is kept as asked


def own_path_error(path: str, method: str, asked: str) -> ProxyError | None:
    """The error for a path the proxy serves itself that none of its routes took (`asked`: the
    whole path, for the message): a 405 for another method, a 404 for no such endpoint of it."""
    allowed = OWN_PATHS.get(path)
    if (method, path) in FORWARDED_OWN:
        return None
    if allowed is not None:
        return ProxyError(405, f"Use {allowed} for {asked}, not {method}.", code="method_not_allowed")
    methods = next((m for prefix, m in OWN_PREFIXES.items() if path.startswith(prefix)), None)
    if methods is None:
        return None
    if method in methods:
        return ProxyError(404, f"{asked} is not an endpoint of this proxy.", code="unknown_url")
    return ProxyError(405, f"{asked} is served by the proxy itself, not with {method}.", code="method_not_allowed")


def check_path(path: str) -> None:
    """Refuse any path that could reach beyond the provider's base URL."""
    if not path or not all(_safe(s) for s in path.split("/")):
        raise ProxyError(
            400,
            "The path after /v1/ must be plain segments (letters, digits and ._~:@+=,-): "
            "no `..`, empty segments, absolute URLs or escapes.",
            code="invalid_path",
        )


def check_simple_request(method: str, body: ClientBody, headers: Mapping[str, str], keys_required: bool) -> None:
    """Refuse what a page on any web site could make its visitor's browser POST here without a
    preflight: form and text bodies (415), and multipart or body-less POSTs without an
    `Authorization` or `api-key` header (401), which no such page can add. With proxy keys
    configured every call has passed the key check already."""
    if method != "POST":
        return  # PUT, PATCH and DELETE always need a preflight
    media = body.media_type
    if media in SIMPLE_TEXT_TYPES or (not media and body.raw):
        refused = f"Unsupported content type {media!r}" if media else "The body has no Content-Type"
        raise ProxyError(
            415, f"{refused}: send JSON (application/json) or a multipart form.",
            code="unsupported_content_type",
        )
    if (media == "multipart/form-data" or not media) and not keys_required:
        if not headers.get("authorization") and not headers.get("api-key"):
            raise ProxyError(
                401,
                "A multipart or empty POST needs an Authorization or api-key header (any value while "
                "the proxy has no proxy keys): without one, any web page could send it through a "
                "visitor's browser.",
                code="missing_api_key",
            )


def _safe(segment: str) -> bool:
    return segment not in (".", "..") and SAFE_SEGMENT.fullmatch(segment) is not None


class Forwarder:
    """Routes, sends and answers one forwarded call; the handler records it."""

    def __init__(self, router: Router, caller: UpstreamCaller, settings: Settings) -> None:
        self.router = router
        self.caller = caller
        self.default_provider = settings.default_provider
        self.max_body_bytes = settings.max_body_bytes
        self.max_json_depth = settings.limits.max_json_depth
        self.keys_required = bool(settings.client_keys)

    async def forward(
        self, request: Request, path: str, headers: Mapping[str, str], record: CallRecord, max_attempts: int
    ) -> WholeAnswer | Outcome:
        """The upstream's answer: read whole, or (an Outcome) a 200 whose body is to be relayed as
        it comes; ProxyError for what the proxy refuses or could not deliver."""
        check_path(path)
        if request.method not in FORWARDED_METHODS:
            raise ProxyError(
                405, f"{request.method} is not forwarded: use {', '.join(FORWARDED_METHODS)}.", code="method_not_allowed"
            )
        raw = await read_body(request, headers, self.max_body_bytes)
        body = ClientBody(raw, headers.get("content-type", ""), self.max_json_depth)
        record.request_text, note = body.logged()
        if note:
            record.notes.append(note)
        check_simple_request(request.method, body, headers, self.keys_required)
        record.payload = body.payload
        model = _asked_model(body.model())
        record.model = model
        routes = self.router.resolve(model) if model else [Route(self.default_provider, "")]
        sent = {name: headers[name] for name in FORWARDED_HEADERS if name in headers}
        if body.raw and "content-type" not in sent:
            sent["content-type"] = "application/json"
        query = request.scope.get("query_string", b"").decode("latin-1")

        def build(provider: Provider, route: Route) -> UpstreamRequest:
            return provider.forward(request.method, path, query, sent, body.for_model(route.upstream_model))

        try:
            outcome = await self.caller.call(
                record, routes, record.endpoint, {}, max_attempts=max_attempts, stream=relayed_unread, build=build
            )
        finally:
            record.upstream_model = record.upstream_model or None
        if outcome.body is None:
            return outcome  # relayed as it comes (proxy.body_relay)
        answer = outcome.body
        content_type = outcome.response.headers.get("content-type", "")
        logged, note = logged_body(answer, content_type, "response_json")
        if note:
            record.notes.append(note)
        return WholeAnswer(
            outcome.response.status_code,
            passthrough_headers(outcome.response.headers),
            answer,
            record.provider or "",
            record.upstream_model,
            retried=len(record.attempts) > 1,
            logged=logged.encode() if logged is not None else None,
        )


def _asked_model(value: Any) -> str | None:
    """The body's `model`, which a forwarded call may leave out but not get wrong."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ProxyError(
            400, f"`model` must be of type str, not {type(value).__name__}.", param="model", code="invalid_type"
        )
    if not value.strip():
        raise ProxyError(400, "`model` must not be empty.", param="model", code="invalid_value")
    return value
