"""The OpenAI-compatible adapter (OpenAI, Hyperbolic, any configured server) that the others refine."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from ..config_sections import ProviderConfig
from ..upstream import UpstreamClient, UpstreamRequest, UpstreamResponse


class Provider:
    """An OpenAI-compatible upstream: `{base_url}/{endpoint}` with a Bearer key."""

    #: Whether `GET /v1/models` asks this upstream for its own list (`forward("GET", "models", …)`).
    lists_models = True

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self.name = config.name

    def url(self, endpoint: str, upstream_model: str) -> str:
        return f"{self.config.base_url}/{endpoint}"

    def auth_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.config.api_key}"} if self.config.api_key else {}

    @property
    def keeps_responses(self) -> bool:
        """Whether the upstream stores Responses API responses, so follow-ups by id go to it."""
        return self.config.responses

    def accepts_stream_options(self) -> bool:
        """Whether `stream_options.include_usage` may be sent to ask for a usage chunk."""
        return True

    def build(
        self, endpoint: str, upstream_model: str, payload: dict[str, Any], raw: bytes | None = None
    ) -> UpstreamRequest:
        """The upstream request: the client's body with the upstream model, and our key, never theirs.

        `raw`: the bytes `payload` was parsed from, when it is them unchanged. With the model
        unchanged too they are sent as they are: the upstream gets exactly what the client
        sent (an integer past 64 bits, which orjson reads as a float, included), and a long
        conversation is not serialized again.
        """
        headers = {"content-type": "application/json", "accept": "application/json", **self.auth_headers()}
        if payload.get("model") == upstream_model:
            body = raw if raw is not None else orjson.dumps(payload)
        else:
            body = orjson.dumps({**payload, "model": upstream_model})
        return UpstreamRequest("POST", self.url(endpoint, upstream_model), headers, body)

    def forward_url(self, path: str) -> str:
        """Where another `/v1/{path}` call goes: always under the configured base URL."""
        return f"{self.config.base_url}/{path}"

    def forward(self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes) -> UpstreamRequest:
        """A forwarded call (files, audio, moderations…): the client's method, query and body, our key."""
        url = self.forward_url(path) + (f"?{query}" if query else "")
        return UpstreamRequest(method, url, {**headers, **self.auth_headers()}, body)

    async def send(self, client: UpstreamClient, request: UpstreamRequest) -> UpstreamResponse:
        return await client.send(request)
