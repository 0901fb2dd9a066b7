"""Fallback across routes and retries of streams end to end: the real proxy against the fake
upstream's fault modes (the module's proxy and checks: resilience_setup.py).

An alias falls back to its next route after retryable failures only; a stream is retried before
its first byte and never after; a stalled stream ends with an error event and a row.
"""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from conftest import sse_data, unique
from fake_answers import chat_answer
from fake_failures import stalled_text
from resilience_setup import CLIENT_KEY, MAX_ATTEMPTS, answered, ask, assert_attempt_rows, settle
from resilience_setup import client, proxy, sdk  # noqa: F401  (the module's fixtures)

pytestmark = pytest.mark.timeout(60)


# --------------------------------------------------------------------------------------
# Fallback across routes
# --------------------------------------------------------------------------------------


def test_fallback_to_the_next_route_after_retryable_failures(proxy, client, upstream):
    raw = answered(client, "smart", "fall back", attempts=MAX_ATTEMPTS + 1)
    assert raw.headers["x-study-provider"] == "hyperbolic"

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
    raw = answered(client, "rescue", "rescue me")
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

def test_the_server_output_holds_no_traceback(proxy):
    """Last in the module: nothing above made the proxy log a traceback."""
    output = proxy.output()
    assert "Traceback" not in output, output
