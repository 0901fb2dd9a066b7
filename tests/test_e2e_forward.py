"""Every other `/v1/*` endpoint end to end: forwarded to the provider that the body's `model` routes
to (the default one without a model), through the real openai SDK, with a row each.

One proxy for the module: OpenAI (the default), Azure, a configured `local` provider, an
unreachable `dead` one and an alias that falls back from `dead` to OpenAI; proxy keys on; a
small body limit. Raw httpx (and http.client, which sends `..` as it is) drive the attempts
to leave the provider's base URL.
"""

from __future__ import annotations

import json
import uuid
from http.client import HTTPConnection

import httpx
import openai
import pytest
from openai import OpenAI

from conftest import assert_error_shape, fake_key, free_port, loads, provider_env, unique
from fake_endpoints import SPEECH, transcription_text

from proxy.bodies import LOG_CAP

pytestmark = pytest.mark.timeout(60)

OPENAI_KEY = fake_key("sk-test-openai")
AZURE_KEY = fake_key("azure-test")
LOCAL_KEY = fake_key("local-test")
ALICE_KEY = fake_key("sk-proxy-alice")
COOKIE_SECRET = fake_key("cookie-secret")
SECRETS = (OPENAI_KEY, AZURE_KEY, LOCAL_KEY, ALICE_KEY, COOKIE_SECRET)
LIMIT = 200_000

CONFIG = """
[server]
max_body_bytes = {limit}

[retry]
backoff_base = 0.01
backoff_max = 0.02

[providers.local]
base_url = "{base}/local/v1"
api_key_env = "LOCAL_KEY"

[providers.dead]
base_url = "http://127.0.0.1:{dead_port}/v1"
no_key = true

[aliases]
transcriber = ["dead/whisper-1", "openai/whisper-1"]

[clients]
alice = {{ key_env = "ALICE_PROXY_KEY" }}
"""


@pytest.fixture(scope="module")
def proxy(module_proxy_factory, fake_upstream_server):
    env = provider_env(fake_upstream_server, openai=OPENAI_KEY, azure=AZURE_KEY, LOCAL_KEY=LOCAL_KEY,
                       ALICE_PROXY_KEY=ALICE_KEY)
    config = CONFIG.format(limit=LIMIT, base=fake_upstream_server.base_url, dead_port=free_port())
    return module_proxy_factory(env=env, config=config)


@pytest.fixture
def client(proxy) -> OpenAI:
    return OpenAI(base_url=proxy.v1, api_key=ALICE_KEY, max_retries=0, timeout=10)


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


# -- forwarded and recorded ------------------------------------------------------------------


def test_moderations_go_where_the_model_routes_and_are_recorded(proxy, client, upstream):
    raw = client.moderations.with_raw_response.create(model="openai/omni-moderation-latest", input="is this fine?")
    assert raw.parse().results[0].flagged is False
    assert raw.headers["x-study-provider"] == "openai"
    sent = upstream.only()
    assert (sent.method, sent.path) == ("POST", "/v1/moderations")
    assert sent.json == {"model": "omni-moderation-latest", "input": "is this fine?"}
    assert sent.headers["content-type"] == "application/json"
    assert_operator_auth(sent)
    assert raw.headers["x-request-id"] == sent.request_id  # upstream headers pass through

    row = row_of(proxy, raw)
    assert row["endpoint"] == "moderations"
    assert (row["provider"], row["model"], row["upstream_model"]) == ("openai", "openai/omni-moderation-latest",
                                                                     "omni-moderation-latest")
    assert (row["status_code"], row["error"], row["attempts"], row["stream"]) == (200, None, 1, 0)
    assert row["client"] == "alice"
    assert row["prompt"] == "is this fine?"
    assert loads(row["request_json"]) == {"model": "openai/omni-moderation-latest", "input": "is this fine?"}
    assert loads(row["response_json"])["results"][0]["flagged"] is False
    assert row["metadata"] is None  # no "no usage" note: moderations report none
    assert row["total_tokens"] is None and row["cost_usd"] is None
    assert 0 < row["latency_ms"] < 10_000
    assert attempts_of(proxy, row) == [("openai", "/v1/moderations", 200)]


def test_images_with_a_bare_model_go_to_the_default_provider(proxy, client, upstream):
    raw = client.images.with_raw_response.generate(model="dall-e-3", prompt="a red fox")
    assert raw.parse().data[0].revised_prompt == "a red fox"
    sent = upstream.only()
    assert sent.path == "/v1/images/generations"
    assert sent.json["model"] == "dall-e-3"
    row = row_of(proxy, raw)
    assert (row["endpoint"], row["provider"], row["model"], row["upstream_model"]) == (
        "images/generations", "openai", "dall-e-3", "dall-e-3")


def test_speech_comes_back_as_bytes_and_is_logged_as_type_and_size(proxy, client, upstream):
    raw = client.audio.speech.with_raw_response.create(model="openai/tts-1", voice="alloy", input="say hi")
    assert raw.content == SPEECH
    assert raw.headers["content-type"] == "audio/mpeg"
    assert upstream.only().json == {"model": "tts-1", "voice": "alloy", "input": "say hi"}
    row = row_of(proxy, raw)
    assert (row["endpoint"], row["upstream_model"], row["status_code"]) == ("audio/speech", "tts-1", 200)
    assert loads(row["response_json"]) == {"content_type": "audio/mpeg", "bytes": len(SPEECH)}
    assert loads(row["request_json"])["input"] == "say hi"
    assert row["response"] is None


def test_transcription_form_gets_the_upstream_model_and_the_file_reaches_it(proxy, client, upstream):
    marker = uuid.uuid4().hex.encode()
    audio = b"RIFF" + marker + bytes(range(256)) * 40 + b"\r\n--not-a-boundary\r\n"
    raw = client.audio.transcriptions.with_raw_response.create(
        file=("clip.wav", audio, "audio/wav"), model="openai/whisper-1", language="en"
    )
    assert raw.parse().text == transcription_text("clip.wav", len(audio))
    sent = upstream.only()
    assert sent.path == "/v1/audio/transcriptions"
    assert sent.form == {"model": "whisper-1", "language": "en"}
    assert sent.files == {"file": ("clip.wav", "audio/wav", audio)}
    assert sent.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert_operator_auth(sent)

    row = row_of(proxy, raw)
    assert (row["endpoint"], row["provider"], row["model"], row["upstream_model"]) == (
        "audio/transcriptions", "openai", "openai/whisper-1", "whisper-1")
    logged = loads(row["request_json"])
    assert logged == {
        "content_type": "multipart/form-data",
        "bytes": len(sent.raw_body) + len("openai/"),  # the client's form; upstream's lost the prefix
        "fields": {"model": "openai/whisper-1", "language": "en"},
        "files": [{"field": "file", "filename": "clip.wav", "content_type": "audio/wav", "bytes": len(audio)}],
    }
    assert loads(row["response_json"]) == {"text": transcription_text("clip.wav", len(audio))}
    log_files = [p for p in proxy.directory.glob("log.db*") if p.is_file()] + list(proxy.directory.glob("log.db.journal/*"))
    assert marker not in b"".join(p.read_bytes() for p in log_files)  # the database, its WAL and the journal


def test_a_form_to_an_alias_falls_back_with_the_model_rewritten_on_each_route(proxy, client, upstream):
    raw = client.audio.transcriptions.with_raw_response.create(file=("a.mp3", b"ID3 tiny", "audio/mpeg"),
                                                               model="transcriber")
    assert raw.parse().text == transcription_text("a.mp3", 8)
    assert upstream.only().form["model"] == "whisper-1"
    row = row_of(proxy, raw)
    assert (row["provider"], row["model"], row["upstream_model"], row["status_code"]) == (
        "openai", "transcriber", "whisper-1", 200)
    attempts = proxy.log.attempts(row["request_id"])
    assert [(a["provider"], a["status_code"]) for a in attempts] == [("dead", None)] * 3 + [("openai", 200)]
    assert all(a["error"] for a in attempts[:3])
    assert row["attempts"] == 4


def test_files_without_a_model_go_to_the_default_provider_with_their_query(proxy, client, upstream):
    raw = client.files.with_raw_response.list(purpose="batch")
    assert [f.id for f in raw.parse()] == ["file-abc123"]
    sent = upstream.only()
    assert (sent.method, sent.path, sent.query, sent.raw_body) == ("GET", "/v1/files", "purpose=batch", b"")
    assert_operator_auth(sent)
    row = row_of(proxy, raw)
    assert (row["endpoint"], row["provider"], row["model"], row["upstream_model"]) == ("files", "openai", None, None)
    assert row["request_json"] is None
    assert attempts_of(proxy, row) == [("openai", "/v1/files", 200)]


def test_ids_in_the_path_are_collapsed_in_the_endpoint(proxy, client, upstream):
    raws = [
        client.files.with_raw_response.retrieve("file-abc123"),
        client.files.with_raw_response.delete("file-abc123"),
        client.batches.with_raw_response.cancel("batch_9f2c01"),
    ]
    assert [(r.method, r.path) for r in upstream.requests] == [
        ("GET", "/v1/files/file-abc123"), ("DELETE", "/v1/files/file-abc123"), ("POST", "/v1/batches/batch_9f2c01/cancel")]
    assert [row_of(proxy, raw)["endpoint"] for raw in raws] == ["files/{id}", "files/{id}", "batches/{id}/cancel"]


def test_azure_gets_its_v1_surface_with_its_key(proxy, client, upstream):
    raw = client.moderations.with_raw_response.create(model="azure/moderation-dep", input="azure, please")
    sent = upstream.only()
    assert sent.path == "/openai/v1/moderations"
    assert sent.headers["api-key"] == AZURE_KEY
    assert "authorization" not in sent.headers
    assert sent.json["model"] == "moderation-dep"
    row = row_of(proxy, raw)
    assert (row["provider"], row["upstream_model"]) == ("azure", "moderation-dep")


def test_a_configured_provider_by_prefix(proxy, client, upstream):
    client.moderations.create(model="local/guard", input="local?")
    sent = upstream.only()
    assert (sent.path, sent.json["model"], sent.headers["authorization"]) == (
        "/local/v1/moderations", "guard", f"Bearer {LOCAL_KEY}")


def test_azure_v1_inbound_paths_are_forwarded_the_same(proxy, upstream):
    v1 = OpenAI(base_url=proxy.url + "/openai/v1", api_key=ALICE_KEY, max_retries=0, timeout=10)
    raw = v1.moderations.with_raw_response.create(model="openai/omni-moderation-latest", input="via azure v1")
    assert raw.parse().id == "modr-fake"
    sent = upstream.only()
    assert (sent.path, sent.json["model"]) == ("/v1/moderations", "omni-moderation-latest")
    assert_operator_auth(sent)
    assert row_of(proxy, raw)["endpoint"] == "moderations"
    response = httpx.get(proxy.url + "/openai/v1/chat/completions", headers={"api-key": ALICE_KEY}, timeout=10)
    assert response.status_code == 405
    assert "/openai/v1/chat/completions" in assert_error_shape(response.json())["message"]


# -- retries and upstream errors -------------------------------------------------------------


def test_retries_apply_with_an_attempt_row_each(proxy, client, upstream):
    model = unique("fail-503-twice")
    raw = client.moderations.with_raw_response.create(model=model, input="again")
    assert raw.parse().id == "modr-fake"
    assert upstream.count(model) == 3
    row = row_of(proxy, raw)
    assert (row["status_code"], row["attempts"]) == (200, 3)
    assert attempts_of(proxy, row) == [("openai", "/v1/moderations", s) for s in (503, 503, 200)]


def test_upstream_error_passes_through_unchanged(proxy, client, upstream):
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(model="fail-400-images", prompt="no")
    assert caught.value.body["code"] == "fake_bad_request"
    row = proxy.log.wait_row(caught.value.response.headers["x-study-request-id"])
    assert (row["status_code"], row["error"], row["attempts"]) == (400, "Fake upstream rejects model fail-400-images.", 1)


def test_unreachable_provider_is_502_after_retries_without_sdk_retry(proxy, http, upstream):
    response = http.post("/moderations", json={"model": "dead/omni-moderation-latest", "input": "x"})
    assert response.status_code == 502
    assert assert_error_shape(response.json())["code"] == "upstream_unreachable"
    assert response.headers["x-should-retry"] == "false"
    row = proxy.log.wait_row(response.headers["x-study-request-id"])
    assert (row["status_code"], row["provider"], row["attempts"]) == (502, "dead", 3)


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
    ("GET", "/chat/completions"), ("PUT", "/embeddings"), ("POST", "/models"),
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


# -- the mock, and secrets -------------------------------------------------------------------


def test_the_mock_moderates_and_says_what_it_does_not_serve(proxy_factory, upstream):
    mock_only = proxy_factory()
    client = OpenAI(base_url=mock_only.v1, api_key="unused", max_retries=0, timeout=10)
    raw = client.moderations.with_raw_response.create(input=["one", "two"])
    assert [r.flagged for r in raw.parse().results] == [False, False]
    row = row_of(mock_only, raw)
    assert (row["endpoint"], row["provider"], row["status_code"]) == ("moderations", "mock", 200)
    with pytest.raises(openai.NotFoundError) as caught:
        client.audio.transcriptions.create(file=("a.wav", b"RIFF", "audio/wav"), model="whisper-1")
    assert caught.value.code == "unknown_url"
    assert "mock provider does not serve POST /v1/audio/transcriptions" in caught.value.message
    row = mock_only.log.wait_row(caught.value.response.headers["x-study-request-id"])
    assert (row["provider"], row["model"], row["status_code"], row["attempts"]) == ("mock", "whisper-1", 404, 1)
    assert upstream.requests == []


def test_no_key_is_written_anywhere(proxy):
    proxy.log.wait_count(1)
    written = proxy.output().encode()
    for path in proxy.directory.iterdir():
        if path.is_file():
            written += path.read_bytes()
    for secret in SECRETS:
        assert secret.encode() not in written
    assert "Traceback" not in proxy.output()
