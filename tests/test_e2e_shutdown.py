"""SIGTERM in the middle of a burst: the proxy exits within its grace period and loses no row.

About 300 requests at a concurrency of 32, against the fake upstream's `slow-*` models (300 ms
each, plain and streamed, some identical so that single-flight is in play) and the built-in
`mock` provider. Every request that got an answer carrying `X-Study-Request-Id` must have its
row once the process has exited; the output must hold no traceback.
"""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from conftest import fake_key, provider_env, unique

from proxy.limits import ClientLimits

pytestmark = pytest.mark.timeout(90)

REQUESTS = 300
CONCURRENCY = 32
#: `[server] shutdown_grace`'s default, uvicorn's graceful shutdown.
GRACE_PERIOD = ClientLimits().shutdown_grace


def test_sigterm_in_a_burst_exits_in_time_and_keeps_every_answered_row(proxy_factory, fake_upstream_server):
    proxy = proxy_factory(env=provider_env(fake_upstream_server, openai=fake_key("sk-test-openai")))
    slow = unique("slow")
    answered: dict[str, int] = {}  # request id → status
    streamed_ok: list[str] = []
    refused: list[int] = []
    lock = threading.Lock()
    enough = threading.Event()
    local = threading.local()

    def body(i: int) -> dict:
        kind = i % 6
        if kind == 0:
            return {"model": "mock/echo", "messages": [{"role": "user", "content": f"mock {i}"}]}
        if kind == 1:
            return {"model": slow, "messages": [{"role": "user", "content": f"stream {i}"}], "stream": True}
        if kind == 2:  # identical bodies: de-duplicated while they overlap
            return {"model": slow, "messages": [{"role": "user", "content": f"same {i // 60}"}]}
        return {"model": slow, "messages": [{"role": "user", "content": f"slow {i}"}]}

    def send(i: int) -> None:
        http = getattr(local, "http", None)
        if http is None:
            http = local.http = httpx.Client(timeout=20)
        payload = body(i)
        try:
            with http.stream("POST", proxy.v1 + "/chat/completions", json=payload) as response:
                request_id = response.headers.get("x-study-request-id")
                try:
                    text = response.read().decode()
                    complete = True
                except httpx.HTTPError:
                    complete = False
                with lock:
                    if request_id:
                        answered[request_id] = response.status_code
                    if payload.get("stream") and complete and response.status_code == 200 and "data: [DONE]" in text:
                        streamed_ok.append(request_id)
                    if response.status_code == 200 and len(answered) >= REQUESTS // 4:
                        enough.set()
        except httpx.HTTPError:
            with lock:
                refused.append(i)  # the server had stopped listening

    began = time.monotonic()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        futures = [pool.submit(send, i) for i in range(REQUESTS)]
        assert enough.wait(30), f"only {len(answered)} answers before the signal:\n{proxy.output()}"
        signalled = time.monotonic()
        proxy.process.send_signal(signal.SIGTERM)
        try:
            proxy.process.wait(GRACE_PERIOD + 5)
        except Exception:
            proxy.process.kill()
            raise AssertionError(f"the proxy did not exit within its grace period:\n{proxy.output()}")
        exited = time.monotonic()
        for future in futures:
            future.result(timeout=30)

    assert exited - signalled < GRACE_PERIOD, f"exit took {exited - signalled:.1f}s"
    proxy.stop_ok()  # exit code and no traceback
    ok = [rid for rid, status in answered.items() if status == 200]
    assert len(ok) >= REQUESTS // 4, (len(ok), len(refused))
    assert len(answered) + len(refused) == REQUESTS

    rows = {r["request_id"]: r for r in proxy.log.rows()}
    missing = set(answered) - set(rows)
    assert not missing, f"{len(missing)} of {len(answered)} answered requests have no row"
    for request_id in ok:
        assert rows[request_id]["status_code"] == 200, dict(rows[request_id])
    for request_id in streamed_ok:
        row = rows[request_id]
        assert row["stream"] == 1 and row["error"] is None and row["response"], dict(row)
    print(f"{len(ok)} answered, {len(refused)} refused, {len(rows)} rows; "
          f"exit {exited - signalled:.2f}s after SIGTERM, burst {exited - began:.1f}s")


def test_a_call_still_waiting_when_the_grace_runs_out_is_answered_503(proxy_factory, fake_upstream_server):
    """`[server] shutdown_grace`: past it, a call waiting for its upstream gets a 503 in OpenAI's
    shape (not uvicorn's plain 500), and its row says the same."""
    proxy = proxy_factory(env=provider_env(fake_upstream_server, openai=fake_key("sk-test-openai")),
                          config="[server]\nshutdown_grace = 1.0\n")
    answers: list[httpx.Response] = []
    model = unique("hang")
    thread = threading.Thread(target=lambda: answers.append(httpx.post(
        proxy.v1 + "/chat/completions", timeout=30,
        json={"model": model, "messages": [{"role": "user", "content": "wait"}]},
    )))
    thread.start()
    deadline = time.monotonic() + 10
    while not fake_upstream_server.count(model) and time.monotonic() < deadline:  # earlier tests' calls are there too
        time.sleep(0.02)
    assert fake_upstream_server.count(model), "the call never reached the upstream"
    signalled = time.monotonic()
    proxy.process.send_signal(signal.SIGTERM)
    thread.join(20)
    proxy.process.wait(20)
    assert time.monotonic() - signalled < 10
    (answer,) = answers
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "shutdown"
    row = proxy.log.row(answer.headers["x-study-request-id"])
    assert (row["status_code"], row["error"]) == (503, "the proxy shut down before the answer was complete")
    proxy.stop_ok()
