"""Just enough `multipart/form-data` for forwarding: find the parts, and replace one field's value.

The proxy reads a form only to route it (its `model` field) and to describe it in the log;
the bytes that go upstream are the client's own, with at most the `model` value spliced in,
so a file part is never decoded or re-encoded.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import Message
from email.utils import collapse_rfc2231_value

from .errors import ProxyError


@dataclass(frozen=True, slots=True)
class Part:
    """One part of a form: where its content lies in the body, and what its headers say."""

    name: str
    filename: str | None
    content_type: str | None
    start: int
    end: int


def boundary(content_type: str) -> bytes:
    """The boundary parameter of a `multipart/form-data` content type."""
    message = Message()
    message["content-type"] = content_type
    value = message.get_param("boundary")
    if not isinstance(value, str) or not value or len(value) > 200:
        raise _malformed("its content type names no boundary")
    return value.encode("latin-1")


def parse(body: bytes, content_type: str) -> list[Part]:
    """The parts of a form body, in order; a body that is not one is the client's error."""
    delimiter = b"--" + boundary(content_type)
    position = body.find(delimiter)
    if position < 0 or (position > 0 and body[position - 2 : position] != b"\r\n"):
        raise _malformed("it does not start with its boundary")
    parts = []
    while True:
        position += len(delimiter)
        if body.startswith(b"--", position):
            return parts
        line_end = body.find(b"\r\n", position)
        head_end = body.find(b"\r\n\r\n", line_end) if line_end >= 0 else -1
        if head_end < 0:
            raise _malformed("a part has no end to its headers")
        start = head_end + 4
        end = body.find(b"\r\n" + delimiter, start)
        if end < 0:
            raise _malformed("a part is not closed by the boundary")
        parts.append(_part(body[line_end + 2 : head_end], start, end))
        position = end + 2


def replace(body: bytes, part: Part, value: bytes) -> bytes:
    """The body with one part's content replaced; every other byte as it was."""
    return body[: part.start] + value + body[part.end :]


def _part(head: bytes, start: int, end: int) -> Part:
    message = Message()
    for line in head.decode("utf-8", "replace").split("\r\n"):
        name, colon, value = line.partition(":")
        if colon:
            message[name.strip()] = value.strip()
    name = _disposition(message, "name")
    return Part(name or "", _disposition(message, "filename"), message.get("content-type"), start, end)


def _disposition(message: Message, param: str) -> str | None:
    value = message.get_param(param, header="content-disposition")
    if value is None or isinstance(value, str):
        return value
    return collapse_rfc2231_value(value)  # `filename*=UTF-8''…`


def _malformed(why: str) -> ProxyError:
    return ProxyError(400, f"The multipart/form-data body cannot be read: {why}.", code="invalid_body")
