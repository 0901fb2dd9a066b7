"""Calls about an earlier response: `previous_response_id`, and retrieve, delete, cancel, input items.

Each goes to the provider that created the response, found in the proxy's own log. A
provider that keeps responses (OpenAI, Azure, any server with a Responses API) gets the
call as it is. For one that keeps none (the mock, a chat-only server behind translation)
the proxy answers from its log, and a `previous_response_id` becomes the conversation it
names, rebuilt from the log as input items.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..answers import passthrough_headers
from ..errors import ProxyError
from ..record import CallRecord
from ..request_headers import (
    RequestOptions, authenticate, parse_options, plain_headers, read_study_headers, study_metadata,
)
from ..routing import Route as UpstreamRoute
from ..sse_response import STREAM_HEADERS
from .builder import sse_event
from .relay import ResponsesRelay
from .replay import replayed_events
from .state import KnownResponse, input_items, not_found

if TYPE_CHECKING:
    from ..api import ProxyAPI

#: What a response id may look like: anything else never reaches an upstream URL.
RESPONSE_ID = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
#: action → (method, path after `responses/{id}`)
ACTIONS = {"retrieve": ("GET", ""), "delete": ("DELETE", ""), "cancel": ("POST", "/cancel"),
           "input_items": ("GET", "/input_items")}


class ResponseTurns:
    def __init__(self, api: ProxyAPI) -> None:
        self.api = api

    def routes(self, prefixes: tuple[str, ...]) -> list[Route]:
        routes = []
        for prefix in prefixes:
            base = f"{prefix}/responses/{{response_id}}"
            routes += [
                Route(base, self._handler("retrieve"), methods=["GET"]),
                Route(base, self._handler("delete"), methods=["DELETE"]),
                Route(f"{base}/cancel", self._handler("cancel"), methods=["POST"]),
                Route(f"{base}/input_items", self._handler("input_items"), methods=["GET"]),
            ]
        return routes

    def keeps_state(self, provider: str) -> bool:
        return self.api.caller.providers[provider].keeps_responses

    async def prepare(
        self, record: CallRecord, payload: dict[str, Any], routes: list[UpstreamRoute]
    ) -> tuple[list[UpstreamRoute], dict[str, Any]]:
        """The routes and the upstream body of a `POST /responses` that continues an earlier response."""
        previous = payload.get("previous_response_id")
        if not isinstance(previous, str):
            return routes, payload
        known = await self.api.responses.find(previous)
        if known is None:  # not from this proxy: a provider that keeps responses may know it
            keeping = [route for route in routes if self.keeps_state(route.provider)]
            if not keeping:
                raise not_found(previous, param="previous_response_id")
            return keeping, payload
        pinned = [route for route in routes if route.provider == known.provider]
        if not pinned:
            pinned = [UpstreamRoute(known.provider, known.upstream_model or routes[0].upstream_model)]
        if self.keeps_state(known.provider):
            return pinned, payload
        history = await self.api.responses.history(previous)
        record.notes.append(f"previous_response_id rebuilt from the log: {len(history)} earlier items sent upstream")
        return pinned, {**payload, "input": history + input_items(payload)}

    def _handler(self, action: str):  # type: ignore[no-untyped-def]
        async def handler(request: Request) -> Response:
            return await self.handle(request, action)

        return handler

    async def handle(self, request: Request, action: str) -> Response:
        api = self.api
        record = CallRecord(f"responses/{action}")
        headers = plain_headers(request)
        read_study_headers(headers, record)
        response_id = request.path_params["response_id"]
        try:
            record.client = authenticate(api.settings.client_keys, headers)
            record.study_metadata = {**(study_metadata(headers, api.settings.limits.max_json_depth) or {}), "response_id": response_id}
            if not RESPONSE_ID.match(response_id):
                raise not_found(response_id)
            known = await api.responses.find(response_id)
            provider = known.provider if known is not None else api.settings.default_provider
            record.provider = provider
            if known is not None:
                record.model = record.upstream_model = known.upstream_model
            if self.keeps_state(provider):
                options = parse_options(headers, api.settings.retry.max_attempts)
                return await self._forward(request, record, options, action, response_id)
            if known is None:
                raise not_found(response_id)
            return self._answer_from_log(request, record, action, known)
        except ProxyError as exc:
            return api.fail(record, exc)

    async def _forward(
        self, request: Request, record: CallRecord, options: RequestOptions, action: str, response_id: str
    ) -> Response:
        """To the creating provider, through the caller: retries and an `attempts` row each, like any call."""
        method, tail = ACTIONS[action]
        path = f"responses/{quote(response_id, safe='')}{tail}"
        query = request.url.query
        route = UpstreamRoute(record.provider or "", record.upstream_model or "")
        streamed = action == "retrieve" and _streamed(request)
        accept = {"accept": "text/event-stream" if streamed else "application/json"}
        outcome = await self.api.caller.call(
            record, [route], path, {}, max_attempts=options.max_attempts, stream=streamed,
            build=lambda provider, _: provider.forward(method, path, query, accept, b""),
        )
        if streamed:
            await outcome.read_unless_events()
            if outcome.body is None:  # the events, passed on as they come (a background response still running)
                record.stream = True
                return self.api.relayed_stream(record, outcome, ResponsesRelay())
        status = outcome.response.status_code
        if action == "delete" and status == 200:
            self.api.responses.forget(response_id)
            _note_deleted(record)
        headers = passthrough_headers(outcome.response.headers)
        if status >= 400 and len(record.attempts) > 1:
            headers["x-should-retry"] = "false"
        return self._send(record, status, outcome.body or b"", headers)

    def _answer_from_log(self, request: Request, record: CallRecord, action: str, known: KnownResponse) -> Response:
        if action == "retrieve":
            if _streamed(request):
                return self._replayed(record, known.response, request.query_params.get("starting_after"))
            return self._json(record, known.response)
        if action == "delete":
            self.api.responses.forget(known.id)
            _note_deleted(record)
            return self._json(record, {"id": known.id, "object": "response", "deleted": True})
        if action == "cancel":  # a background response here has finished: cancelling it changes nothing
            if known.response.get("background") is True:
                return self._json(record, known.response)
            raise ProxyError(400, "Only responses created with background=true can be cancelled.", code="invalid_request")
        return self._json(record, _input_item_list(known, request.query_params))

    def _replayed(self, record: CallRecord, response: dict[str, Any], starting_after: str | None) -> Response:
        """The stored response as its event stream, the events after `starting_after` (replay.py)."""
        after = -1
        if starting_after is not None:
            if not (starting_after.isascii() and starting_after.isdigit()):
                raise ProxyError(400, f"Invalid value for 'starting_after': {starting_after!r}. It must be a "
                                 "sequence number, a whole number from 0.", param="starting_after", code="invalid_value")
            after = int(starting_after)
        events = b"".join(sse_event(event) for event in replayed_events(response) if event["sequence_number"] > after)
        record.stream = True
        # the row keeps the response, as a relayed stream's does
        return self._send(record, 200, events, {**STREAM_HEADERS, "content-type": "text/event-stream"},
                          logged=orjson.dumps(response))

    def _json(self, record: CallRecord, body: dict[str, Any]) -> Response:
        return self._send(record, 200, orjson.dumps(body), {"content-type": "application/json"})

    def _send(
        self, record: CallRecord, status: int, body: bytes, headers: dict[str, str], logged: bytes | None = None
    ) -> Response:
        """Answer `body` and record the call; its row keeps `logged` instead when there is one."""
        record.response_body = body if logged is None else logged
        record.finish(status)
        self.api.submit(record)
        return Response(body, status, headers={**self.api.study_headers(record), **headers})


def _streamed(request: Request) -> bool:
    """`GET …/responses/{id}?stream=true`: the response as its event stream."""
    return request.query_params.get("stream") in ("true", "1")


def _note_deleted(record: CallRecord) -> None:
    """The row says so: a later lookup in the log finds the response gone."""
    record.study_metadata = {**(record.study_metadata or {}), "deleted": True}


def _input_item_list(known: KnownResponse, query: Any) -> dict[str, Any]:
    """`GET /responses/{id}/input_items` as OpenAI pages it: newest first unless `order=asc`."""
    order, limit = query.get("order", "desc"), query.get("limit", "20")
    if order not in ("asc", "desc"):
        raise ProxyError(400, f"Invalid value for 'order': {order!r}. Supported values are: 'asc' and 'desc'.",
                         param="order", code="invalid_value")
    if not (limit.isascii() and limit.isdigit() and 1 <= int(limit) <= 100):
        raise ProxyError(400, f"Invalid value for 'limit': {limit!r}. It must be a whole number from 1 to 100.",
                         param="limit", code="invalid_value")
    items = []
    for number, item in enumerate(input_items(known.request)):
        items.append({"id": item.get("id") or f"item_{known.id}_{number}", **item})
    if order == "desc":
        items.reverse()
    after = query.get("after")
    if after:
        ids = [item["id"] for item in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    page = items[: int(limit)]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(items) > len(page),
    }
