"""What a client asks of the proxy through its request headers: who it is and the `X-Study-*` options.

Every handler reads the same headers the same way: the chat, completion and embedding
calls, the Responses API and its follow-ups by id.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request

from .errors import ProxyError
from .json_depth import check_depth
from .record import CallRecord, redact_headers

MAX_RETRIES_PER_REQUEST = 10
#: ASCII digits only (str.isdigit() accepts "²" and other digits that int() refuses), and few
#: of them (int() refuses strings of more than 4,300 digits).
WHOLE_NUMBER = re.compile(r"[0-9]{1,6}")
CACHE_MODES = ("on", "off", "refresh")


@dataclass(frozen=True, slots=True)
class RequestOptions:
    """What the client asked of the proxy itself, through `X-Study-*` headers."""

    max_attempts: int
    cache: str  # "on", "off" or "refresh"; "" when the header is absent
    dedup: bool


def plain_headers(request: Request) -> dict[str, str]:
    """The request's headers as a dict, read once: Starlette's `Headers` scans its list and
    raises KeyError inside for every absent name, and a call asks for a dozen, most absent."""
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in request.scope["headers"]}


def read_study_headers(headers: Mapping[str, str], record: CallRecord) -> None:
    """Session, tags, user, log level and the redacted headers, onto the record."""
    record.session_id = headers.get("x-study-session") or None
    tags = headers.get("x-study-tags")
    if tags:
        record.tags = [tag.strip() for tag in tags.split(",") if tag.strip()] or None
    record.user = headers.get("x-study-user") or None
    record.log_full = headers.get("x-study-log", "full").strip().lower() != "meta"
    record.request_headers = redact_headers(headers)


def parse_options(headers: Mapping[str, str], default_attempts: int) -> RequestOptions:
    max_attempts = default_attempts
    retries = headers.get("x-study-retries")
    if retries is not None:
        if not WHOLE_NUMBER.fullmatch(retries.strip()):
            raise ProxyError(
                400, "X-Study-Retries must be a whole number (retries after the first attempt).",
                param="X-Study-Retries", code="invalid_header",
            )
        max_attempts = min(int(retries), MAX_RETRIES_PER_REQUEST) + 1
    cache = headers.get("x-study-cache", "").strip().lower()
    if cache and cache not in CACHE_MODES:
        raise ProxyError(400, "X-Study-Cache must be on, off or refresh.", param="X-Study-Cache", code="invalid_header")
    dedup = headers.get("x-study-dedup", "on").strip().lower() != "off"
    return RequestOptions(max_attempts, cache, dedup)


def study_metadata(headers: Mapping[str, str], max_depth: int) -> dict[str, Any] | None:
    """`X-Study-Metadata`: a JSON object for the row's `metadata`, never sent upstream."""
    value = headers.get("x-study-metadata")
    if value is None:
        return None
    check_depth(value.encode("latin-1"), max_depth, "X-Study-Metadata", "X-Study-Metadata", "invalid_header")
    try:
        metadata = orjson.loads(value)
    except orjson.JSONDecodeError:
        metadata = None
    if not isinstance(metadata, dict):
        raise ProxyError(400, "X-Study-Metadata must be a JSON object.", param="X-Study-Metadata", code="invalid_header")
    return metadata


def authenticate(client_keys: Mapping[str, str], headers: Mapping[str, str]) -> str | None:
    """The client alias of a valid proxy key; None when the operator set no proxy keys."""
    if not client_keys:
        return None
    alias = key_alias(client_keys, client_token(headers))
    if alias is None:
        raise ProxyError(401, "Missing or invalid proxy API key.", code="invalid_api_key")
    return alias


def key_alias(client_keys: Mapping[str, str], token: str) -> str | None:
    """The alias of the proxy key `token`, compared in constant time; None for no such key."""
    found = None
    for key, alias in client_keys.items():
        if hmac.compare_digest(key.encode(), token.encode()):
            found = alias
    return found


def identity(headers: Mapping[str, str], client: str | None) -> str:
    """Who is asking, for cache and de-duplication keys: the client alias, else a hash of its key."""
    if client is not None:
        return f"client:{client}"
    token = client_token(headers)
    return hashlib.sha256(token.encode()).hexdigest() if token else ""


def client_token(headers: Mapping[str, str]) -> str:
    """The key a request carries: `Authorization: Bearer <key>`, the password of
    `Authorization: Basic …` (what a browser sends for `/ui/`; any user name), or `api-key`."""
    authorization = headers.get("authorization", "")
    if authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    if authorization[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return ""
        return decoded.partition(":")[2]
    return headers.get("api-key", "")
