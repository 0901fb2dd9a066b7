"""OpenAI-shaped errors: every answer the proxy makes up itself looks like one of OpenAI's."""

from __future__ import annotations

from typing import Any

import orjson


class ProxyError(Exception):
    """An error the proxy answers itself, carried up to the handler that records and returns it."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.headers = headers or {}
        self.status_code = status_code
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        """The JSON object OpenAI's SDKs parse into an APIError."""
        return error_body(self.message, self.type, self.param, self.code)

    def json(self) -> bytes:
        return orjson.dumps(self.body())


def error_body(
    message: str, type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}
