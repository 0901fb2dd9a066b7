"""Proxy keys in front of the operator's pages: `/ui/` (Datasette over the whole log), `/metrics`.

With `[clients]` keys configured, `/v1` asks every call for one; the log itself must not be
readable without one either. Browsers prompt for HTTP Basic credentials when an answer says
`WWW-Authenticate: Basic`: any user name, the key as the password. Scripts may send
`Authorization: Bearer <key>` (or `api-key`) instead, as they do on `/v1`; `/metrics`
checks the same keys in its handler, Basic credentials included.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import ProxyError
from .request_headers import client_token, key_alias

REALM = b'Basic realm="Study Query LLM", charset="UTF-8"'


class ProxyKeyGate:
    """An ASGI app answering only requests that carry one of `client_keys`; 401 (and a
    browser's password prompt) for the others. A class, not a function, so that Starlette's
    `Route` and `Mount` take it as an ASGI app."""

    def __init__(self, app: ASGIApp, client_keys: Mapping[str, str]) -> None:
        self.app = app
        self.client_keys = client_keys
        self.body = ProxyError(
            401,
            "This page needs a proxy key: log in with any user name and the key as the password, "
            "or send Authorization: Bearer <key>.",
            code="invalid_api_key",
        ).json()
        self.refusal = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self.body)).encode()),
            (b"www-authenticate", REALM),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and key_alias(self.client_keys, client_token(_headers(scope))) is None:
            await send({"type": "http.response.start", "status": 401, "headers": self.refusal})
            await send({"type": "http.response.body", "body": self.body})
            return
        await self.app(scope, receive, send)


def require_proxy_key(app: ASGIApp, client_keys: Mapping[str, str]) -> ASGIApp:
    """`app` behind the proxy keys, or `app` itself when there are none."""
    return ProxyKeyGate(app, client_keys) if client_keys else app


def _headers(scope: Scope) -> dict[str, str]:
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
