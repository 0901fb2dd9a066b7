"""The resilience tests' proxy: small backoffs and timeouts, OpenAI and Hyperbolic at the fake
upstream, an unreachable `dead` provider and aliases that fall back; clients with and without the
SDK's retries; and the checks on the upstream calls and the `attempts` rows.

A test module that imports the `proxy` fixture gets a proxy of its own for the module.
"""

from __future__ import annotations

import time

import httpx
import pytest
from openai import OpenAI

from conftest import fake_key, provider_env
from fake_answers import chat_answer
from provider_setup import HYPERBOLIC_KEY, OPENAI_KEY, dead_provider

CLIENT_KEY = fake_key("sk-test-client")
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

[aliases]
smart = ["openai/fail-503-smart", "hyperbolic/ok-model"]
strict = ["openai/fail-400-strict", "hyperbolic/ok-model"]
rescue = ["dead/any-model", "openai/gpt-4o-mini"]
doomed = ["openai/fail-503-doomed", "hyperbolic/fail-503-doomed"]
"""


@pytest.fixture(scope="module")
def proxy(module_proxy_factory, fake_upstream_server):
    env = provider_env(fake_upstream_server, openai=OPENAI_KEY, hyperbolic=HYPERBOLIC_KEY)
    return module_proxy_factory(env=env, config=CONFIG + dead_provider())


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


def answered(client: OpenAI, model: str, text: str, attempts: int | None = None):
    """Ask `model` through the proxy and check the whole answer came back (after `attempts`
    upstream attempts, when given); the raw response, for its headers."""
    raw = client.chat.completions.with_raw_response.create(model=model, messages=ask(text))
    assert raw.status_code == 200
    assert raw.parse().choices[0].message.content == chat_answer(text)
    if attempts is not None:
        assert raw.headers["x-study-attempts"] == str(attempts)
    return raw


def post(proxy, model: str, text: str = "hello", headers: dict[str, str] | None = None, **body) -> httpx.Response:
    return httpx.post(proxy.v1 + "/chat/completions", json={"model": model, "messages": ask(text), **body},
                      headers={"Authorization": f"Bearer {CLIENT_KEY}", **(headers or {})}, timeout=15)


def timed_post(proxy, model: str, **options) -> tuple[httpx.Response, float]:
    """`post`, and the seconds the answer took."""
    began = time.monotonic()
    response = post(proxy, model, **options)
    return response, time.monotonic() - began


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
