"""Client input checked before anything goes upstream: each fault becomes a 4xx in OpenAI's shape."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request

from .endpoints import RESPONSES_ENDPOINTS
from .errors import ProxyError
from .inflate import inflaters, too_large
from .json_depth import check_depth
from .limits import BODY_MALFORMED, BODY_TIMED_OUT
from .sse_response import CLIENT_DISCONNECTED

#: nginx's status for a request whose client went away before it was answered: the client
#: never sees it, the log row does.
CLIENT_CLOSED = 499

JSON_TYPES = ("application/json", "text/json")

#: The field each endpoint cannot do without, besides `model`.
REQUIRED_INPUT = {"chat/completions": "messages", "completions": "prompt", "embeddings": "input",
                  **dict.fromkeys(RESPONSES_ENDPOINTS, "input")}
#: Optional Responses API fields the proxy itself reads, and the types they must have.
RESPONSES_FIELDS: dict[str, type | tuple[type, ...]] = {
    "instructions": str, "previous_response_id": str, "tools": list, "metadata": dict, "text": dict,
}


async def read_body(request: Request, headers: Mapping[str, str], limit: int) -> bytes:
    """The body, inflated when it came compressed (`Content-Encoding`), refused with 413 as soon
    as it is known to exceed `limit` bytes, as sent or inflated."""
    decoders = inflaters(headers.get("content-encoding"), limit)
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            for decoder in decoders:
                chunk = decoder.feed(chunk)
            chunks.append(chunk)
    except ClientDisconnect:
        raise ProxyError(CLIENT_CLOSED, CLIENT_DISCONNECTED, code=CLIENT_DISCONNECTED) from None
    if request.scope.get(BODY_MALFORMED):
        raise ProxyError(400, "The request body is not valid HTTP/1.1 framing (a malformed chunk or chunk size).",
                         code="invalid_http_request")
    if (waited := request.scope.get(BODY_TIMED_OUT)) is not None:
        raise ProxyError(
            408, f"The request body stopped arriving: nothing came for {waited:g} s.", code="request_timeout"
        )
    for decoder in decoders:
        decoder.finish()
    return b"".join(chunks)


def check_content_type(headers: Mapping[str, str]) -> None:
    """A JSON body must say so. A missing type is refused too: with none (or a form or text
    type) a web page on any site can send the request through its visitor's browser without
    asking first (a CORS "simple" request), and it would reach an upstream on the operator's keys."""
    content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type not in JSON_TYPES:
        refused = f"Unsupported content type {content_type!r}" if content_type else "The request has no Content-Type"
        raise ProxyError(
            415,
            f"{refused}: send the body as application/json.",
            code="unsupported_content_type",
        )


def decode_text(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProxyError(
            400, f"The request body is not valid UTF-8 (byte {exc.start}).", code="invalid_encoding"
        ) from None


def parse_payload(body: bytes, max_depth: int) -> dict[str, Any]:
    """The JSON object of the body; anything else (nesting past `max_depth` included) is the client's error."""
    if not body.strip():
        raise ProxyError(400, "The request body is empty: send a JSON object.", code="invalid_json")
    check_depth(body, max_depth)
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ProxyError(400, f"The request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(payload, dict):
        raise ProxyError(
            400, f"The request body must be a JSON object, not {type(payload).__name__}.", code="invalid_body"
        )
    return payload


def validate(endpoint: str, payload: dict[str, Any], model: Any) -> str:
    """Check the fields the proxy itself relies on; return the model. Upstream checks the rest."""
    model = _required("model", model, str)
    if not model.strip():
        raise ProxyError(400, "`model` must not be empty.", param="model", code="invalid_value")
    field = REQUIRED_INPUT[endpoint]
    if endpoint == "chat/completions":
        messages = _required(field, payload.get(field), list)
        if not messages:
            raise ProxyError(400, "`messages` must hold at least one message.", param="messages", code="invalid_value")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise ProxyError(
                    400, f"`messages[{i}]` must be an object with a string `role`.", param=f"messages[{i}]", code="invalid_type"
                )
    elif endpoint in RESPONSES_ENDPOINTS:
        _check_responses(payload)
    else:
        _required(field, payload.get(field), (str, list))
    if "stream" in payload and not isinstance(payload["stream"], bool | None):
        raise ProxyError(400, "`stream` must be a boolean.", param="stream", code="invalid_type")
    if payload.get("stream") and endpoint in RESPONSES_ENDPOINTS and endpoint != "responses":
        raise ProxyError(400, f"{endpoint} answers whole: it has no `stream` parameter.", param="stream",
                         code="unknown_parameter")
    return model


def _check_responses(payload: dict[str, Any]) -> None:
    """`input` a string or a list of item objects (it may be left out only to continue a response)."""
    if payload.get("input") is None and payload.get("previous_response_id") is None and payload.get("prompt") is None:
        _required("input", None, (str, list))
    value = payload.get("input")
    if value is not None:
        _required("input", value, (str, list))
        for i, item in enumerate(value if isinstance(value, list) else ()):
            if not isinstance(item, dict):
                raise ProxyError(400, f"`input[{i}]` must be an object (an input item).", param=f"input[{i}]", code="invalid_type")
    for name, kind in RESPONSES_FIELDS.items():
        if payload.get(name) is not None:
            _required(name, payload[name], kind)


def _required(name: str, value: Any, kind: type | tuple[type, ...]) -> Any:
    if value is None:
        raise ProxyError(400, f"Missing required parameter: `{name}`.", param=name, code="missing_required_parameter")
    if not isinstance(value, kind):
        expected = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise ProxyError(
            400, f"`{name}` must be of type {expected}, not {type(value).__name__}.", param=name, code="invalid_type"
        )
    return value
