"""Retry, Retry-After, deadline and fallback rules of UpstreamCaller, with scripted upstreams."""

import asyncio
import time
from email.utils import formatdate

import pytest

from proxy.config_sections import ProviderConfig, RetryPolicy
from proxy.errors import ProxyError
from proxy.providers.mock import MockResponse
from proxy.providers.base import Provider
from proxy.record import CallRecord
from proxy.resilience import UpstreamCaller, retry_after_seconds
from proxy.routing import Route
from proxy.upstream import UpstreamUnreachable


class Scripted(Provider):
    """Answers each call with the next item of its script: a status code, or an exception."""

    def __init__(self, name, script, headers=None):
        super().__init__(ProviderConfig(name=name, kind="openai", base_url=f"http://{name}.invalid/v1"))
        self.script = list(script)
        self.headers = headers or {}
        self.calls = []

    async def send(self, client, request):
        self.calls.append(time.monotonic())
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, Exception):
            raise step
        if step == "hang":
            await asyncio.sleep(3600)
        response = MockResponse(b'{"ok": true}' if step == 200 else b'{"error": {"message": "no"}}')
        response.status_code = step
        response.headers.update(self.headers)
        return response


FAST = RetryPolicy(max_attempts=3, backoff_base=0.01, backoff_max=0.02, retry_after_cap=5, deadline=10)


def call(providers, routes, policy=FAST, max_attempts=None, stream=False):
    caller = UpstreamCaller({p.name: p for p in providers}, client=None, policy=policy)
    record = CallRecord("chat/completions")

    async def go():
        return await caller.call(
            record, routes, "chat/completions", {"model": "m", "messages": []},
            max_attempts=max_attempts or policy.max_attempts, stream=stream,
        )

    try:
        return asyncio.run(go()), record
    except ProxyError as exc:
        return exc, record


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_retryable_statuses_are_retried_until_success(status):
    upstream = Scripted("a", [status, 200])
    outcome, record = call([upstream], [Route("a", "m")])
    assert outcome.response.status_code == 200
    assert [a.status_code for a in record.attempts] == [status, 200]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_other_client_errors_are_not_retried(status):
    upstream = Scripted("a", [status, 200])
    outcome, record = call([upstream], [Route("a", "m")])
    assert outcome.response.status_code == status and len(upstream.calls) == 1


def test_persistent_failure_stops_after_max_attempts_and_returns_the_last_answer():
    upstream = Scripted("a", [503])
    outcome, record = call([upstream], [Route("a", "m")], max_attempts=4)
    assert outcome.response.status_code == 503
    assert len(upstream.calls) == 4 and len(record.attempts) == 4
    assert outcome.body == b'{"error": {"message": "no"}}'


def test_connect_errors_are_retried_then_become_a_502():
    upstream = Scripted("a", [UpstreamUnreachable("connect", "refused")])
    error, record = call([upstream], [Route("a", "m")])
    assert isinstance(error, ProxyError) and error.status_code == 502
    assert len(upstream.calls) == 3
    assert all(a.error == "refused" for a in record.attempts)


def test_retry_after_ms_is_honoured():
    upstream = Scripted("a", [429, 200], headers={"retry-after-ms": "250"})
    call([upstream], [Route("a", "m")])
    assert upstream.calls[1] - upstream.calls[0] >= 0.25


def test_retry_after_is_capped():
    upstream = Scripted("a", [429, 200], headers={"retry-after": "3600"})
    policy = RetryPolicy(max_attempts=2, backoff_base=0.01, retry_after_cap=0.1, deadline=10)
    outcome, _ = call([upstream], [Route("a", "m")], policy=policy)
    assert outcome.response.status_code == 200
    assert upstream.calls[1] - upstream.calls[0] < 1


def test_retry_after_forms():
    assert retry_after_seconds({"retry-after-ms": "1500"}) == 1.5
    assert retry_after_seconds({"retry-after": "2"}) == 2.0
    date = formatdate(time.time() + 30, usegmt=True)
    assert 28 <= retry_after_seconds({"retry-after": date}) <= 31
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


def test_the_deadline_bounds_a_hanging_upstream():
    upstream = Scripted("a", ["hang"])
    policy = RetryPolicy(max_attempts=3, backoff_base=0.01, deadline=0.3)
    started = time.monotonic()
    error, record = call([upstream], [Route("a", "m")], policy=policy)
    assert isinstance(error, ProxyError) and error.status_code == 504
    assert time.monotonic() - started < 2
    assert record.attempts[0].error == "request deadline reached"


def test_a_wait_past_the_deadline_is_not_taken():
    upstream = Scripted("a", [429], headers={"retry-after": "5"})
    policy = RetryPolicy(max_attempts=3, backoff_base=0.01, retry_after_cap=60, deadline=1)
    started = time.monotonic()
    outcome, _ = call([upstream], [Route("a", "m")], policy=policy)
    assert outcome.response.status_code == 429 and len(upstream.calls) == 1
    assert time.monotonic() - started < 1


def test_fallback_to_the_next_route_after_retryable_failures():
    first, second = Scripted("a", [503]), Scripted("b", [200])
    outcome, record = call([first, second], [Route("a", "m1"), Route("b", "m2")], max_attempts=2)
    assert outcome.response.status_code == 200
    assert (record.provider, record.upstream_model) == ("b", "m2")
    assert [(a.provider, a.status_code) for a in record.attempts] == [("a", 503), ("a", 503), ("b", 200)]


def test_no_fallback_after_a_client_error():
    first, second = Scripted("a", [400]), Scripted("b", [200])
    outcome, record = call([first, second], [Route("a", "m1"), Route("b", "m2")])
    assert outcome.response.status_code == 400 and not second.calls


def test_a_stream_answer_is_returned_unread():
    upstream = Scripted("a", [200])
    outcome, _ = call([upstream], [Route("a", "m")], stream=True)
    assert outcome.body is None and outcome.attempt.latency_ms is None
