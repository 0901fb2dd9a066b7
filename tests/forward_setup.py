"""The forwarding tests' proxy: OpenAI (the default), Azure, a configured `local` provider, an
unreachable `dead` one and an alias that falls back from `dead` to OpenAI; proxy keys on; a small
body limit. With the checks the modules share: the operator's key upstream, a call's row and
attempts, a refusal with its row, and no key written anywhere.

A test module that imports the `proxy` fixture gets a proxy of its own for the module.
"""

from __future__ import annotations

import httpx
import pytest
from openai import OpenAI

from conftest import assert_error_shape, fake_key, provider_env
from provider_setup import ALICE_KEY, AZURE_KEY, LOCAL_KEY, OPENAI_KEY
from provider_setup import clients, dead_provider, local_provider, sdk_client, secrets_written

COOKIE_SECRET = fake_key("cookie-secret")
SECRETS = (OPENAI_KEY, AZURE_KEY, LOCAL_KEY, ALICE_KEY, COOKIE_SECRET)
LIMIT = 200_000

CONFIG = f"""
[server]
max_body_bytes = {LIMIT}

[retry]
backoff_base = 0.01
backoff_max = 0.02

[aliases]
transcriber = ["dead/whisper-1", "openai/whisper-1"]
"""


@pytest.fixture(scope="module")
def proxy(module_proxy_factory, fake_upstream_server):
    env = provider_env(fake_upstream_server, openai=OPENAI_KEY, azure=AZURE_KEY, LOCAL_KEY=LOCAL_KEY,
                       ALICE_PROXY_KEY=ALICE_KEY)
    config = CONFIG + local_provider(fake_upstream_server) + dead_provider() + clients("alice")
    return module_proxy_factory(env=env, config=config)


@pytest.fixture
def client(proxy) -> OpenAI:
    return sdk_client(proxy, ALICE_KEY)


@pytest.fixture
def http(proxy):
    with httpx.Client(base_url=proxy.v1, timeout=10, headers={"Authorization": f"Bearer {ALICE_KEY}"}) as client:
        yield client


def assert_operator_auth(recorded) -> None:
    """The provider's key went upstream; the client's never did."""
    assert recorded.headers.get("authorization") == f"Bearer {OPENAI_KEY}"
    assert "api-key" not in recorded.headers
    assert ALICE_KEY not in str(recorded.headers)
    assert ALICE_KEY.encode() not in recorded.raw_body


def row_of(proxy, raw):
    return proxy.log.wait_row(raw.headers["x-study-request-id"])


def attempts_of(proxy, row) -> list[tuple]:
    return [(a["provider"], a["url_path"], a["status_code"]) for a in proxy.log.attempts(row["request_id"])]


def check_refused(proxy, upstream, response, status, code, endpoint=None):
    assert response.status_code == status, response.text
    error = assert_error_shape(response.json())
    assert error["code"] == code, error
    row = proxy.log.wait_row(response.headers["x-study-request-id"])
    assert (row["status_code"], row["attempts"]) == (status, 0)
    assert row["error"]
    if endpoint is not None:
        assert row["endpoint"] == endpoint
    assert upstream.requests == []
    return error, row


def assert_no_key_written(proxy) -> None:
    """No secret in any file the proxy wrote (the log, its WAL and journal, its output); no traceback."""
    proxy.log.wait_count(1)
    assert secrets_written(proxy, SECRETS) == []
    assert "Traceback" not in proxy.output()
