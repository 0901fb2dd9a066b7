"""Retries and timeouts end to end: the real proxy against the fake upstream's fault modes.

One proxy for the module with small backoffs and timeouts (resilience_setup.py); a second one
(per test) for the request deadline. The fake upstream counts the calls it received per model,
so each test uses a unique model name and checks exactly how many upstream calls the proxy made;
the `attempts` table must hold one row per upstream attempt, in order, with its provider.
Fallback across routes and the retries of streams: test_e2e_fallback.py.
"""

from __future__ import annotations

import time

import openai
import pytest

from conftest import assert_error_shape, provider_env, unique
from fake_answers import chat_answer
from fake_failures import RETRY_AFTER_DATE_SECONDS, RETRY_AFTER_MS
from resilience_setup import MAX_ATTEMPTS, OPENAI_KEY, answered, ask, assert_attempt_rows, post, settle, timed_post
from resilience_setup import client, proxy, sdk  # noqa: F401  (the module's fixtures)

pytestmark = pytest.mark.timeout(60)


# --------------------------------------------------------------------------------------
# Retry on one route
# --------------------------------------------------------------------------------------


def test_429_once_is_retried_after_the_advertised_delay(proxy, client, upstream):
    model = unique("fail-429-once")
    raw = answered(client, model, "rate me", attempts=2)

    calls = upstream.calls(model)
    assert len(calls) == 2
    gap = calls[1].received_at - calls[0].received_at
    assert gap >= RETRY_AFTER_MS / 1000, f"retried {gap:.3f}s after a 429 that asked for {RETRY_AFTER_MS} ms"
    # `retry-after-ms` (300 ms) wins over `retry-after` (1 s).
    assert gap < 0.95, f"waited {gap:.3f}s: retry-after-ms should win over retry-after"

    request_id = raw.headers["x-study-request-id"]
    row = proxy.log.wait_row(request_id)
    assert (row["status_code"], row["attempts"], row["error"]) == (200, 2, None)
    assert row["response"] == chat_answer("rate me")
    assert_attempt_rows(proxy, request_id, [("openai", 429), ("openai", 200)])


def test_retry_after_in_seconds_is_honoured(proxy, upstream):
    model = unique("fail-429")  # always 429, with `retry-after: 1` only
    response = post(proxy, model, headers={"X-Study-Retries": "1"})
    assert response.status_code == 429
    assert response.headers["x-should-retry"] == "false"
    calls = upstream.calls(model)
    assert len(calls) == 2
    gap = calls[1].received_at - calls[0].received_at
    assert gap >= 1.0, f"retried {gap:.3f}s after a 429 with retry-after: 1"


def test_retry_after_as_an_http_date_is_honoured(proxy, client, upstream):
    model = unique("fail-429-date-once")  # 429 with `retry-after: <date 2 s ahead>`, then 200
    raw = client.chat.completions.with_raw_response.create(model=model, messages=ask("date"))
    assert raw.status_code == 200
    calls = upstream.calls(model)
    assert len(calls) == 2
    gap = calls[1].received_at - calls[0].received_at
    # The date has whole seconds, so the wait it asks for is between 1 and 2 s.
    assert 0.9 <= gap < RETRY_AFTER_DATE_SECONDS + 1, f"retried {gap:.3f}s after a Retry-After date"


@pytest.mark.parametrize("status", [408, 500, 502, 504])
def test_retryable_statuses_are_retried(proxy, upstream, status):
    model = unique(f"fail-{status}")
    response = post(proxy, model, headers={"X-Study-Retries": "1"})
    assert response.status_code == status
    assert response.headers["x-should-retry"] == "false"
    assert settle(upstream, model, 2) == 2
    assert_attempt_rows(proxy, response.headers["x-study-request-id"], [("openai", status)] * 2)


@pytest.mark.parametrize("status", [401, 403, 404, 409, 422])
def test_other_4xx_are_never_retried(proxy, upstream, status):
    model = unique(f"fail-{status}")
    response = post(proxy, model)
    assert response.status_code == status
    assert response.json()["error"]["message"] == f"Fake upstream fails with {status}."
    assert response.headers["x-study-attempts"] == "1"
    assert settle(upstream, model, 1) == 1
    assert_attempt_rows(proxy, response.headers["x-study-request-id"], [("openai", status)])


def test_503_twice_then_success_on_the_third_attempt(proxy, client, upstream):
    model = unique("fail-503-twice")
    raw = answered(client, model, "third time lucky", attempts=3)
    assert "x-should-retry" not in raw.headers or raw.headers["x-should-retry"] != "false"
    assert settle(upstream, model, 3) == 3
    request_id = raw.headers["x-study-request-id"]
    row = proxy.log.wait_row(request_id)
    assert (row["status_code"], row["attempts"], row["provider"], row["error"]) == (200, 3, "openai", None)
    assert_attempt_rows(proxy, request_id, [("openai", 503), ("openai", 503), ("openai", 200)])


def test_persistent_503_exhausts_the_attempts_and_the_sdk_adds_no_retries(proxy, sdk, upstream):
    model = unique("fail-503")
    began = time.monotonic()
    with pytest.raises(openai.InternalServerError) as caught:
        sdk.chat.completions.create(model=model, messages=ask("are you there"))
    elapsed = time.monotonic() - began
    err = caught.value
    assert err.status_code == 503
    assert err.response.headers["x-should-retry"] == "false"
    assert err.response.headers["x-study-attempts"] == str(MAX_ATTEMPTS)
    assert err.body["message"] == "Fake upstream is overloaded."  # upstream's error passes through
    # The SDK (max_retries=2) saw `x-should-retry: false`: the upstream got the proxy's attempts only.
    assert settle(upstream, model, MAX_ATTEMPTS) == MAX_ATTEMPTS
    assert elapsed < 5, f"the SDK waited {elapsed:.1f}s: did it retry?"

    request_id = err.response.headers["x-study-request-id"]
    row = proxy.log.wait_row(request_id)
    assert len(proxy.log.rows("model = ?", (model,))) == 1  # one client request, one row
    assert (row["status_code"], row["attempts"], row["provider"]) == (503, MAX_ATTEMPTS, "openai")
    assert row["error"] == "Fake upstream is overloaded."
    assert_attempt_rows(proxy, request_id, [("openai", 503)] * MAX_ATTEMPTS)


def test_400_is_never_retried(proxy, sdk, upstream):
    model = unique("fail-400")
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model=model, messages=ask("bad"))
    err = caught.value
    assert err.response.headers["x-study-attempts"] == "1"
    assert settle(upstream, model, 1) == 1
    request_id = err.response.headers["x-study-request-id"]
    row = proxy.log.wait_row(request_id)
    assert (row["status_code"], row["attempts"]) == (400, 1)
    assert_attempt_rows(proxy, request_id, [("openai", 400)])


@pytest.mark.parametrize(("retries", "attempts"), [("0", 1), ("1", 2), ("10", 11), ("50", 11)])
def test_retries_header_sets_the_attempts_of_the_request(proxy, upstream, retries, attempts):
    model = unique("fail-503")
    response = post(proxy, model, headers={"X-Study-Retries": retries})
    assert response.status_code == 503
    assert response.headers["x-study-attempts"] == str(attempts)
    if attempts > 1:
        assert response.headers["x-should-retry"] == "false"
    assert settle(upstream, model, attempts) == attempts
    request_id = response.headers["x-study-request-id"]
    row = proxy.log.wait_row(request_id)
    assert row["attempts"] == attempts
    assert_attempt_rows(proxy, request_id, [("openai", 503)] * attempts)


def test_connect_error_answers_502_after_bounded_attempts(proxy, sdk):
    began = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        sdk.chat.completions.create(model="dead/any-model", messages=ask("anyone home"))
    elapsed = time.monotonic() - began
    err = caught.value
    assert err.status_code == 502
    assert err.response.headers["x-should-retry"] == "false"
    assert err.response.headers["x-study-attempts"] == str(MAX_ATTEMPTS)
    assert_error_shape(err.response.json())
    assert elapsed < 5, f"{elapsed:.1f}s for a refused connection"
    request_id = err.response.headers["x-study-request-id"]
    row = proxy.log.wait_row(request_id)
    assert (row["status_code"], row["attempts"], row["provider"]) == (502, MAX_ATTEMPTS, "dead")
    assert row["error"]
    assert_attempt_rows(proxy, request_id, [("dead", None)] * MAX_ATTEMPTS)

# --------------------------------------------------------------------------------------
# Timeouts
# --------------------------------------------------------------------------------------


def test_hanging_upstream_answers_504_after_the_first_byte_timeout(proxy, upstream):
    model = unique("hang")
    response, elapsed = timed_post(proxy, model, headers={"X-Study-Retries": "0"})
    assert response.status_code == 504, response.text
    assert_error_shape(response.json())
    assert 0.9 <= elapsed < 4, f"answered after {elapsed:.1f}s with first_byte = 1"
    assert upstream.count(model) == 1
    request_id = response.headers["x-study-request-id"]
    row = proxy.log.wait_row(request_id)
    assert (row["status_code"], row["attempts"]) == (504, 1)
    assert row["error"]
    assert_attempt_rows(proxy, request_id, [("openai", None)])


def test_first_byte_timeout_is_retried(proxy, upstream):
    model = unique("hang")
    response, elapsed = timed_post(proxy, model, headers={"X-Study-Retries": "1"})
    assert response.status_code == 504, response.text
    assert response.headers["x-should-retry"] == "false"
    assert response.headers["x-study-attempts"] == "2"
    assert 1.9 <= elapsed < 6, elapsed
    assert settle(upstream, model, 2) == 2
    assert_attempt_rows(proxy, response.headers["x-study-request-id"], [("openai", None)] * 2)


def test_request_deadline_and_retry_after_cap(proxy_factory, fake_upstream_server, upstream):
    config = """
[retry]
max_attempts = 3
backoff_base = 0.05
backoff_max = 0.2
retry_after_cap = 0.5
deadline = 1.5

[timeouts]
first_byte = 30
"""
    proxy = proxy_factory(env=provider_env(fake_upstream_server, openai=OPENAI_KEY), config=config)

    # A hanging upstream: the 1.5 s deadline answers, not the 30 s first-byte timeout.
    model = unique("hang")
    response, elapsed = timed_post(proxy, model)
    assert response.status_code == 504, response.text
    assert_error_shape(response.json())
    assert 1.3 <= elapsed < 5, f"the 1.5 s deadline answered after {elapsed:.1f}s"
    row = proxy.log.wait_row(response.headers["x-study-request-id"])
    assert row["status_code"] == 504 and row["error"]
    assert row["attempts"] >= 1

    # `retry-after: 1` is more than retry_after_cap = 0.5: the proxy waits 0.5 s at most.
    model = unique("fail-429")
    response = post(proxy, model, headers={"X-Study-Retries": "1"})
    assert response.status_code == 429
    calls = upstream.calls(model)
    assert len(calls) == 2
    gap = calls[1].received_at - calls[0].received_at
    assert gap < 0.95, f"waited {gap:.3f}s with retry_after_cap = 0.5"


def test_the_server_output_holds_no_traceback(proxy):
    """Last in the module: nothing above made the proxy log a traceback."""
    output = proxy.output()
    assert "Traceback" not in output, output
