"""Cross-origin access for web pages, granted only to the origins the operator names.

Without `CORS_ALLOW_ORIGINS` (or `[server] cors_allow_origins`) the app has no CORS layer at
all: no answer carries an `Access-Control-*` header, so a browser lets no other site read
the proxy's answers. With origins, Starlette's CORSMiddleware answers their preflights and
names the exact origin (with `Vary: Origin`) on answers to them; `*` grants every origin.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

#: The methods of OpenAI's API.
ALLOW_METHODS = ("GET", "POST", "DELETE")

#: Request headers a page may send: the keys (`api-key` is Azure's), the proxy's `X-Study-*`
#: options, and what OpenAI's JavaScript SDK (openai-node) adds in a browser. Content-Type
#: and Accept need no entry: CORSMiddleware always allows them.
ALLOW_HEADERS = (
    "authorization",
    "api-key",
    "x-study-tags",
    "x-study-session",
    "x-study-user",
    "x-study-cache",
    "x-study-retries",
    "x-study-log",
    "x-study-dedup",
    "x-study-metadata",
    "x-study-preprocess",
    "openai-beta",
    "openai-organization",
    "openai-project",
    "user-agent",
    "x-stainless-arch",
    "x-stainless-custom-poll-interval",
    "x-stainless-helper-method",
    "x-stainless-lang",
    "x-stainless-os",
    "x-stainless-package-version",
    "x-stainless-poll-helper",
    "x-stainless-retry-count",
    "x-stainless-runtime",
    "x-stainless-runtime-version",
    "x-stainless-timeout",
)

#: Response headers a page's script may read: the proxy's own, and the upstream's that the
#: SDK acts on (`x-should-retry`, `retry-after*`: without them it would retry what the proxy
#: already retried).
EXPOSE_HEADERS = (
    "x-study-request-id",
    "x-study-provider",
    "x-study-attempts",
    "x-study-cache",
    "x-request-id",
    "x-should-retry",
    "retry-after",
    "retry-after-ms",
    "openai-processing-ms",
    "x-ratelimit-limit-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
)

#: How long a browser may reuse a preflight's answer, in seconds.
MAX_AGE = 600


def with_cors(app: ASGIApp, origins: Sequence[str]) -> ASGIApp:
    """`app` behind the CORS policy for `origins` (no credentials mode: keys travel in headers)."""
    return CORSMiddleware(
        app,
        allow_origins=origins,
        allow_methods=ALLOW_METHODS,
        allow_headers=ALLOW_HEADERS,
        expose_headers=EXPOSE_HEADERS,
        max_age=MAX_AGE,
    )
