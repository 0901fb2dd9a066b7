"""Answers as bytes, so that another process (or host) can hand them to its own clients.

The shared single-flight passes a leader's answer to followers elsewhere, and the shared
cache keeps answers for later: both store these bytes in Redis. A header (JSON) describes
the answer; the bodies follow it raw, so a large answer is not inflated by base64.

    b"SQA1" | header length (4 bytes, big-endian) | header JSON | blob 0 | blob 1 | …

A value that cannot be decoded (another version, a truncated write) decodes to None, which
the callers treat as "no shared answer".
"""

from __future__ import annotations

import struct
from typing import Any

import orjson

from ..answers import CapturedStream, WholeAnswer
from ..errors import ProxyError

MAGIC = b"SQA1"
_LENGTH = struct.Struct(">I")

Shared = WholeAnswer | CapturedStream | ProxyError


def encode(value: Shared) -> bytes:
    """The bytes of a whole answer, a finished stream or a proxy error."""
    blobs: list[bytes]
    if isinstance(value, WholeAnswer):
        header: dict[str, Any] = {
            "kind": "whole", "status": value.status_code, "headers": value.headers, "provider": value.provider,
            "upstream_model": value.upstream_model, "retried": value.retried, "logged": value.logged is not None,
        }
        blobs = [value.body] + ([value.logged] if value.logged is not None else [])
    elif isinstance(value, CapturedStream):
        header = {
            "kind": "stream", "headers": value.headers, "answer": value.answer, "text": value.text,
            "usage": value.usage, "provider": value.provider, "upstream_model": value.upstream_model,
        }
        blobs = [value.events]
    elif isinstance(value, ProxyError):
        header = {
            "kind": "error", "status": value.status_code, "message": value.message, "type": value.type,
            "param": value.param, "code": value.code, "headers": value.headers,
        }
        blobs = []
    else:
        raise TypeError(f"cannot share a {type(value).__name__}")
    header["sizes"] = [len(blob) for blob in blobs]
    head = orjson.dumps(header)
    return b"".join([MAGIC, _LENGTH.pack(len(head)), head, *blobs])


def decode(data: bytes) -> Shared | None:
    """The value `encode` made, or None for bytes it did not make."""
    try:
        if not data.startswith(MAGIC):
            return None
        (length,) = _LENGTH.unpack_from(data, len(MAGIC))
        start = len(MAGIC) + _LENGTH.size
        header = orjson.loads(data[start : start + length])
        blobs, offset = [], start + length
        for size in header["sizes"]:
            blobs.append(data[offset : offset + size])
            offset += size
        if offset != len(data):
            return None
        return _build(header, blobs)
    except (KeyError, IndexError, TypeError, ValueError, struct.error):
        return None


def _build(header: dict[str, Any], blobs: list[bytes]) -> Shared | None:
    kind = header["kind"]
    if kind == "whole":
        return WholeAnswer(
            header["status"], header["headers"], blobs[0], header["provider"], header["upstream_model"],
            retried=header["retried"], logged=blobs[1] if header["logged"] else None,
        )
    if kind == "stream":
        return CapturedStream(
            blobs[0], header["headers"], header["answer"], header["text"], header["usage"],
            header["provider"], header["upstream_model"],
        )
    if kind == "error":
        return ProxyError(
            header["status"], header["message"], type=header["type"], param=header["param"],
            code=header["code"], headers=header["headers"],
        )
    return None
