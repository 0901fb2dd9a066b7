"""CORS end to end: off unless origins are configured; then granted to those origins only,
on the direct `POST /v1/*` path, streams and Starlette's routes alike."""

from __future__ import annotations

import re

import httpx
import pytest

from conftest import REPO_ROOT, sse_data
from proxy.cors import ALLOW_HEADERS

pytestmark = pytest.mark.timeout(60)

ALLOWED = "http://localhost:5173"
OTHER = "https://evil.example"
CHAT = {"model": "mock/echo", "messages": [{"role": "user", "content": "from a page"}]}
#: What openai-node asks to send from a browser, plus the proxy's own options.
BROWSER_HEADERS = (
    "authorization, content-type, user-agent, x-stainless-arch, x-stainless-lang, x-stainless-os, "
    "x-stainless-package-version, x-stainless-retry-count, x-stainless-runtime, x-stainless-runtime-version, "
    "x-stainless-timeout, x-study-tags, x-study-session"
)


@pytest.fixture(scope="module")
def with_cors(module_proxy_factory):
    return module_proxy_factory(env={"CORS_ALLOW_ORIGINS": f"{ALLOWED}, https://notebook.example"})


@pytest.fixture(scope="module")
def without_cors(module_proxy_factory):
    return module_proxy_factory()


def preflight(proxy, origin: str, path: str = "/chat/completions", headers: str = BROWSER_HEADERS) -> httpx.Response:
    return httpx.options(proxy.v1 + path, timeout=10, headers={
        "Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": headers,
    })


def chat(proxy, origin: str, stream: bool = False) -> httpx.Response:
    return httpx.post(proxy.v1 + "/chat/completions", json={**CHAT, "stream": stream}, timeout=10,
                      headers={"Origin": origin, "Authorization": "Bearer anything"})


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


def listed(value: str) -> set[str]:
    return {item.strip().lower() for item in value.split(",")}


def test_preflight_from_an_allowed_origin_is_granted(with_cors):
    response = preflight(with_cors, ALLOWED)
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert "origin" in listed(response.headers["vary"])
    assert "POST" in response.headers["access-control-allow-methods"]
    allowed = listed(response.headers["access-control-allow-headers"])
    assert listed(BROWSER_HEADERS) | {"api-key", "openai-beta", "x-study-metadata"} <= allowed
    assert with_cors.log.count() == 0  # a preflight is not a call: no row


def test_preflight_from_another_origin_gets_no_grant(with_cors):
    response = preflight(with_cors, OTHER)
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers


def test_post_from_an_allowed_origin_may_read_the_answer_and_the_study_headers(with_cors):
    for response in (chat(with_cors, ALLOWED), chat(with_cors, ALLOWED, stream=True)):
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == ALLOWED
        assert "origin" in listed(response.headers["vary"])
        exposed = listed(response.headers["access-control-expose-headers"])
        assert {"x-study-request-id", "x-study-provider", "x-study-attempts", "x-request-id", "x-should-retry"} <= exposed
        with_cors.log.wait_row(response.headers["x-study-request-id"])
    assert sse_data(response.text)[-1] == "[DONE]"


def test_post_from_another_origin_gets_no_grant(with_cors):
    response = chat(with_cors, OTHER)
    assert response.status_code == 200  # the browser, not the proxy, withholds the answer from the page
    assert "access-control-allow-origin" not in response.headers


def test_other_routes_answer_allowed_origins_too(with_cors):
    response = httpx.get(with_cors.v1 + "/models", headers={"Origin": ALLOWED}, timeout=10)
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert preflight(with_cors, ALLOWED, "/models").headers["access-control-allow-origin"] == ALLOWED


def test_without_the_setting_no_access_control_header_is_ever_sent(without_cors):
    for origin in (ALLOWED, OTHER):
        response = preflight(without_cors, origin)
        assert response.status_code != 200  # no CORS layer: OPTIONS is just another method
        assert cors_headers(response) == {}
        for response in (chat(without_cors, origin), chat(without_cors, origin, stream=True)):
            assert response.status_code == 200
            assert cors_headers(response) == {}
            assert "origin" not in listed(response.headers.get("vary", ""))
        response = httpx.get(without_cors.v1 + "/models", headers={"Origin": origin}, timeout=10)
        assert cors_headers(response) == {}


def test_a_star_grants_any_origin(proxy_factory):
    proxy = proxy_factory(config='[server]\ncors_allow_origins = ["*"]\n')
    assert preflight(proxy, OTHER).headers["access-control-allow-origin"] == "*"
    response = chat(proxy, OTHER)
    assert response.headers["access-control-allow-origin"] == "*"
    assert "x-study-request-id" in listed(response.headers["access-control-expose-headers"])


def test_every_x_study_request_header_the_proxy_reads_may_be_sent_from_a_page():
    """A new `X-Study-*` option must be added to the CORS allow-list too."""
    source = "".join(path.read_text() for path in (REPO_ROOT / "proxy").rglob("*.py"))
    read = set(re.findall(r"""headers\.get\(["'](x-study-[a-z-]+)["']""", source))
    assert read and read <= set(ALLOW_HEADERS), read - set(ALLOW_HEADERS)
