"""An upstream is input too: an answer past `[server] max_answer_bytes` once decoded (here a
compression bomb, ~65 KB that inflates to 64 MiB) is refused with a 502 and a row, not
retried; a stream past it ends with an error event the SDK raises; a forwarded body relayed
as it comes (a file, speech) may be of any size, since the proxy holds none of it.
"""

from __future__ import annotations

import os

import httpx
import openai
import pytest

from conftest import HEX32, assert_error_shape, fake_key, provider_env
from fake_failures import BOMB_BYTES

pytestmark = pytest.mark.timeout(60)

LIMIT = 4 * 1024 * 1024
KEY = fake_key("sk-test-openai")


@pytest.fixture(scope="module")
def proxy(module_proxy_factory, fake_upstream_server):
    return module_proxy_factory(env=provider_env(fake_upstream_server, openai=KEY),
                                config=f"[server]\nmax_answer_bytes = {LIMIT}\n[retry]\nbackoff_base = 0.01\n")


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the proxy's memory from /proc")
def test_a_whole_answer_past_the_limit_is_a_502_with_a_row_and_no_retry(proxy, upstream):
    before = rss_bytes(proxy.process.pid)
    response = httpx.post(proxy.v1 + "/chat/completions", timeout=20,
                          json={"model": "bomb-whole", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 502, response.text
    error = assert_error_shape(response.json())
    assert error["code"] == "upstream_answer_too_large" and f"{LIMIT:,} bytes" in error["message"]
    assert upstream.count("bomb-whole") == 1  # as large again if asked again: not retried
    assert rss_bytes(proxy.process.pid) - before < BOMB_BYTES // 2  # never inflated whole
    request_id = response.headers["x-study-request-id"]
    row = proxy.log.wait_row(request_id)
    assert row["status_code"] == 502 and "max_answer_bytes" in row["error"]
    attempts = proxy.log.attempts(request_id)
    assert len(attempts) == 1 and "max_answer_bytes" in attempts[0]["error"]


def test_a_stream_request_answered_whole_past_the_limit_is_a_502_too(proxy, upstream):
    response = httpx.post(proxy.v1 + "/chat/completions", timeout=20,
                          json={"model": "bomb-json", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 502, response.text
    assert assert_error_shape(response.json())["code"] == "upstream_answer_too_large"
    assert proxy.log.wait_row(response.headers["x-study-request-id"])["status_code"] == 502


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_a_stream_past_the_limit_ends_with_an_error_event_and_a_row(proxy, upstream, api):
    client = openai.OpenAI(base_url=proxy.v1, api_key="any", max_retries=0, timeout=20)
    if api == "chat":
        opened = client.chat.completions.with_streaming_response.create(
            model="bomb-stream-c", stream=True, messages=[{"role": "user", "content": "hi"}])
    else:
        opened = client.responses.with_streaming_response.create(model="bomb-stream-r", input="hi", stream=True)
    with opened as response, pytest.raises(openai.APIError) as ended:
        request_id = response.headers["x-study-request-id"]
        for _ in response.parse():
            pass
    assert "max_answer_bytes" in str(ended.value)
    row = proxy.log.wait_row(request_id)
    assert row["stream"] == 1 and "max_answer_bytes" in row["error"]


def test_a_forwarded_body_relayed_as_it_comes_is_not_bounded(proxy, upstream):
    pad = LIMIT + 1024 * 1024
    response = httpx.post(proxy.v1 + f"/some/echo?pad={pad}", json={"model": "gpt-4o-mini"}, timeout=20)
    assert response.status_code == 200 and len(response.content) > pad
    assert response.json()["pad"] == "p" * pad
    request_id = response.headers["x-study-request-id"]
    assert HEX32.match(request_id) and proxy.log.wait_row(request_id)["status_code"] == 200
