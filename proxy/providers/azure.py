"""Azure OpenAI: deployments in the URL path, `api-version` in the query, the key in `api-key`.

The Responses API lives on Azure's v1 surface instead, `{endpoint}/openai/v1/responses`: the
deployment is the body's `model` and no `api-version` is sent (Azure's v1 API has none).
"""

from __future__ import annotations

from urllib.parse import quote

from ..endpoints import RESPONSES_ENDPOINTS
from .base import Provider

#: The first api-version that accepts `stream_options` (usage in streamed answers).
STREAM_OPTIONS_SINCE = "2024-09-01"


class AzureProvider(Provider):
    #: Azure's catalogue names base models, not the deployments that `azure/<deployment>` routes
    #: to, so `GET /v1/models` lists the configured deployment instead of asking Azure.
    lists_models = False

    def url(self, endpoint: str, upstream_model: str) -> str:
        if endpoint in RESPONSES_ENDPOINTS:
            return self.forward_url(endpoint)  # no deployment in the path (it is the body's model), no api-version
        deployment = quote(upstream_model, safe="")
        return (
            f"{self.config.base_url}/openai/deployments/{deployment}/{endpoint}"
            f"?api-version={quote(self.config.api_version or '', safe='')}"
        )

    def forward_url(self, path: str) -> str:
        """Azure's v1 surface, which takes OpenAI's paths with the deployment as `model`."""
        return f"{self.config.base_url}/openai/v1/{path}"

    def auth_headers(self) -> dict[str, str]:
        return {"api-key": self.config.api_key} if self.config.api_key else {}

    def accepts_stream_options(self) -> bool:
        return (self.config.api_version or "")[:10] >= STREAM_OPTIONS_SINCE
