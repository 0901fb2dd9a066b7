"""Headers and bodies on the forwarded `/v1/*` endpoints end to end: what goes upstream and what
is logged (safe headers only, large bodies whole upstream and capped in the log, binary uploads as
type and size), and what is refused before any upstream call, each with a row.

The module's proxy is forward_setup.py's. Raw httpx (and http.client, which sends `..` as it is)
drive the attempts to leave the provider's base URL.
"""

from __future__ import annotations

import json
from http.client import HTTPConnection

import httpx
import pytest

from conftest import assert_error_shape, loads
from forward_setup import COOKIE_SECRET, LIMIT, assert_no_key_written, assert_operator_auth, check_refused
from forward_setup import http, proxy  # noqa: F401  (the module's fixtures)
from provider_setup import ALICE_KEY

from proxy.bodies import LOG_CAP

pytestmark = pytest.mark.timeout(60)


# -- what goes upstream, what is logged ------------------------------------------------------


def test_only_safe_headers_go_upstream(proxy, upstream):
    response = httpx.post(
        proxy.v1 + "/moderations",
        json={"model": "omni-moderation-latest", "input": "headers"},
        headers={"Authorization": f"Bearer {ALICE_KEY}", "api-key": ALICE_KEY, "Cookie": f"session={COOKIE_SECRET}",
                 "OpenAI-Beta": "assistants=v2", "X-Forwarded-Host": "evil.example", "X-Custom": "mine",
                 "OpenAI-Organization": "org-client"},
        timeout=10,
    )
    assert response.status_code == 200
    sent = upstream.only()
    assert sent.headers["openai-beta"] == "assistants=v2"
    assert sent.headers["host"] == f"127.0.0.1:{upstream.port}"
    for name in ("cookie", "x-forwarded-host", "x-custom", "openai-organization", "api-key"):
        assert name not in sent.headers, name
    assert_operator_auth(sent)
    row = proxy.log.wait_row(response.headers["x-study-request-id"])
    assert COOKIE_SECRET not in row["request_headers"] and ALICE_KEY not in row["request_headers"]


def test_a_large_json_body_is_forwarded_whole_and_logged_capped(proxy, http, upstream):
    body = json.dumps({"model": "omni-moderation-latest", "input": "x" * 100_000})
    response = http.post("/moderations", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200
    assert upstream.only().raw_body == body.encode()  # the model was bare: the client's bytes as they were
    row = proxy.log.wait_row(response.headers["x-study-request-id"])
    assert row["request_json"] == body[:LOG_CAP]
    notes = loads(row["metadata"])["study_notes"]
    assert f"request_json was cut to its first {LOG_CAP} bytes, of {len(body)}" in notes


def test_a_large_answer_is_passed_whole_and_logged_capped(proxy, http, upstream):
    response = http.get("/fake/echo", params={"pad": 100_000})
    assert response.status_code == 200
    assert len(response.json()["pad"]) == 100_000
    row = proxy.log.wait_row(response.headers["x-study-request-id"])
    assert row["endpoint"] == "fake/echo"
    assert row["response_json"] == response.content[:LOG_CAP].decode()
    notes = loads(row["metadata"])["study_notes"]
    assert f"response_json was cut to its first {LOG_CAP} bytes, of {len(response.content)}" in notes


def test_a_binary_upload_is_logged_as_type_and_size(proxy, http, upstream):
    data = bytes(range(256)) * 10
    response = http.post("/uploads/upload_abc123/parts", content=data, headers={"content-type": "application/octet-stream"})
    assert response.status_code == 200
    assert upstream.only().raw_body == data
    row = proxy.log.wait_row(response.headers["x-study-request-id"])
    assert row["endpoint"] == "uploads/{id}/parts"
    assert loads(row["request_json"]) == {"content_type": "application/octet-stream", "bytes": len(data)}


# -- refused, each with a row ----------------------------------------------------------------

def test_invalid_json_is_400_with_the_body_in_the_row(proxy, http, upstream):
    response = http.post("/moderations", content="{nope", headers={"content-type": "application/json"})
    _, row = check_refused(proxy, upstream, response, 400, "invalid_json", "moderations")
    assert row["request_json"] == "{nope"


def test_body_over_the_limit_is_413(proxy, http, upstream):
    response = http.post("/moderations", json={"model": "m", "input": "y" * (LIMIT + 10)})
    check_refused(proxy, upstream, response, 413, "request_too_large", "moderations")


@pytest.mark.parametrize("model, code", [(42, "invalid_type"), ("", "invalid_value"), (["m"], "invalid_type")])
def test_a_model_of_the_wrong_kind_is_400(proxy, http, upstream, model, code):
    body = {"model": model, "input": "x"}
    error, row = check_refused(proxy, upstream, http.post("/moderations", json=body), 400, code)
    assert error["param"] == "model"
    assert loads(row["request_json"]) == body


def test_a_provider_without_a_key_is_404_with_the_model_and_body_in_the_row(proxy, http, upstream):
    body = {"model": "hyperbolic/llama-guard", "input": "x"}
    error, row = check_refused(proxy, upstream, http.post("/moderations", json=body), 404, "model_not_found")
    assert row["model"] == "hyperbolic/llama-guard"
    assert loads(row["request_json"]) == body


def test_a_malformed_form_is_400(proxy, http, upstream):
    response = http.post("/audio/transcriptions", content=b"garbage", headers={"content-type": "multipart/form-data; boundary=xyz"})
    _, row = check_refused(proxy, upstream, response, 400, "invalid_body", "audio/transcriptions")
    assert loads(row["request_json"]) == {"content_type": "multipart/form-data", "bytes": 7}


def test_no_proxy_key_is_401_with_a_row(proxy, upstream):
    response = httpx.get(proxy.v1 + "/files", timeout=10)
    check_refused(proxy, upstream, response, 401, "invalid_api_key", "files")


RAW_PATHS = [
    "/v1/%2e%2e/%2e%2e/secret",
    "/v1/files/..%2F..%2Fsecret",
    "/v1/files/%2E%2E/secret",
    "/v1//evil.example/v1/files",
    "/v1/http://evil.example/v1/files",
    "/v1/files%5C..%5Csecret",
    "/v1/files/%252e%252e/secret",
    "/v1/files/a%3Fb",
    "/v1/",
]


@pytest.mark.parametrize("raw_path", RAW_PATHS)
def test_paths_that_could_leave_the_base_url_are_400(proxy, upstream, raw_path):
    url = httpx.URL(proxy.url, raw_path=raw_path.encode())
    response = httpx.get(url, headers={"Authorization": f"Bearer {ALICE_KEY}"}, timeout=10)
    check_refused(proxy, upstream, response, 400, "invalid_path")


@pytest.mark.parametrize("path", ["/v1/../admin", "/v1/files/../../secret", "/v1/./files"])
def test_literal_dot_segments_are_400(proxy, upstream, path):
    conn = HTTPConnection("127.0.0.1", proxy.port, timeout=10)  # sends the path as it is
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {ALICE_KEY}"})
        answer = conn.getresponse()
        body, request_id = json.loads(answer.read()), answer.getheader("x-study-request-id")
    finally:
        conn.close()
    assert answer.status == 400
    assert assert_error_shape(body)["code"] == "invalid_path"
    assert proxy.log.wait_row(request_id)["status_code"] == 400
    assert upstream.requests == []


@pytest.mark.parametrize("method, path", [
    ("DELETE", "/chat/completions"), ("PUT", "/embeddings"), ("POST", "/models"),
    ("DELETE", "/models/openai/gpt-4o-mini"), ("GET", "/responses"), ("PUT", "/responses/resp_1"),
])
def test_the_proxys_own_paths_keep_their_405(proxy, http, upstream, method, path):
    error, _ = check_refused(proxy, upstream, http.request(method, path), 405, "method_not_allowed")
    assert method in error["message"]


def test_no_such_endpoint_under_the_proxys_own_paths_is_404(proxy, http, upstream):
    check_refused(proxy, upstream, http.get("/responses/resp_1/nothing"), 404, "unknown_url")


def test_a_method_that_is_not_forwarded_is_405(proxy, http, upstream):
    response = http.request("OPTIONS", "/files")
    check_refused(proxy, upstream, response, 405, "method_not_allowed", "files")


def test_no_key_is_written_anywhere(proxy):
    """Last in the module: nothing above left a key in what the proxy wrote."""
    assert_no_key_written(proxy)
