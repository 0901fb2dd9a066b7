"""The `/v1/*` handlers: parse, route, call upstream, answer, and hand a record to the recorder."""

from __future__ import annotations

import hmac
import logging
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .config import Settings
from .errors import ProxyError
from .providers import Provider
from .record import Attempt, CallRecord, redact_headers
from .recorder import Recorder
from .routing import Router
from .sse_response import RelayedStream
from .streaming import StreamRelay
from .upstream import UpstreamClient, UpstreamResponse, UpstreamUnreachable
from .validation import check_content_type, decode_text, parse_payload, read_body, validate

log = logging.getLogger("proxy.api")

#: Upstream response headers worth passing on to the client.
PASSTHROUGH_HEADERS = frozenset({"x-request-id", "retry-after", "retry-after-ms", "openai-processing-ms"})
PASSTHROUGH_PREFIXES = ("x-ratelimit-",)
ANY_METHOD = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class ProxyAPI:
    """Everything a request needs, wired once at start-up."""

    def __init__(
        self,
        settings: Settings,
        providers: dict[str, Provider],
        client: UpstreamClient,
        recorder: Recorder,
    ) -> None:
        self.settings = settings
        self.router = Router(settings)
        self.providers = providers
        self.client = client
        self.recorder = recorder

    def routes(self) -> list[Route]:
        endpoints = ("chat/completions", "completions", "embeddings")
        routes = [Route(f"/v1/{e}", self._endpoint_handler(e), methods=["POST"]) for e in endpoints]
        routes += [
            Route(f"/openai/deployments/{{deployment}}/{e}", self._endpoint_handler(e), methods=["POST"])
            for e in endpoints
        ]
        routes += [
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/v1/{path:path}", self.unknown_endpoint, methods=list(ANY_METHOD)),
        ]
        return routes

    def _endpoint_handler(self, endpoint: str):  # type: ignore[no-untyped-def]
        async def handler(request: Request) -> Response:
            return await self.handle(request, endpoint)

        return handler

    async def models(self, request: Request) -> Response:
        try:
            self._authenticate(request)
        except ProxyError as exc:
            return Response(exc.json(), exc.status_code, media_type="application/json")
        data = [
            {"id": model, "object": "model", "created": 0, "owned_by": owner}
            for model, owner in self.router.listed_models()
        ]
        return JSONResponse({"object": "list", "data": data})

    async def healthz(self, request: Request) -> Response:
        recorder = self.recorder
        return JSONResponse(
            {"status": "ok", "log": {"pending": recorder.pending, "written": recorder.written}}
        )

    async def unknown_endpoint(self, request: Request) -> Response:
        """Any other `/v1/…` call: a recorded 404 (or 405 for a known path and the wrong method)."""
        path = request.path_params["path"]
        record = CallRecord(path)
        self._read_study_headers(request, record)
        if path in ("chat/completions", "completions", "embeddings", "models"):
            method = "GET" if path == "models" else "POST"
            error = ProxyError(405, f"Use {method} for /v1/{path}, not {request.method}.", code="method_not_allowed")
        else:
            error = ProxyError(404, f"Unknown endpoint /v1/{path}: this proxy serves chat/completions, completions, embeddings and models.", code="unknown_url")
        return self._fail(record, error)

    async def handle(self, request: Request, endpoint: str) -> Response:
        record = CallRecord(endpoint)
        self._read_study_headers(request, record)
        try:
            record.client = self._authenticate(request)
            body = await read_body(request, self.settings.max_body_bytes)
            record.request_text = body.decode("utf-8", "replace")
            check_content_type(request)
            decode_text(body)
            payload = record.payload = parse_payload(body)
            asked = self._deployment_model(request.path_params["deployment"]) if "deployment" in request.path_params else payload.get("model")
            record.model = asked if isinstance(asked, str) else None
            model = validate(endpoint, payload, asked)
            route = self.router.resolve(model)[0]
            record.provider, record.upstream_model = route.provider, route.upstream_model
            provider = self.providers[route.provider]
            if payload.get("stream"):
                record.stream = True
                return await self._stream(record, provider, endpoint, payload)
            return await self._forward(record, provider, endpoint, payload)
        except ProxyError as exc:
            return self._fail(record, exc)
        except Exception:
            log.exception("unexpected failure on request %s", record.request_id)
            return self._fail(
                record,
                ProxyError(
                    500,
                    f"The proxy failed on this request (id {record.request_id}); its log has the details.",
                    type="server_error",
                    code="internal_error",
                ),
            )

    async def _forward(
        self, record: CallRecord, provider: Provider, endpoint: str, payload: dict[str, Any]
    ) -> Response:
        response, attempt = await self._send(record, provider, endpoint, payload)
        return await self._answer_whole(record, response, attempt)

    async def _stream(
        self, record: CallRecord, provider: Provider, endpoint: str, payload: dict[str, Any]
    ) -> Response:
        options = payload.get("stream_options")
        asked_usage = isinstance(options, dict) and options.get("include_usage") is True
        strip_usage = False
        if not asked_usage and endpoint != "embeddings":
            if provider.accepts_stream_options():
                payload = {**payload, "stream_options": {**(options if isinstance(options, dict) else {}), "include_usage": True}}
                strip_usage = True
            else:
                record.notes.append("this provider's api-version does not accept stream_options: no usage asked for")
        response, attempt = await self._send(record, provider, endpoint, payload)
        content_type = response.headers.get("content-type", "")
        if response.status_code != 200 or not content_type.startswith("text/event-stream"):
            return await self._answer_whole(record, response, attempt)
        relay = StreamRelay(endpoint, strip_usage)
        return RelayedStream(record, response, attempt, relay, self._headers(record, response), self.recorder)

    async def _send(
        self, record: CallRecord, provider: Provider, endpoint: str, payload: dict[str, Any]
    ) -> tuple[UpstreamResponse, Attempt]:
        request = provider.build(endpoint, record.upstream_model or "", payload)
        attempt = record.begin_attempt(provider.name, urlsplit(request.url).path)
        try:
            response = await provider.send(self.client, request)
        except UpstreamUnreachable as exc:
            attempt.finish(error=str(exc))
            raise unreachable_error(exc, provider.name) from None
        return response, attempt

    async def _answer_whole(self, record: CallRecord, response: UpstreamResponse, attempt: Attempt) -> Response:
        try:
            body = await response.read()
        except UpstreamUnreachable as exc:
            attempt.finish(response.status_code, str(exc))
            raise unreachable_error(exc, attempt.provider) from None
        attempt.finish(response.status_code)
        record.response_body = body
        record.finish(response.status_code)
        self.recorder.submit(record)
        return Response(body, response.status_code, headers=self._headers(record, response))

    def _fail(self, record: CallRecord, exc: ProxyError) -> Response:
        record.finish(exc.status_code, exc.message)
        self.recorder.submit(record)
        return Response(exc.json(), exc.status_code, headers=self._headers(record), media_type="application/json")

    def _headers(self, record: CallRecord, response: UpstreamResponse | None = None) -> dict[str, str]:
        headers = {"x-study-request-id": record.request_id, "x-study-attempts": str(len(record.attempts))}
        if record.provider:
            headers["x-study-provider"] = record.provider
        if response is not None:
            for name, value in response.headers.items():
                name = name.lower()
                if name in PASSTHROUGH_HEADERS or name.startswith(PASSTHROUGH_PREFIXES):
                    headers[name] = value
            headers["content-type"] = response.headers.get("content-type", "application/json")
        return headers

    def _read_study_headers(self, request: Request, record: CallRecord) -> None:
        headers = request.headers
        record.session_id = headers.get("x-study-session") or None
        tags = headers.get("x-study-tags")
        if tags:
            record.tags = [tag.strip() for tag in tags.split(",") if tag.strip()] or None
        record.user = headers.get("x-study-user") or None
        record.log_full = headers.get("x-study-log", "full").strip().lower() != "meta"
        record.request_headers = redact_headers(headers)

    def _authenticate(self, request: Request) -> str | None:
        """The client alias of a valid proxy key; None when the operator set no proxy keys."""
        keys = self.settings.client_keys
        if not keys:
            return None
        authorization = request.headers.get("authorization", "")
        token = authorization[7:].strip() if authorization[:7].lower() == "bearer " else request.headers.get("api-key", "")
        for key, alias in keys.items():
            if hmac.compare_digest(key.encode(), token.encode()):
                return alias
        raise ProxyError(401, "Missing or invalid proxy API key.", code="invalid_api_key")

    def _deployment_model(self, deployment: str) -> str:
        """An Azure-style inbound call: the deployment is served by `azure` when it is configured."""
        return f"azure/{deployment}" if self.router.available("azure") else deployment


def unreachable_error(exc: UpstreamUnreachable, provider: str) -> ProxyError:
    if exc.kind == "timeout":
        return ProxyError(504, f"Upstream `{provider}` did not answer in time.", type="upstream_error", code="upstream_timeout")
    return ProxyError(502, f"Upstream `{provider}` could not be reached: {exc}", type="upstream_error", code="upstream_unreachable")
