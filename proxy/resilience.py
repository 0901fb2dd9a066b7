"""Retry with backoff and Retry-After, then fallback to the next route: one answer per request.

Retries happen only before the client has seen a byte: for a stream, until upstream's
status line; after that the stream is relayed as it comes, errors included.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import anyio
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, retry_if_result, stop_after_attempt

from .config_sections import RetryPolicy
from .errors import ProxyError
from .providers import Provider
from .record import Attempt, CallRecord
from .routing import Route
from .timeouts import timeout
from .upstream import UpstreamClient, UpstreamRequest, UpstreamResponse, UpstreamUnreachable

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})

#: Makes the upstream request for one route; by default the provider's `build` of the JSON payload.
RequestBuilder = Callable[[Provider, Route], UpstreamRequest]


@dataclass(slots=True)
class Outcome:
    """One attempt's answer: the response, and its body unless it is a stream being relayed."""

    response: UpstreamResponse
    attempt: Attempt
    body: bytes | None

    @property
    def retryable(self) -> bool:
        return self.response.status_code in RETRYABLE_STATUS

    async def read_unless_events(self) -> None:
        """Read the answer of a server that answered a stream request whole, to pass it on as such."""
        response = self.response
        if self.body is None and not response.headers.get("content-type", "").startswith("text/event-stream"):
            try:
                self.body = await response.read()
            except UpstreamUnreachable as exc:
                self.attempt.finish(error=str(exc))
                raise unreachable_error(exc, self.attempt.provider) from None
            self.attempt.finish(response.status_code)


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Upstream's hint: `retry-after-ms`, else `Retry-After` in seconds or as an HTTP date."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


#: Whether a 200 answer is handed over with its body unread, to be relayed as it comes: always
#: (a stream), never (read whole within the attempt, so that a failed read is retried), or as a
#: look at the answer's head decides (a forwarded call: `proxy.body_relay.relayed_unread`).
Unread = bool | Callable[[UpstreamResponse], bool]


class UpstreamCaller:
    """Sends one request along its routes, retrying each as the policy allows."""

    def __init__(self, providers: Mapping[str, Provider], client: UpstreamClient, policy: RetryPolicy) -> None:
        self.providers = providers
        self.client = client
        self.policy = policy

    async def call(
        self,
        record: CallRecord,
        routes: Sequence[Route],
        endpoint: str,
        payload: dict[str, Any],
        *,
        max_attempts: int,
        stream: Unread,
        build: RequestBuilder | None = None,
        raw: bytes | None = None,
    ) -> Outcome:
        """The first final answer (success or an error not worth retrying), else the last failure.
        `stream`: whether a 200 answer is handed over unread (see `Unread`); `raw`: the bytes
        `payload` was parsed from, when it is them unchanged (`Provider.build`).

        Raises ProxyError (502/504) when no route answered at all; after more than one attempt
        it carries `x-should-retry: false`, so that the client's SDK does not retry on top. A
        route whose provider cannot carry the request (a translated provider refusing a field)
        is passed over for the next; when none could, the first refusal is the answer.
        """
        make = build or (lambda provider, route: provider.build(endpoint, route.upstream_model, payload, raw))
        deadline = time.monotonic() + self.policy.deadline
        last: Outcome | UpstreamUnreachable | None = None
        refused: ProxyError | None = None
        for route in routes:
            if time.monotonic() >= deadline:
                break
            provider = self.providers[route.provider]
            try:
                request = make(provider, route)
            except ProxyError as exc:
                refused = refused or exc
                continue
            record.provider, record.upstream_model = route.provider, route.upstream_model
            try:
                outcome = await self._with_retries(record, provider, request, max_attempts, stream, deadline)
            except UpstreamUnreachable as exc:
                last = exc
                continue
            if not outcome.retryable:
                return outcome
            last = outcome
        if isinstance(last, Outcome):
            return last
        if last is None and refused is not None:
            raise refused
        error = unreachable_error(last, record.provider or "upstream")
        if len(record.attempts) > 1:
            error.headers["x-should-retry"] = "false"
        raise error

    async def _with_retries(
        self,
        record: CallRecord,
        provider: Provider,
        request: UpstreamRequest,
        max_attempts: int,
        stream: Unread,
        deadline: float,
    ) -> Outcome:
        path = urlsplit(request.url).path

        async def attempt_once() -> Outcome:
            attempt = record.begin_attempt(provider.name, path)
            try:
                with timeout(max(0.0, deadline - time.monotonic())):
                    response = await provider.send(self.client, request)
                    if response.status_code == 200 and (stream if isinstance(stream, bool) else stream(response)):
                        return Outcome(response, attempt, None)  # relayed later; the attempt ends with it
                    body = await response.read()
            except UpstreamUnreachable as exc:
                attempt.finish(error=str(exc))
                raise
            except TimeoutError:
                attempt.finish(error="request deadline reached")
                raise UpstreamUnreachable("timeout", "the request's deadline passed") from None
            attempt.finish(response.status_code)
            return Outcome(response, attempt, body)

        # Most calls succeed at once: tenacity (~28 µs to set up) takes over only after a failure.
        try:
            first: Outcome | UpstreamUnreachable = await attempt_once()
        except UpstreamUnreachable as exc:
            first = exc
        if isinstance(first, Outcome) and not first.retryable:
            return first
        if isinstance(first, UpstreamUnreachable) and not first.retryable:
            raise first
        delay = self._delay(first, 1)
        if max_attempts <= 1 or time.monotonic() + delay >= deadline:
            return _result(first)
        await anyio.sleep(delay)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(max_attempts - 1)
            | (lambda state: time.monotonic() + state.upcoming_sleep >= deadline),
            wait=lambda state: self._delay(_settled(state), state.attempt_number + 1),
            retry=retry_if_exception(lambda exc: isinstance(exc, UpstreamUnreachable) and exc.retryable)
            | retry_if_result(lambda outcome: outcome.retryable),
            retry_error_callback=lambda state: state.outcome.result(),  # the last answer, or its exception
            sleep=anyio.sleep,
            reraise=True,
        )
        return await retrying(attempt_once)

    def _delay(self, failed: Outcome | UpstreamUnreachable, attempt_number: int) -> float:
        """Upstream's Retry-After when it gave one (capped), else exponential backoff with full jitter."""
        if isinstance(failed, Outcome):
            hinted = retry_after_seconds(failed.response.headers)
            if hinted is not None:
                return min(hinted, self.policy.retry_after_cap)
        ceiling = min(self.policy.backoff_max, self.policy.backoff_base * 2 ** (attempt_number - 1))
        return random.uniform(0, ceiling)


def _settled(state: RetryCallState) -> Outcome | UpstreamUnreachable:
    """The answer or the error of the attempt tenacity just made."""
    outcome = state.outcome
    assert outcome is not None
    return outcome.exception() if outcome.failed else outcome.result()  # type: ignore[return-value]


def _result(first: Outcome | UpstreamUnreachable) -> Outcome:
    if isinstance(first, UpstreamUnreachable):
        raise first
    return first


def unreachable_error(exc: UpstreamUnreachable | None, provider: str) -> ProxyError:
    if exc is not None and exc.kind == "timeout":
        return ProxyError(504, f"Upstream `{provider}` did not answer in time.", type="upstream_error", code="upstream_timeout")
    if exc is not None and exc.kind == "too_large":
        return ProxyError(502, f"Upstream `{provider}` sent an answer too large to take: {exc}", type="upstream_error",
                          code="upstream_answer_too_large")
    detail = f": {exc}" if exc is not None else ""
    return ProxyError(502, f"Upstream `{provider}` could not be reached{detail}", type="upstream_error", code="upstream_unreachable")
