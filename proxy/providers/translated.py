"""A provider without a Responses API (`responses = false`): its `responses` calls go to chat/completions.

The request is translated on the way up (`proxy.responses.translate`) and the answer on
the way back (`proxy.responses.translate_answer`), whole or streamed, so everything past
the provider sees Responses answers. Other endpoints pass through untouched.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..endpoints import RESPONSES_ENDPOINTS
from ..errors import ProxyError, error_body
from ..responses.translate import to_chat
from ..responses.translate_answer import StreamTranslator, to_response
from ..upstream import UpstreamClient, UpstreamRequest, UpstreamResponse, UpstreamUnreachable
from .base import Provider


@dataclass(frozen=True, slots=True)
class TranslatedRequest(UpstreamRequest):
    """A chat/completions request standing for a Responses request, which the answer is translated for."""

    original: dict[str, Any] = field(default_factory=dict)
    model: str = ""  # the upstream model, should the answer not name one


class TranslatingProvider(Provider):
    """Wraps the adapter of a chat-only upstream; only `responses` calls are changed, the rest is the adapter's."""

    def __init__(self, inner: Provider) -> None:
        super().__init__(inner.config)
        self.inner = inner

    @property
    def lists_models(self) -> bool:  # type: ignore[override]
        return self.inner.lists_models

    def url(self, endpoint: str, upstream_model: str) -> str:
        return self.inner.url(endpoint, upstream_model)

    def forward_url(self, path: str) -> str:
        return self.inner.forward_url(path)

    def auth_headers(self) -> dict[str, str]:
        return self.inner.auth_headers()

    def accepts_stream_options(self) -> bool:
        return self.inner.accepts_stream_options()

    def build(
        self, endpoint: str, upstream_model: str, payload: dict[str, Any], raw: bytes | None = None
    ) -> UpstreamRequest:
        """Raises ProxyError (400) for a Responses request that Chat Completions cannot express."""
        if endpoint in RESPONSES_ENDPOINTS and endpoint != "responses":
            raise ProxyError(
                400,
                f"The provider `{self.name}` has no Responses API (responses = false): its chat/completions "
                f"cannot serve {endpoint}. Send it to a provider that has one.",
                code="unsupported_endpoint",
            )
        if endpoint != "responses":
            return self.inner.build(endpoint, upstream_model, payload, raw)
        chat = to_chat(payload, upstream_model, usage_in_stream=self.inner.accepts_stream_options())
        request = self.inner.build("chat/completions", upstream_model, chat)
        return TranslatedRequest(request.method, request.url, request.headers, request.body, payload, upstream_model)

    async def send(self, client: UpstreamClient, request: UpstreamRequest) -> UpstreamResponse:
        response = await self.inner.send(client, request)
        if isinstance(request, TranslatedRequest):
            return TranslatedResponse(response, request.original, request.model)
        return response


class TranslatedResponse:
    """An upstream chat answer, read or streamed as a Responses answer; errors pass through as they are."""

    def __init__(self, response: UpstreamResponse, request: dict[str, Any], model: str) -> None:
        self._response = response
        self._request = request
        self._model = model
        self.status_code = response.status_code
        self.headers = {k: v for k, v in response.headers.items() if k != "content-length"}

    async def read(self) -> bytes:
        """The `response` object; an upstream error body (already in OpenAI's shape) unchanged."""
        body = await self._response.read()
        if self.status_code != 200:
            return body
        try:
            chat = orjson.loads(body)
        except orjson.JSONDecodeError:
            chat = None
        if not isinstance(chat, dict) or not isinstance(chat.get("choices"), list):
            self.status_code = 502
            return orjson.dumps(error_body("The upstream answered 200 without a chat completion.",
                                           "upstream_error", code="bad_upstream_answer"))
        return orjson.dumps(to_response(chat, self._request, self._model))

    async def iter_bytes(self, bounded: bool = True) -> AsyncIterator[bytes]:
        """The Responses events of each upstream chunk as soon as it is in.

        A chunk that completed no event yields b"", so that a reader's idle timer still sees
        upstream alive (keep-alive comments, the role chunk). A stream that breaks off ends
        with an `error` event instead of an exception.
        """
        translator = StreamTranslator(self._request, self._model)
        chunks = self._response.iter_bytes(bounded)
        try:
            async for chunk in chunks:
                yield b"".join(translator.feed(chunk))
                if translator.ended:
                    return
        except UpstreamUnreachable as exc:
            yield b"".join(translator.fail(f"upstream stream broke: {exc}", "upstream_stream_error"))
            return
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]
        yield b"".join(translator.close())

    async def close(self) -> None:
        await self._response.close()
