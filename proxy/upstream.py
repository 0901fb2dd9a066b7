"""The one HTTP client the process uses to reach upstreams, behind a small interface.

Handlers and providers only see `UpstreamClient.send()` and `UpstreamResponse`, so the
library underneath (httpx today) can be swapped for a faster one without touching them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol

import httpx


class UpstreamUnreachable(Exception):
    """The upstream could not be reached or did not answer in time; `kind` says which."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind  # "connect" | "timeout" | "protocol"


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes = b""


class UpstreamResponse(Protocol):
    status_code: int
    headers: Mapping[str, str]

    async def read(self) -> bytes: ...

    def iter_bytes(self) -> AsyncIterator[bytes]: ...

    async def close(self) -> None: ...


class _HttpxResponse:
    __slots__ = ("_response", "status_code", "headers")

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status_code = response.status_code
        self.headers = response.headers

    async def read(self) -> bytes:
        try:
            return await self._response.aread()
        except httpx.HTTPError as exc:
            raise _unreachable(exc) from exc
        finally:
            await self._response.aclose()

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_bytes():
                yield chunk
        except httpx.HTTPError as exc:
            raise _unreachable(exc) from exc

    async def close(self) -> None:
        await self._response.aclose()


class UpstreamClient:
    """A keep-alive connection pool shared by every request of the process."""

    def __init__(self, connect_timeout: float = 10.0, first_byte_timeout: float = 600.0) -> None:
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(first_byte_timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200),
            follow_redirects=False,
            trust_env=False,
        )

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        """Send and return once the status line and headers arrived; the body is read later."""
        built = self._client.build_request(request.method, request.url, headers=request.headers, content=request.body)
        try:
            response = await self._client.send(built, stream=True)
        except httpx.HTTPError as exc:
            raise _unreachable(exc) from exc
        return _HttpxResponse(response)

    async def aclose(self) -> None:
        await self._client.aclose()


def _unreachable(exc: httpx.HTTPError) -> UpstreamUnreachable:
    if isinstance(exc, httpx.TimeoutException):
        kind = "timeout"
    elif isinstance(exc, httpx.ConnectError):
        kind = "connect"
    else:
        kind = "protocol"
    return UpstreamUnreachable(kind, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
