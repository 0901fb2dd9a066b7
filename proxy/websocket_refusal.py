"""WebSocket connections (OpenAI's Realtime API, `wss://…/v1/realtime`): refused, clearly, with a row.

The proxy carries HTTP calls only. A client that opens a WebSocket (openai-python's
`client.realtime.connect()`, the openai-agents SDK's realtime agents) would otherwise get
a bare 403 and no trace in the log. It gets its handshake answered with a 501 in OpenAI's
error shape that says what to do instead, and a call under `/v1/` (or Azure's paths) has
its row like any refused call, with the path as its `endpoint` (`realtime`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .errors import ProxyError
from .forward import endpoint_name
from .record import CallRecord

if TYPE_CHECKING:
    from .api import ProxyAPI

#: The longest model name a row keeps from the query string.
MODEL_CAP = 200
#: The ASGI extension that lets an app answer a WebSocket handshake with an HTTP response.
DENIAL_EXTENSION = "websocket.http.response"


def unsupported(path: str) -> ProxyError:
    return ProxyError(
        501,
        f"{path} was asked for as a WebSocket, and this proxy carries HTTP calls only: the Realtime API "
        "is not proxied. Connect to the provider directly for it, or use the HTTP APIs through the proxy "
        "(/v1/chat/completions takes and answers audio too).",
        code="unsupported_endpoint",
    )


async def refuse_websocket(
    api: ProxyAPI, api_paths: tuple[str, ...], scope: Scope, receive: Receive, send: Send
) -> None:
    """Answer the handshake with the 501 (or close it, for a server without the denial
    extension); record it when the path is one of the API's (`api_paths`, longest first)."""
    await receive()  # websocket.connect
    path = scope["path"]
    error = unsupported(path)
    prefix = next((prefix for prefix in api_paths if path.startswith(prefix)), None)
    if prefix is not None:
        record = CallRecord(endpoint_name(path[len(prefix):], "GET"))
        asked = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("model")  # the Realtime API's
        record.model = asked[0][:MODEL_CAP] if asked else None
        answer = api.fail(record, error)  # its row, and the answer with the call's X-Study-* headers
    else:
        answer = Response(error.json(), error.status_code, media_type="application/json")
    if DENIAL_EXTENSION not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008, "reason": "WebSockets are not proxied"})
        return
    await send({"type": "websocket.http.response.start", "status": answer.status_code, "headers": answer.raw_headers})
    await send({"type": "websocket.http.response.body", "body": answer.body})
