"""Proxy keys in front of the operator's pages (`/ui/`, Datasette over the whole log).

With `[clients]` keys configured, `/v1` asks every call for one; the log itself must not be
readable without one either. Browsers prompt for HTTP Basic credentials when an answer says
`WWW-Authenticate: Basic`: any user name, the key as the password. Scripts may send
`Authorization: Bearer <key>` instead, as they do on `/v1`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import ProxyError
from .request_headers import key_alias

REALM = b'Basic realm="Study Query LLM", charset="UTF-8"'


def require_proxy_key(app: ASGIApp, client_keys: Mapping[str, str]) -> ASGIApp:
    """`app` answering only requests that carry one of `client_keys`; 401 (and a browser's
    password prompt) for the others."""
    body = ProxyError(
        401,
        "This page needs a proxy key: log in with any user name and the key as the password, "
        "or send Authorization: Bearer <key>.",
        code="invalid_api_key",
    ).json()
    refusal = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"www-authenticate", REALM),
    ]

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and key_alias(client_keys, operator_token(scope["headers"])) is None:
            await send({"type": "http.response.start", "status": 401, "headers": refusal})
            await send({"type": "http.response.body", "body": body})
            return
        await app(scope, receive, send)

    return guarded


def operator_token(headers: list[tuple[bytes, bytes]]) -> str:
    """The key in `Authorization: Basic …` (its password) or `Authorization: Bearer …`; "" without one."""
    value = next((v for n, v in headers if n == b"authorization"), b"").strip()
    scheme, _, credentials = value.partition(b" ")
    scheme = scheme.lower()
    if scheme == b"bearer":
        return credentials.strip().decode("latin-1")
    if scheme == b"basic":
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return ""
        return decoded.partition(":")[2]
    return ""
