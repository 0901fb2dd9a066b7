"""The hook the `/v1` handlers call: the request's steps, then its body preprocessed and noted on the record."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from ..errors import ProxyError
from ..record import CallRecord
from .payload import preprocess_payload, summary
from .steps import PreprocessError, Steps, parse_steps

HEADER = "X-Study-Preprocess"


class Preprocessor:
    """The configured templates and the aliases' steps, applied to each request that asks."""

    def __init__(self, templates: Mapping[str, str], alias_steps: Mapping[str, Steps]) -> None:
        self.templates = templates
        self.alias_steps = alias_steps

    def requested(self, headers: Mapping[str, str]) -> Steps | None:
        """The steps of the request's header; None without one. A 400 names the header when it is wrong."""
        value = headers.get(HEADER.lower())
        if value is None:
            return None
        try:
            return parse_steps(value.split(","), self.templates)
        except PreprocessError as exc:
            raise ProxyError(400, f"{HEADER}: {exc}.", param=HEADER, code="invalid_header") from None

    def apply(
        self, record: CallRecord, endpoint: str, payload: dict[str, Any], model: str | None, asked: Steps | None
    ) -> dict[str, Any]:
        """The body to send on: preprocessed, and put on the record as what the log keeps, when
        the header or the model's alias asks for any step; else the client's body untouched."""
        steps = self.alias_steps.get(model) if model is not None else None
        if asked is not None:
            steps = asked.over(steps) if steps is not None else asked
        if not steps:
            return payload
        payload, counts = preprocess_payload(endpoint, payload, steps, self.templates)
        record.payload = payload
        record.request_text = orjson.dumps(payload).decode()
        record.study_metadata = {**(record.study_metadata or {}), "preprocess": summary(steps, counts)}
        return payload
