"""The body of a forwarded call: its `model`, the bytes sent for one route, and what the log keeps.

A forwarded body may be JSON, a multipart form (audio transcriptions, file uploads) or raw
bytes. The log keeps JSON and text up to `LOG_CAP` bytes, and of anything else only its
content type and size, so that an uploaded file or a generated sound never lands in the
database; of a form it keeps the fields and each file's name, type and size.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import orjson

from . import multipart
from .errors import ProxyError
from .limits import ClientLimits
from .validation import JSON_TYPES, decode_text, parse_payload

#: The most of a forwarded body (request or answer) that `request_json` / `response_json` keep.
LOG_CAP = 64 * 1024
#: A form field's value is kept up to this many characters in the log's description of the form.
FIELD_CAP = 1024


def media_type(content_type: str) -> str:
    """`multipart/form-data` of `multipart/form-data; boundary=…`, lower-cased."""
    return content_type.split(";", 1)[0].strip().lower()


def is_text(media: str) -> bool:
    """JSON and text are logged as they are (capped); every other type only as type and size."""
    return media in JSON_TYPES or media.endswith("+json") or media.startswith("text/")


def logged_body(data: bytes, content_type: str, column: str, size: int | None = None) -> tuple[str | None, str | None]:
    """(what the log column keeps of a forwarded body, a note for `study_notes` when it was cut).
    `size`: the body's whole length when `data` is only its beginning (a relayed answer)."""
    size = len(data) if size is None else size
    if not size:
        return None, None
    media = media_type(content_type)
    if is_text(media):
        return _capped(data, column, size)
    return orjson.dumps({"content_type": media or None, "bytes": size}).decode(), None


@dataclass
class ClientBody:
    """The client's body as it came. No content type means JSON (forward.py lets only an empty
    body come without one); `max_depth` bounds the nesting of a JSON body."""

    raw: bytes
    content_type: str
    max_depth: int = ClientLimits.max_json_depth

    @property
    def media_type(self) -> str:
        """The content type as sent, without parameters ("" for none)."""
        return media_type(self.content_type)

    @property
    def media(self) -> str:
        return self.media_type or "application/json"

    @property
    def is_json(self) -> bool:
        return self.media in JSON_TYPES

    @property
    def is_form(self) -> bool:
        return self.media == "multipart/form-data"

    @cached_property
    def payload(self) -> dict[str, Any] | None:
        """The JSON object of a non-empty JSON body; invalid JSON is the client's error."""
        if not self.raw or not self.is_json:
            return None
        decode_text(self.raw)
        return parse_payload(self.raw, self.max_depth)

    @cached_property
    def parts(self) -> list[multipart.Part] | None:
        """The parts of a form; a malformed form is the client's error."""
        return multipart.parse(self.raw, self.content_type) if self.is_form and self.raw else None

    def model(self) -> Any:
        """The `model` the client asked for: the JSON field or the form field; None without one."""
        if self.payload is not None:
            return self.payload.get("model")
        part = self._model_part()
        return self._text(part) if part is not None else None

    def for_model(self, upstream_model: str) -> bytes:
        """The bytes to send to a route: the client's, with `model` set to the upstream model."""
        if not upstream_model or self.model() in (None, upstream_model):
            return self.raw
        if self.payload is not None:
            return orjson.dumps({**self.payload, "model": upstream_model})
        part = self._model_part()
        assert part is not None
        return multipart.replace(self.raw, part, upstream_model.encode())

    def logged(self) -> tuple[str | None, str | None]:
        """What `request_json` keeps (JSON or text capped, a form described, other bytes as type
        and size), and a note when it was cut."""
        if not self.is_form or not self.raw:
            return logged_body(self.raw, self.media, "request_json")
        described = orjson.dumps(self._described_form())
        return _capped(described, "request_json", len(described))

    def _model_part(self) -> multipart.Part | None:
        return next((p for p in self.parts or () if p.name == "model" and p.filename is None), None)

    def _text(self, part: multipart.Part) -> str:
        return self.raw[part.start : part.end].decode("utf-8", "replace")

    def _described_form(self) -> dict[str, Any]:
        """The form without its files' bytes; a malformed one as its type and size only."""
        described: dict[str, Any] = {"content_type": self.media, "bytes": len(self.raw)}
        try:
            parts = self.parts or []
        except ProxyError:
            return described
        fields, files = {}, []
        for part in parts:
            if part.filename is None:
                fields[part.name] = self._text(part)[:FIELD_CAP]
            else:
                files.append({
                    "field": part.name,
                    "filename": part.filename,
                    "content_type": part.content_type,
                    "bytes": part.end - part.start,
                })
        return {**described, "fields": fields, "files": files}


def _capped(data: bytes, column: str, size: int) -> tuple[str, str | None]:
    if size <= LOG_CAP:
        return data.decode("utf-8", "replace"), None
    note = f"{column} was cut to its first {LOG_CAP} bytes, of {size}"
    return data[:LOG_CAP].decode("utf-8", "replace"), note
