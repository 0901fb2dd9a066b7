"""`/playground/`: the page where a person asks several models the same question and compares them.

Plain HTML, CSS and JavaScript shipped in the package (`static/`), served as they are: no build
step, nothing fetched from elsewhere. The page talks to the proxy's own `/v1` API like any
client, so every call it makes is a row; the Content-Security-Policy keeps it to this origin.
"""

from __future__ import annotations

from pathlib import Path

from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC_DIR = Path(__file__).with_name("static")
#: Everything from this origin only; no inline script, no framing, no referrer to other sites.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


def playground_app() -> ASGIApp:
    """The static page, `index.html` at the root, with the security headers on every answer."""
    files = StaticFiles(directory=STATIC_DIR, html=True)
    extra = [(name.encode(), value.encode()) for name, value in SECURITY_HEADERS.items()]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await files(scope, receive, send_with_headers)

    return app
