"""The `/v1/*` handlers: parse, route, call upstream, answer, and hand a record to the recorder."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .answers import CapturedStream, WholeAnswer, passthrough_headers
from .body_relay import RelayedBody, relayed_headers
from .cache import request_key
from .config import Settings
from .endpoints import ENDPOINTS, RESPONSES_ENDPOINTS
from .errors import ProxyError
from .forward import Forwarder, endpoint_name, own_path_error
from .metrics import Metrics
from .models import ModelCatalogue
from .preprocess.hook import Preprocessor
from .providers import Provider
from .pricing import Pricer
from .record import CallRecord
from .recorder import Recorder
from .request_headers import (
    RequestOptions, authenticate, identity, parse_options, plain_headers, read_study_headers, study_metadata,
)
from .resilience import Outcome, UpstreamCaller
from .responses.relay import ResponsesRelay
from .responses.state import ResponseIndex
from .responses.turns import ResponseTurns
from .routing import Router, check_deployment
from .routing import Route as UpstreamRoute
from .shared import build_sharing
from .sse_response import SHUT_DOWN, STREAM_HEADERS, RelayedStream
from .store.reader import rows_for_response
from .streaming import StreamRelay
from .upstream import UpstreamClient
from .validation import check_content_type, decode_text, parse_payload, read_body, validate

log = logging.getLogger("proxy.api")

ANY_METHOD = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
#: Inbound prefixes of the OpenAI-shaped paths: OpenAI's own, Azure's classic and its v1 surface.
API_PREFIXES = ("/v1", "/openai", "/openai/v1")


@dataclass(frozen=True, slots=True)
class Call:
    """One validated client request on its way upstream."""

    record: CallRecord
    endpoint: str
    payload: dict[str, Any]  # as the client sent it: what the cache and single-flight key on
    routes: list[UpstreamRoute]
    options: RequestOptions
    cache: str  # "on", "off" or "refresh", after the header, the alias and the config
    key: bytes  # what identical requests share: single-flight and cache
    upstream_payload: dict[str, Any] = field(default_factory=dict)  # what goes upstream, when it differs
    body: bytes | None = None  # the bytes `payload` was parsed from, when it is them (no preprocessing)


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
        self.caller = UpstreamCaller(providers, client, settings.retry)
        self.catalogue = ModelCatalogue(self.router, providers, client)
        self.preprocessor = Preprocessor(settings.templates, settings.alias_preprocess)
        self.forwarder = Forwarder(self.router, self.caller, settings)
        self.recorder = recorder
        store = recorder.store
        self.responses = ResponseIndex(lambda response_id: rows_for_response(store.path, store.engine, response_id))
        self.turns = ResponseTurns(self)
        self.pricer = Pricer(
            settings.prices,
            {name: p.price_provider for name, p in settings.providers.items() if p.price_provider},
        )
        self.sharing = build_sharing(settings)  # in-process, or through Redis with REDIS_URL
        self.flights, self.cache = self.sharing.flights, self.sharing.cache
        self.metrics = Metrics(settings.client_keys, recorder.stats, settings.metrics_dir)

    async def start(self) -> None:
        self.pricer.warm()
        await self.sharing.start()
        await self.metrics.start()

    async def aclose(self) -> None:
        await self.sharing.aclose()
        await self.metrics.aclose()

    def routes(self) -> list[Route]:
        routes = [Route(f"/v1/{e}", self._endpoint_handler(e), methods=["POST"]) for e in ENDPOINTS]
        routes += [
            # `path`: a deployment holding a slash (or %2F) gets its 400 and row rather than a 404.
            Route(f"/openai/deployments/{{deployment:path}}/{e}", self._endpoint_handler(e), methods=["POST"])
            for e in ENDPOINTS
        ]
        routes += [Route(f"/openai/v1/{e}", self._endpoint_handler(e, azure=True), methods=["POST"]) for e in ENDPOINTS]
        routes += [Route(f"/openai/{e}", self._endpoint_handler(e, azure=True), methods=["POST"]) for e in RESPONSES_ENDPOINTS]
        routes += self.turns.routes(API_PREFIXES)
        for prefix in API_PREFIXES:
            routes += [
                Route(f"{prefix}/models", self.models, methods=["GET"]),
                Route(f"{prefix}/models/{{model_id:path}}", self.models, methods=["GET"]),
            ]
        routes += [
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/metrics", self.metrics.endpoint, methods=["GET"]),
            Route("/v1/{path:path}", self.forward, methods=list(ANY_METHOD)),
            Route("/openai/v1/{path:path}", self.forward, methods=list(ANY_METHOD)),
        ]
        return routes

    def _endpoint_handler(self, endpoint: str, azure: bool = False):  # type: ignore[no-untyped-def]
        """`azure`: an inbound Azure path whose body names the deployment as its `model`."""

        async def handler(request: Request) -> Response:
            return await self.handle(request, endpoint, azure)

        return handler

    async def models(self, request: Request) -> Response:
        """The model list, or one model by its id (which may hold slashes): see proxy/models.py."""
        model_id = request.path_params.get("model_id")
        try:
            authenticate(self.settings.client_keys, plain_headers(request))
            body = await (self.catalogue.listing() if model_id is None else self.catalogue.model(model_id))
        except ProxyError as exc:
            return Response(exc.json(), exc.status_code, media_type="application/json")
        return JSONResponse(body)

    async def healthz(self, request: Request) -> Response:
        """The log's health, and which process answered (with `--workers`, one of several)."""
        status_code, body = self.recorder.health()
        return JSONResponse(body | {"pid": os.getpid()}, status_code)

    async def forward(self, request: Request) -> Response:
        """Any other `/v1/…` call, passed on to the routed provider with a row (proxy/forward.py);
        one of the proxy's own paths that no route took is a recorded 405 or 404."""
        path = request.path_params["path"]
        record = CallRecord(endpoint_name(path, request.method))
        refused = own_path_error(path, request.method, request.url.path)

        async def work(headers: dict[str, str], options: RequestOptions) -> Response | RelayedBody:
            answer = await self.forwarder.forward(request, path, headers, record, options.max_attempts)
            if isinstance(answer, WholeAnswer):
                return self._answer(record, answer)
            response = answer.response
            headers = relayed_headers(response, {**self.study_headers(record), **passthrough_headers(response.headers)})
            return RelayedBody(record, response, answer.attempt, headers, self.submit,
                               idle_timeout=self.settings.timeouts.stream_idle)

        return await self._recorded(request, record, work, refused)

    async def handle(self, request: Request, endpoint: str, azure: bool = False) -> Response:
        record = CallRecord(endpoint, pricer=self.pricer)
        return await self._recorded(request, record, partial(self._call, request, record, endpoint, azure))

    async def _recorded(
        self, request: Request, record: CallRecord, work: Callable[[dict[str, str], RequestOptions], Awaitable[Response]],
        refused: ProxyError | None = None,
    ) -> Response:
        """What every recorded call shares: its study headers, the client's key and options, and
        whatever goes wrong on the way turned into the call's answer and row."""
        headers = plain_headers(request)
        read_study_headers(headers, record)
        try:
            if refused is not None:
                raise refused
            record.client = authenticate(self.settings.client_keys, headers)
            options = parse_options(headers, self.settings.retry.max_attempts)
            record.study_metadata = study_metadata(headers, self.settings.limits.max_json_depth)
            return await work(headers, options)
        except ProxyError as exc:
            return self.fail(record, exc)
        except asyncio.CancelledError:
            # The server's shutdown grace ran out: the call is cut, with a row and an answer that
            # say so (no response has started: a started one is a stream, which ends itself).
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            return self.fail(record, ProxyError(503, SHUT_DOWN, type="server_error", code="shutdown"))
        except Exception:
            return self.fail(record, _internal_error(record))

    async def _call(
        self, request: Request, record: CallRecord, endpoint: str, azure: bool,
        headers: dict[str, str], options: RequestOptions,
    ) -> Response:
        """A model call (chat, completions, embeddings, responses): read, validate, route, answer."""
        steps = self.preprocessor.requested(headers)
        body = await read_body(request, headers, self.settings.max_body_bytes)
        # with preprocessing asked for, the log keeps the preprocessed body or none
        record.request_text = None if steps else body.decode("utf-8", "replace")
        check_content_type(headers)
        decode_text(body)
        payload = record.payload = parse_payload(body, self.settings.limits.max_json_depth)
        record.payload_is_text = not steps  # preprocessing replaces both (proxy/preprocess/hook.py)
        deployment = request.path_params.get("deployment")
        if deployment is not None:
            check_deployment(deployment)
        asked = self._deployment_model(deployment) if deployment else payload.get("model")
        if azure and isinstance(asked, str):
            asked = self._deployment_model(asked)
        record.model = asked if isinstance(asked, str) else None
        payload = self.preprocessor.apply(record, endpoint, payload, record.model, steps)
        model = validate(endpoint, payload, asked)
        routes = self.router.resolve(model)
        upstream_payload = payload
        if endpoint in RESPONSES_ENDPOINTS:
            routes, upstream_payload = await self.turns.prepare(record, payload, routes)
        record.provider, record.upstream_model = routes[0].provider, routes[0].upstream_model
        key = request_key(endpoint, routes, identity(headers, record.client), payload)
        call = Call(record, endpoint, payload, routes, options, self._cache_mode(options, model), key, upstream_payload,
                    None if steps else body)
        if payload.get("stream"):
            record.stream = True
            return await self._stream(call)
        return await self._complete(call)

    async def _complete(self, call: Call) -> Response:
        record = call.record
        if call.cache == "on" and isinstance(hit := await self.cache.get(call.key), WholeAnswer):
            record.cache = "hit"
            return self._answer(record, hit)

        async def fetch() -> WholeAnswer | ProxyError:
            return await self._fetch_whole(call)

        if call.options.dedup:
            result, leader = await self.flights.run(call.key, fetch)
        else:
            result, leader = await fetch(), True
        if not leader:
            record.cache = "dedup"
        elif call.cache != "off":
            record.cache = "miss"
        if isinstance(result, ProxyError):
            raise result
        if leader and call.cache != "off" and result.status_code == 200:
            self.cache.put(call.key, result)
        return self._answer(record, result)

    async def _fetch_whole(self, call: Call) -> WholeAnswer | ProxyError:
        """The upstream answer for the leader of a flight; errors are returned so followers share them."""
        try:
            outcome = await self._upstream(call, call.upstream_payload, stream=False)
        except ProxyError as exc:
            return exc
        return _whole(call.record, outcome)

    async def _upstream(self, call: Call, payload: dict[str, Any], stream: bool) -> Outcome:
        """Upstream along the routes, with the retries this request allows; the client's bytes go
        as they are while `payload` is what they say (`Provider.build`)."""
        return await self.caller.call(
            call.record, call.routes, call.endpoint, payload, max_attempts=call.options.max_attempts, stream=stream,
            raw=call.body if payload is call.payload else None,
        )

    async def _stream(self, call: Call) -> Response:
        record, endpoint, payload = call.record, call.endpoint, call.upstream_payload
        if call.cache == "on" and isinstance(hit := await self.cache.get(call.key), CapturedStream):
            return self._replay(record, hit)
        if call.cache != "off":
            record.cache = "miss"
        stream_options = payload.get("stream_options")
        asked_usage = isinstance(stream_options, dict) and stream_options.get("include_usage") is True
        upstream_payload = payload
        strip_usage = False
        if not asked_usage and endpoint in ("chat/completions", "completions"):  # Responses streams end with usage
            provider = self.caller.providers[call.routes[0].provider]
            if provider.accepts_stream_options():
                extra = stream_options if isinstance(stream_options, dict) else {}
                upstream_payload = {**payload, "stream_options": {**extra, "include_usage": True}}
                strip_usage = True
            else:
                record.notes.append("this provider's api-version does not accept stream_options: no usage asked for")
        outcome = await self._upstream(call, upstream_payload, stream=True)
        await outcome.read_unless_events()
        if outcome.body is not None:
            return self._answer(record, _whole(record, outcome))
        on_complete = None
        if call.cache != "off":

            def on_complete(events: bytes, relay: StreamRelay | ResponsesRelay) -> None:
                self.cache.put(
                    call.key,
                    CapturedStream(
                        events, passthrough_headers(outcome.response.headers), relay.assembled(), relay.text,
                        relay.usage, record.provider or "", record.upstream_model or "",
                    ),
                )

        relay = ResponsesRelay() if endpoint == "responses" else StreamRelay(endpoint, strip_usage)
        return self.relayed_stream(record, outcome, relay, on_complete)

    def relayed_stream(
        self, record: CallRecord, outcome: Outcome, relay: StreamRelay | ResponsesRelay,
        on_complete: Callable[[bytes, StreamRelay | ResponsesRelay], None] | None = None,
    ) -> RelayedStream:
        """An upstream event stream passed on as it comes; its row is made when it ends."""
        headers = {**self.study_headers(record), **passthrough_headers(outcome.response.headers)}
        return RelayedStream(record, outcome.response, outcome.attempt, relay, headers, self.submit,
                             idle_timeout=self.settings.timeouts.stream_idle, on_complete=on_complete)

    def _answer(self, record: CallRecord, answer: WholeAnswer) -> Response:
        record.provider, record.upstream_model = answer.provider, answer.upstream_model
        record.response_body = answer.body if answer.logged is None else answer.logged
        record.finish(answer.status_code)
        self.submit(record)
        headers = {**self.study_headers(record), **answer.headers}
        if answer.status_code >= 400 and answer.retried:
            headers["x-should-retry"] = "false"
        return Response(answer.body, answer.status_code, headers=headers)

    def _replay(self, record: CallRecord, hit: CapturedStream) -> Response:
        record.cache = "hit"
        record.provider, record.upstream_model = hit.provider, hit.upstream_model
        record.answer, record.response_text, record.usage = hit.answer, hit.text, hit.usage
        record.finish(200)
        self.submit(record)
        headers = {**self.study_headers(record), **hit.headers, **STREAM_HEADERS}
        return Response(hit.events, 200, headers=headers)

    def fail(self, record: CallRecord, exc: ProxyError) -> Response:
        record.finish(exc.status_code, exc.message)
        self.submit(record)
        headers = {**self.study_headers(record), **exc.headers}
        return Response(exc.json(), exc.status_code, headers=headers, media_type="application/json")

    def submit(self, record: CallRecord) -> None:
        """Hand a finished record to the recorder; a new Responses API response is remembered too."""
        if record.endpoint == "responses":
            if record.attempts and not self.caller.providers[record.attempts[-1].provider].config.responses:
                record.notes.append(f"translated to chat/completions: `{record.provider}` has no Responses API")
            self.responses.remember(record)
        # Counted at the next turn of the loop, once the answer is written: none waits for it.
        asyncio.get_running_loop().call_soon(self.metrics.observe, record)
        self.recorder.submit(record)

    def study_headers(self, record: CallRecord) -> dict[str, str]:
        headers = {"x-study-request-id": record.request_id, "x-study-attempts": str(len(record.attempts))}
        if record.provider:
            headers["x-study-provider"] = record.provider
        if record.cache:
            headers["x-study-cache"] = record.cache
        return headers

    def _cache_mode(self, options: RequestOptions, model: str) -> str:
        if options.cache:
            return options.cache
        return "on" if self.settings.cache.enabled or model in self.settings.cached_aliases else "off"

    def _deployment_model(self, deployment: str) -> str:
        """An Azure-style inbound call: the deployment is served by `azure` when it is configured."""
        prefix, slash, _ = deployment.partition("/")
        if (slash and prefix in self.settings.providers) or not self.router.available("azure"):
            return deployment
        return f"azure/{deployment}"


def _whole(record: CallRecord, outcome: Outcome) -> WholeAnswer:
    """A read upstream answer as the client gets it, shareable with followers and the cache."""
    return WholeAnswer(
        outcome.response.status_code,
        passthrough_headers(outcome.response.headers),
        outcome.body or b"",
        record.provider or "",
        record.upstream_model or "",
        retried=len(record.attempts) > 1,
    )


def _internal_error(record: CallRecord) -> ProxyError:
    """A fault in the proxy: its traceback goes to the server's log, the client gets the request id."""
    log.exception("unexpected failure on request %s", record.request_id)
    return ProxyError(
        500,
        f"The proxy failed on this request (id {record.request_id}); its log has the details.",
        type="server_error",
        code="internal_error",
    )
