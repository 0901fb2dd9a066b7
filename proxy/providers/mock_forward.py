"""What the built-in mock answers to forwarded `/v1/*` calls: its model list and moderations.

Anything else gets a 404 `unknown_url` that says the mock does not serve it, so an offline
user learns that the call reached the proxy and would go to a real provider once one has a key.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from ..errors import ProxyError

#: The categories of OpenAI's moderation answers; the mock flags none of them.
MODERATION_CATEGORIES = (
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
    "self-harm", "self-harm/instructions", "self-harm/intent", "sexual", "sexual/minors",
    "violence", "violence/graphic",
)


def forwarded_answer(method: str, path: str, body: bytes) -> tuple[int, bytes]:
    """(status, JSON body) of the mock's answer to `method /v1/{path}`."""
    if method == "GET" and path == "models":
        echo = {"id": "echo", "object": "model", "created": 0, "owned_by": "mock"}
        return 200, orjson.dumps({"object": "list", "data": [echo]})
    if method == "POST" and path == "moderations":
        return 200, orjson.dumps(_moderation(_json_object(body)))
    error = ProxyError(
        404,
        f"The mock provider does not serve {method} /v1/{path}: configure a provider with a key "
        "(or name one in the `model` field) to have it forwarded.",
        code="unknown_url",
    )
    return 404, error.json()


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        value = {}
    return value if isinstance(value, dict) else {}


def _moderation(payload: dict[str, Any]) -> dict[str, Any]:
    inputs = payload.get("input", "")
    count = len(inputs) if isinstance(inputs, list) else 1
    result = {
        "flagged": False,
        "categories": dict.fromkeys(MODERATION_CATEGORIES, False),
        "category_scores": dict.fromkeys(MODERATION_CATEGORIES, 0.0),
    }
    model = payload.get("model", "echo")
    return {"id": f"modr-mock-{time.monotonic_ns():x}", "model": model, "results": [result] * count}
