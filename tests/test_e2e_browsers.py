"""Browsers and other hosts against a real server: the Host allow-list, JSON content types
(what a page on another site can send without asking), `/ui/` behind proxy keys, the refusal
to listen beyond loopback without keys, and Azure deployment names that are dot segments."""

from __future__ import annotations

import base64
import subprocess
import sys
import time

import httpx
import pytest

from conftest import assert_error_shape, fake_key, free_port, minimal_env, provider_env
from rawhttp import build, exchange

pytestmark = pytest.mark.timeout(90)

CHAT = {"model": "mock/echo", "messages": [{"role": "user", "content": "hi"}]}
CLIENT_KEY = fake_key("sk-proxy-ui")
KEYS = '[clients]\nalice = { key_env = "ALICE_KEY" }\n'


@pytest.fixture(scope="module")
def proxy(module_proxy_factory):
    return module_proxy_factory(ui=True)


def raw_get(proxy, path: str, host: str | None, method: str = "GET", headers=(), body: bytes = b""):
    request = build(method, path, host or "", list(headers), body)
    if host is None:  # no Host header at all
        request = request.replace(b"Host: \r\n", b"")
    return exchange(proxy.port, request)


# --- the Host allow-list -----------------------------------------------------------------------


@pytest.mark.parametrize("path, method", [
    ("/v1/chat/completions", "POST"), ("/v1/models", "GET"), ("/ui/", "GET"), ("/ui/log.json", "GET"),
    ("/healthz", "GET"), ("/no/such/path", "GET"), ("/v1/files", "GET"), ("/v1/chat/completions", "OPTIONS"),
])
@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example", "[::2]:1", None])
def test_another_host_gets_421_everywhere(proxy, path, method, host):
    before = proxy.log.count()
    response = raw_get(proxy, path, host, method, [(b"Content-Type", b"application/json")], b'{"model": "m"}')
    assert response is not None and response.status == 421, response
    assert assert_error_shape(response.json())["code"] == "misdirected_request"
    assert proxy.log.count() == before  # not a call to this proxy: no row


def test_a_second_host_header_gets_421_whichever_comes_first(proxy):
    for second in (b"evil.example", b"localhost"):
        response = raw_get(proxy, "/v1/models", "localhost", headers=[(b"Host", second)])
        assert response is not None and response.status == 421, (second, response)


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST", "localhost.", "127.0.0.1", "[::1]"])
def test_loopback_names_with_any_port_are_served(proxy, host):
    for value in (host, f"{host}:{proxy.port}", f"{host}:1"):
        response = raw_get(proxy, "/healthz", value)
        assert response is not None and response.status == 200, (value, response)
    response = raw_get(proxy, "/v1/chat/completions", f"{host}:{proxy.port}", "POST",
                       [(b"Content-Type", b"application/json")], b'{"model": "m", "messages": [{"role": "user", "content": "x"}]}')
    assert response is not None and response.status == 200
    assert raw_get(proxy, "/ui/", host).status == 200


def test_allowed_hosts_replaces_the_defaults(proxy_factory):
    server = proxy_factory(env={"ALLOWED_HOSTS": "proxy.test, 127.0.0.1, .corp.test"})
    for host, status in (("proxy.test:80", 200), ("PROXY.TEST", 200), ("a.corp.test", 200), ("corp.test:1", 200),
                         ("localhost", 421), ("evilcorp.test", 421), ("proxy.test.evil", 421)):
        response = raw_get(server, "/healthz", host)
        assert response is not None and response.status == status, (host, response)


def test_allowed_hosts_star_serves_any_host(proxy_factory):
    server = proxy_factory(env={"ALLOWED_HOSTS": "*"})
    assert raw_get(server, "/healthz", "anything.example").status == 200
    assert raw_get(server, "/healthz", None).status == 200


def test_the_host_check_runs_before_cors(proxy_factory):
    server = proxy_factory(env={"CORS_ALLOW_ORIGINS": "http://evil.example"})
    preflight = [(b"Origin", b"http://evil.example"), (b"Access-Control-Request-Method", b"POST")]
    assert raw_get(server, "/v1/chat/completions", "evil.example", "OPTIONS", preflight).status == 421
    assert raw_get(server, "/v1/chat/completions", f"127.0.0.1:{server.port}", "OPTIONS", preflight).status == 200


# --- content types -------------------------------------------------------------------------------


def test_a_json_endpoint_without_content_type_is_415_with_a_row(proxy):
    response = raw_get(proxy, "/v1/chat/completions", f"127.0.0.1:{proxy.port}", "POST", [], b'{"model": "m"}')
    assert response.status == 415
    assert assert_error_shape(response.json())["code"] == "unsupported_content_type"
    row = proxy.log.wait_row(response.headers["x-study-request-id"])
    assert (row["status_code"], row["attempts"]) == (415, 0)


@pytest.mark.parametrize("content_type, status", [
    ("text/plain", 415), ("application/x-www-form-urlencoded", 415), (None, 415), ("application/json", 200),
])
def test_forwarded_posts_refuse_simple_text_types(proxy, content_type, status):
    headers = {"Authorization": "Bearer anything"} | ({"Content-Type": content_type} if content_type else {})
    response = httpx.post(proxy.v1 + "/moderations", content=b'{"model": "mock/m", "input": "x"}', headers=headers, timeout=10)
    assert response.status_code == status, response.text
    row = proxy.log.wait_row(response.headers["x-study-request-id"])
    assert row["status_code"] == status


def test_a_multipart_post_needs_a_key_header_while_there_are_no_proxy_keys(proxy):
    files = {"file": ("a.wav", b"RIFF", "audio/wav")}
    response = httpx.post(proxy.v1 + "/audio/transcriptions", data={"model": "mock/whisper"}, files=files, timeout=10)
    assert response.status_code == 401
    assert assert_error_shape(response.json())["code"] == "missing_api_key"
    assert proxy.log.wait_row(response.headers["x-study-request-id"])["status_code"] == 401
    response = httpx.post(proxy.v1 + "/audio/transcriptions", data={"model": "mock/whisper"}, files=files, timeout=10,
                          headers={"Authorization": "Bearer anything"})
    assert response.status_code != 401  # forwarded (the mock serves no transcriptions: 404)


def test_an_empty_post_without_content_type_needs_a_key_header(proxy):
    response = httpx.post(proxy.v1 + "/batches/batch_1/cancel", timeout=10)
    assert response.status_code == 401
    response = httpx.post(proxy.v1 + "/batches/batch_1/cancel", timeout=10, headers={"api-key": "x"})
    assert response.status_code not in (401, 415)


# --- /ui/ behind proxy keys --------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed(module_proxy_factory):
    return module_proxy_factory(env={"ALICE_KEY": CLIENT_KEY}, config=KEYS, ui=True)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize("path", ["/ui/", "/ui/log", "/ui/log.json?sql=select+1", "/ui/log/inference_runs.json"])
def test_ui_asks_for_a_proxy_key(keyed, path):
    for authorization in (None, basic("alice", "wrong"), "Bearer wrong", basic(CLIENT_KEY, ""), "Basic !!!"):
        headers = {"Authorization": authorization} if authorization else {}
        response = httpx.get(keyed.url + path, headers=headers, timeout=10)
        assert response.status_code == 401, (authorization, response.text)
        assert response.headers["www-authenticate"] == 'Basic realm="Study Query LLM", charset="UTF-8"'
        assert_error_shape(response.json())
        assert CLIENT_KEY not in response.text
    for authorization in (basic("anyone", CLIENT_KEY), basic("", CLIENT_KEY), f"Bearer {CLIENT_KEY}"):
        response = httpx.get(keyed.url + path, headers={"Authorization": authorization}, timeout=10)
        assert response.status_code == 200, (authorization, response.text[:300])


def test_metrics_take_the_same_credentials(keyed):
    assert httpx.get(keyed.url + "/metrics", timeout=10).status_code == 401
    for authorization in (basic("prometheus", CLIENT_KEY), f"Bearer {CLIENT_KEY}"):
        response = httpx.get(keyed.url + "/metrics", headers={"Authorization": authorization}, timeout=10)
        assert response.status_code == 200, response.text[:300]


def test_ui_without_proxy_keys_is_open_as_before(proxy):
    assert httpx.get(proxy.url + "/ui/", timeout=10).status_code == 200


def test_healthz_needs_no_key(keyed):
    assert httpx.get(keyed.url + "/healthz", timeout=10).status_code == 200


def test_no_key_reached_the_log_or_the_output(keyed):
    keyed.stop_ok()
    for path in keyed.directory.rglob("*"):
        if path.is_file() and path.name != "config.toml":
            assert CLIENT_KEY.encode() not in path.read_bytes(), path.name


# --- listening beyond loopback -----------------------------------------------------------------


def serve(tmp_path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "proxy", "serve", "--no-ui", "--db", str(tmp_path / "log.db"), *args],
        cwd=tmp_path, env=minimal_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def test_serve_on_every_interface_without_keys_refuses_to_start(tmp_path):
    port = free_port()
    process = serve(tmp_path, "--host", "0.0.0.0", "--port", str(port))
    _, err = process.communicate(timeout=30)
    assert process.returncode == 2
    assert b"refusing to listen on 0.0.0.0" in err and b"--allow-open" in err and b"[clients]" in err
    assert not (tmp_path / "log.db").exists()  # stopped before anything was opened or bound


def test_allow_open_zero_still_refuses(tmp_path):
    process = serve(tmp_path, "--host", "0.0.0.0", "--port", str(free_port()), env={"STUDY_ALLOW_OPEN": "0"})
    assert process.wait(30) == 2


@pytest.mark.parametrize("how", ["flag", "env"])
def test_allow_open_starts_and_serves_its_own_address(tmp_path, how):
    port = free_port()
    args = ["--host", "127.0.0.2", "--port", str(port)] + (["--allow-open"] if how == "flag" else [])
    process = serve(tmp_path, *args, env={"STUDY_ALLOW_OPEN": "1"} if how == "env" else None)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, process.communicate()
            try:
                response = httpx.get(f"http://127.0.0.2:{port}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the proxy did not start"
                time.sleep(0.1)
        assert response.status_code == 200  # Host 127.0.0.2: the bound address is allowed
    finally:
        process.terminate()
        process.communicate(timeout=15)


# --- Azure deployments that would be path segments ----------------------------------------------


@pytest.fixture(scope="module")
def azure(module_proxy_factory, fake_upstream_server):
    return module_proxy_factory(env=provider_env(fake_upstream_server, azure=fake_key("azure-test")))


@pytest.mark.parametrize("deployment", ["..", ".", "%2E%2E", "%2e", "a%2Fb", "a/b", "..%2F..", "a/../b"])
def test_an_inbound_deployment_that_is_a_dot_segment_or_holds_a_slash_is_400(azure, upstream, deployment):
    path = f"/openai/deployments/{deployment}/chat/completions?api-version=2024-10-21"
    response = exchange(azure.port, build("POST", path, f"127.0.0.1:{azure.port}", [(b"Content-Type", b"application/json")],
                                          b'{"messages": [{"role": "user", "content": "hi"}]}'))
    assert response is not None and response.status == 400, response
    assert assert_error_shape(response.json())["code"] == "invalid_deployment"
    row = azure.log.wait_row(response.headers["x-study-request-id"])
    assert (row["status_code"], row["attempts"]) == (400, 0)
    assert upstream.requests == []


@pytest.mark.parametrize("model", ["azure/..", "azure/.", "azure/a/b", "azure/../openai/x"])
def test_a_routed_deployment_that_is_a_dot_segment_is_400(azure, upstream, model):
    response = httpx.post(azure.v1 + "/chat/completions", json={**CHAT, "model": model}, timeout=10)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_deployment"
    assert azure.log.wait_row(response.headers["x-study-request-id"])["status_code"] == 400
    assert upstream.requests == []


def test_a_configured_deployment_that_is_a_dot_segment_is_400(proxy_factory, fake_upstream_server, upstream):
    env = provider_env(fake_upstream_server, azure=fake_key("azure-test")) | {"AZURE_OPENAI_DEPLOYMENT": ".."}
    server = proxy_factory(env=env)
    response = httpx.post(server.v1 + "/chat/completions", json={**CHAT, "model": "gpt-4o"}, timeout=10)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_deployment"
    assert server.log.wait_row(response.headers["x-study-request-id"])["status_code"] == 400
    assert upstream.requests == []


def test_a_plain_deployment_still_works(azure, upstream):
    path = "/openai/deployments/gpt-4o-dep/chat/completions?api-version=2024-10-21"
    response = httpx.post(azure.url + path, json={"messages": [{"role": "user", "content": "hi"}]}, timeout=10)
    assert response.status_code == 200, response.text
    assert upstream.only().path.startswith("/openai/deployments/gpt-4o-dep/chat/completions")
