"""Retries, fallback and timeouts end to end: the real proxy against the fake upstream's fault modes.

One proxy for the module with small backoffs and timeouts; a second one (per test) for the
request deadline. The fake upstream counts the calls it received per model, so each test
uses a unique model name and checks exactly how many upstream calls the proxy made; the
`attempts` table must hold one row per upstream attempt, in order, with its provider.
"""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest
from openai import OpenAI

from conftest import assert_error_shape, fake_key, free_port, provider_env, sse_data, unique
from fake_answers import chat_answer
from fake_failures import RETRY_AFTER_DATE_SECONDS, RETRY_AFTER_MS, stalled_text

pytestmark = pytest.mark.timeout(60)

OPENAI_KEY = fake_key("sk-test-openai")
HYPERBOLIC_KEY = fake_key("hyp-test")
CLIENT_KEY = fake_key("sk-test-client")
#: Nothing listens here: a provider pointed at it fails to connect.
DEAD_PORT = free_port()
MAX_ATTEMPTS = 3

CONFIG = f"""
[retry]
max_attempts = {MAX_ATTEMPTS}
backoff_base = 0.05
backoff_max = 0.2
retry_after_cap = 5
deadline = 30

[timeouts]
connect = 1
first_byte = 1
stream_idle = 1

[providers.dead]
base_url = "http://127.0.0.1:{DEAD_PORT}/v1"
no_key = true

[aliases]
smart = ["openai/fail-503-smart", "hyperbolic/ok-model"]
strict = ["openai/fail-400-strict", "hyperbolic/ok-model"]
rescue = ["dead/any-model", "openai/gpt-4o-mini"]
doomed = ["openai/fail-503-doomed", "hyperbolic/fail-503-doomed"]
"""


@pytest.fixture(scope="module")
def proxy(module_proxy_factory, fake_upstream_server):
    env = provider_env(fake_upstream_server, openai=OPENAI_KEY, hyperbolic=HYPERBOLIC_KEY)
    return module_proxy_factory(env=env, config=CONFIG)


@pytest.fixture
def client(proxy) -> OpenAI:
    """No SDK retries: what the test sees is what the proxy did."""
    return OpenAI(base_url=proxy.v1, api_key=CLIENT_KEY, max_retries=0, timeout=15)


@pytest.fixture
def sdk(proxy) -> OpenAI:
    """The SDK as users run it: its default retries (2) on."""
    return OpenAI(base_url=proxy.v1, api_key=CLIENT_KEY, timeout=15)


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def post(proxy, model: str, text: str = "hello", headers: dict[str, str] | None = None, **body) -> httpx.Response:
    return httpx.post(proxy.v1 + "/chat/completions", json={"model": model, "messages": ask(text), **body},
                      headers={"Authorization": f"Bearer {CLIENT_KEY}", **(headers or {})}, timeout=15)


def settle(upstream, model: str, expected: int) -> int:
    """The number of upstream calls for `model` once nothing more arrives (catches late extra retries)."""
    upstream.wait_count(expected, model, timeout=5)
    time.sleep(0.3)
    return upstream.count(model)


def assert_attempt_rows(proxy, request_id: str, expected: list[tuple[str, int | None]]) -> list:
    """The `attempts` rows of a request: numbered 1.., with these (provider, status_code)."""
    rows = proxy.log.attempts(request_id)
    assert [(a["provider"], a["status_code"]) for a in rows] == expected, [dict(a) for a in rows]
    assert [a["attempt"] for a in rows] == list(range(1, len(expected) + 1))
    for a in rows:
        assert a["latency_ms"] is not None and a["latency_ms"] >= 0
        assert a["started_at"]
        if a["status_code"] is None:
            assert a["error"], dict(a)
    return rows


# --------------------------------------------------------------------------------------
# Retry on one route
# --------------------------------------------------------------------------------------


def test_429_once_is_retried_after_the_advertised_delay(proxy, client, upstream):
    model = unique("fail-429-once")
    raw = client.chat.completions.with_raw_response.create(model=model, messages=ask("rate me"))
    assert raw.status_code == 200
    assert raw.parse().choices[0].message.content == chat_answer("rate me")
    assert raw.headers["x-study-attempts"] == "2"

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
    raw = client.chat.completions.with_raw_response.create(model=model, messages=ask("third time lucky"))
    assert raw.status_code == 200
    assert raw.parse().choices[0].message.content == chat_answer("third time lucky")
    assert raw.headers["x-study-attempts"] == "3"
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
# Fallback across routes
# --------------------------------------------------------------------------------------


def test_fallback_to_the_next_route_after_retryable_failures(proxy, client, upstream):
    raw = client.chat.completions.with_raw_response.create(model="smart", messages=ask("fall back"))
    assert raw.status_code == 200
    assert raw.parse().choices[0].message.content == chat_answer("fall back")
    assert raw.headers["x-study-provider"] == "hyperbolic"
    assert raw.headers["x-study-attempts"] == str(MAX_ATTEMPTS + 1)

    assert settle(upstream, "fail-503-smart", MAX_ATTEMPTS) == MAX_ATTEMPTS
    assert all(r.path == "/v1/chat/completions" for r in upstream.calls("fail-503-smart"))
    [second] = upstream.calls("ok-model")
    assert second.path == "/hyperbolic/v1/chat/completions"

    request_id = raw.headers["x-study-request-id"]
    row = proxy.log.wait_row(request_id)
    assert (row["model"], row["provider"], row["upstream_model"]) == ("smart", "hyperbolic", "ok-model")
    assert (row["status_code"], row["attempts"], row["error"]) == (200, MAX_ATTEMPTS + 1, None)
    rows = assert_attempt_rows(proxy, request_id, [("openai", 503)] * MAX_ATTEMPTS + [("hyperbolic", 200)])
    assert rows[0]["url_path"] == "/v1/chat/completions"
    assert rows[-1]["url_path"] == "/hyperbolic/v1/chat/completions"


def test_no_fallback_after_a_non_retryable_400(proxy, client, upstream):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="strict", messages=ask("strict"))
    err = caught.value
    assert err.response.headers["x-study-provider"] == "openai"
    assert settle(upstream, "fail-400-strict", 1) == 1
    assert upstream.count("ok-model") == 0
    request_id = err.response.headers["x-study-request-id"]
    row = proxy.log.wait_row(request_id)
    assert (row["provider"], row["upstream_model"], row["status_code"], row["attempts"]) == ("openai", "fail-400-strict", 400, 1)
    assert_attempt_rows(proxy, request_id, [("openai", 400)])


def test_fallback_from_an_unreachable_route(proxy, client, upstream):
    raw = client.chat.completions.with_raw_response.create(model="rescue", messages=ask("rescue me"))
    assert raw.status_code == 200
    assert raw.parse().choices[0].message.content == chat_answer("rescue me")
    assert raw.headers["x-study-provider"] == "openai"
    request_id = raw.headers["x-study-request-id"]
    row = proxy.log.wait_row(request_id)
    assert (row["provider"], row["upstream_model"], row["status_code"]) == ("openai", "gpt-4o-mini", 200)
    attempts = proxy.log.attempts(request_id)
    dead = [a for a in attempts if a["provider"] == "dead"]
    assert 1 <= len(dead) <= MAX_ATTEMPTS, [dict(a) for a in attempts]
    assert all(a["status_code"] is None and a["error"] for a in dead)
    assert [(a["provider"], a["status_code"]) for a in attempts[len(dead):]] == [("openai", 200)]
    assert row["attempts"] == len(attempts) == int(raw.headers["x-study-attempts"])
    assert upstream.count(content="rescue me") == 1


def test_every_route_failing_answers_the_last_error(proxy, sdk, upstream):
    with pytest.raises(openai.InternalServerError) as caught:
        sdk.chat.completions.create(model="doomed", messages=ask("doomed"))
    err = caught.value
    assert err.status_code == 503
    assert err.response.headers["x-should-retry"] == "false"
    assert err.response.headers["x-study-provider"] == "hyperbolic"
    assert err.response.headers["x-study-attempts"] == str(2 * MAX_ATTEMPTS)
    assert settle(upstream, "fail-503-doomed", 2 * MAX_ATTEMPTS) == 2 * MAX_ATTEMPTS
    request_id = err.response.headers["x-study-request-id"]
    row = proxy.log.wait_row(request_id)
    assert (row["provider"], row["status_code"], row["attempts"]) == ("hyperbolic", 503, 2 * MAX_ATTEMPTS)
    assert_attempt_rows(proxy, request_id, [("openai", 503)] * MAX_ATTEMPTS + [("hyperbolic", 503)] * MAX_ATTEMPTS)


# --------------------------------------------------------------------------------------
# Streams
# --------------------------------------------------------------------------------------


def test_stream_failing_before_its_first_byte_is_retried(proxy, client, upstream):
    model = unique("fail-503-twice")
    raw = client.chat.completions.with_raw_response.create(model=model, messages=ask("stream again"), stream=True)
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.headers["x-study-attempts"] == "3"
    text = "".join((c.choices[0].delta.content or "") for c in raw.parse() if c.choices)
    assert text == chat_answer("stream again")
    assert settle(upstream, model, 3) == 3
    request_id = raw.headers["x-study-request-id"]
    row = proxy.log.wait_row(request_id)
    assert (row["stream"], row["status_code"], row["attempts"], row["error"]) == (1, 200, 3, None)
    assert row["response"] == chat_answer("stream again")
    assert_attempt_rows(proxy, request_id, [("openai", 503), ("openai", 503), ("openai", 200)])


def test_stream_failing_every_attempt_tells_the_sdk_not_to_retry(proxy, sdk, upstream):
    model = unique("fail-503")
    with pytest.raises(openai.InternalServerError) as caught:
        sdk.chat.completions.create(model=model, messages=ask("stream never"), stream=True)
    err = caught.value
    assert err.status_code == 503
    assert err.response.headers["x-should-retry"] == "false"
    assert settle(upstream, model, MAX_ATTEMPTS) == MAX_ATTEMPTS
    row = proxy.log.wait_row(err.response.headers["x-study-request-id"])
    assert (row["stream"], row["status_code"], row["attempts"]) == (1, 503, MAX_ATTEMPTS)


def test_stream_cut_after_its_first_byte_is_not_retried(proxy, upstream):
    model = unique("cut-stream")
    body = {"model": model, "messages": ask("cut once"), "stream": True}
    lines = []
    with httpx.stream("POST", proxy.v1 + "/chat/completions", json=body, timeout=15,
                      headers={"Authorization": f"Bearer {CLIENT_KEY}"}) as response:
        assert response.status_code == 200
        request_id = response.headers["x-study-request-id"]
        try:
            lines.extend(response.iter_lines())
        except httpx.HTTPError:
            pass
    assert "data: [DONE]" not in lines
    assert settle(upstream, model, 1) == 1
    row = proxy.log.wait_row(request_id)
    assert row["stream"] == 1 and row["error"]
    assert row["attempts"] == 1
    assert len(proxy.log.attempts(request_id)) == 1


def test_stream_stalling_mid_way_ends_with_an_error_event_and_a_row(proxy, upstream):
    model = unique("stall-stream")
    body = {"model": model, "messages": ask("stall here please"), "stream": True}
    began = time.monotonic()
    with httpx.stream("POST", proxy.v1 + "/chat/completions", json=body, timeout=15,
                      headers={"Authorization": f"Bearer {CLIENT_KEY}"}) as response:
        assert response.status_code == 200
        request_id = response.headers["x-study-request-id"]
        text = response.read().decode()
    elapsed = time.monotonic() - began
    assert elapsed < 6, f"a stream stalled with stream_idle = 1 took {elapsed:.1f}s to end"

    events = sse_data(text)
    assert events, text
    payloads = [json.loads(e) for e in events if e != "[DONE]"]
    errors = [p for p in payloads if "error" in p]
    assert len(errors) == 1 and payloads[-1] is errors[0], text
    assert isinstance(errors[0]["error"], dict) and errors[0]["error"].get("message"), errors[0]
    partial = "".join(p["choices"][0]["delta"].get("content") or "" for p in payloads if p.get("choices"))
    assert partial == stalled_text(chat_answer("stall here please"))

    assert settle(upstream, model, 1) == 1  # bytes had reached the client: no retry
    row = proxy.log.wait_row(request_id)
    assert row["stream"] == 1
    assert row["error"]
    assert row["response"] == partial
    assert row["attempts"] == 1


def test_stall_reaches_the_sdk_as_an_error(proxy, client):
    stream = client.chat.completions.create(model=unique("stall-stream"), messages=ask("sdk stall"), stream=True)
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass


# --------------------------------------------------------------------------------------
# Timeouts
# --------------------------------------------------------------------------------------


def test_hanging_upstream_answers_504_after_the_first_byte_timeout(proxy, upstream):
    model = unique("hang")
    began = time.monotonic()
    response = post(proxy, model, headers={"X-Study-Retries": "0"})
    elapsed = time.monotonic() - began
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
    began = time.monotonic()
    response = post(proxy, model, headers={"X-Study-Retries": "1"})
    elapsed = time.monotonic() - began
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
    began = time.monotonic()
    response = post(proxy, model)
    elapsed = time.monotonic() - began
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
