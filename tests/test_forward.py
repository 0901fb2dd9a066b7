"""The pieces of forwarding: path checks, endpoint names, forms and what the log keeps of a body."""

import httpx
import orjson
import pytest

from proxy import multipart
from proxy.bodies import LOG_CAP, ClientBody, logged_body
from proxy.config import load_settings
from proxy.errors import ProxyError
from proxy.forward import check_path, endpoint_name, own_path_error
from proxy.providers import build_providers


def form(fields: dict, files: dict | None = None) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://x/", data=fields, files=files or {"file": ("a.wav", b"RIFF\r\n--x", "audio/wav")})
    return request.read(), request.headers["content-type"]


@pytest.mark.parametrize("path, name", [
    ("moderations", "moderations"),
    ("audio/transcriptions", "audio/transcriptions"),
    ("files/file-abc", "files/{id}"),
    ("files/file-XjGxS3KTG0uNmNOK362iJua3/content", "files/{id}/content"),
    ("batches/batch_9f2c01/cancel", "batches/{id}/cancel"),
    ("fine_tuning/jobs/ftjob-abc123/events", "fine_tuning/jobs/{id}/events"),
    ("vector_stores/vs_1/files/file-2", "vector_stores/{id}/files/{id}"),
    ("fine_tuning/checkpoints/ft:gpt-4o-mini:org::ckpt-1/permissions", "fine_tuning/checkpoints/{id}/permissions"),
    ("../admin", "../admin"),  # refused later; the row shows what was asked
])
def test_endpoint_names_collapse_ids(path, name):
    assert endpoint_name(path, "POST") == name


@pytest.mark.parametrize("path", ["", "..", "files/..", "./files", "files//x", "/files", "files/", "a\\b",
                                  "files/%2e%2e", "files/a?b", "files/a#b", "files/a b", "http://evil.example/x"])
def test_paths_that_could_escape_are_refused(path):
    with pytest.raises(ProxyError) as caught:
        check_path(path)
    assert (caught.value.status_code, caught.value.code) == (400, "invalid_path")


@pytest.mark.parametrize("path", ["files", "files/file-abc123/content", "fine_tuning/checkpoints/ft:a:b::c/permissions"])
def test_plain_paths_pass(path):
    check_path(path)


def test_own_paths_no_route_took_are_405_or_404_and_others_are_forwarded():
    error = own_path_error("chat/completions", "DELETE", "/v1/chat/completions")
    assert (error.status_code, error.message) == (405, "Use POST for /v1/chat/completions, not DELETE.")
    assert own_path_error("chat/completions", "GET", "/v1/chat/completions") is None  # stored completions' list
    assert endpoint_name("chat/completions", "GET") == "chat/completions/list"
    assert own_path_error("models/openai/x", "DELETE", "/v1/models/openai/x").status_code == 405
    assert own_path_error("responses/resp_1/cancel", "PUT", "/v1/responses/resp_1/cancel").status_code == 405
    error = own_path_error("responses/resp_1/nothing", "GET", "/openai/v1/responses/resp_1/nothing")
    assert (error.status_code, error.code) == (404, "unknown_url")
    assert "/openai/v1/responses/resp_1/nothing" in error.message
    assert own_path_error("files", "GET", "/v1/files") is None
    assert own_path_error("modelsx", "GET", "/v1/modelsx") is None


def test_a_form_is_found_and_only_its_model_value_changes():
    body, content_type = form({"model": "openai/whisper-1", "language": "en"})
    parts = multipart.parse(body, content_type)
    assert [(p.name, p.filename, p.content_type) for p in parts] == [
        ("model", None, None), ("language", None, None), ("file", "a.wav", "audio/wav")]
    assert body[parts[2].start : parts[2].end] == b"RIFF\r\n--x"
    client = ClientBody(body, content_type)
    assert client.model() == "openai/whisper-1"
    sent = client.for_model("whisper-1")
    assert sent == body.replace(b"openai/whisper-1", b"whisper-1")
    assert ClientBody(sent, content_type).model() == "whisper-1"
    assert client.for_model("openai/whisper-1") is body


@pytest.mark.parametrize("body, content_type", [
    (b"garbage", "multipart/form-data; boundary=xyz"),
    (b"--xyz\r\ncontent-disposition: form-data; name=a\r\n\r\nno end", "multipart/form-data; boundary=xyz"),
    (b"--xyz--", "multipart/form-data"),
])
def test_malformed_forms_are_400(body, content_type):
    with pytest.raises(ProxyError) as caught:
        ClientBody(body, content_type).model()
    assert (caught.value.status_code, caught.value.code) == (400, "invalid_body")
    assert orjson.loads(ClientBody(body, content_type).logged()[0]) == {"content_type": "multipart/form-data", "bytes": len(body)}


def test_the_log_keeps_a_form_without_its_files():
    body, content_type = form({"model": "m", "prompt": "p" * 5000}, {"file": ("clip.mp3", b"\xff" * 300, "audio/mpeg")})
    logged, note = ClientBody(body, content_type).logged()
    assert note is None
    assert orjson.loads(logged) == {
        "content_type": "multipart/form-data", "bytes": len(body),
        "fields": {"model": "m", "prompt": "p" * 1024},
        "files": [{"field": "file", "filename": "clip.mp3", "content_type": "audio/mpeg", "bytes": 300}],
    }


def test_json_bodies_get_the_upstream_model_and_no_type_means_json():
    body = ClientBody(b'{"model": "openai/tts-1", "input": "hi"}', "")
    assert orjson.loads(body.for_model("tts-1")) == {"model": "tts-1", "input": "hi"}
    assert ClientBody(b'{"input": "hi"}', "application/json").for_model("") == b'{"input": "hi"}'
    with pytest.raises(ProxyError):
        ClientBody(b"{nope", "").model()
    assert ClientBody(b"", "application/json").model() is None


def test_the_log_caps_text_and_keeps_only_type_and_size_of_bytes():
    assert logged_body(b"", "application/json", "response_json") == (None, None)
    big = b'{"a": "' + b"x" * LOG_CAP + b'"}'
    text, note = logged_body(big, "application/json; charset=utf-8", "response_json")
    assert len(text) == LOG_CAP and note == f"response_json was cut to its first {LOG_CAP} bytes, of {len(big)}"
    assert logged_body(b"hello", "text/plain", "response_json") == ("hello", None)
    text, note = logged_body(b"\x00" * 10, "audio/mpeg", "response_json")
    assert orjson.loads(text) == {"content_type": "audio/mpeg", "bytes": 10} and note is None


def test_forwarded_urls_stay_under_each_base_url():
    providers = build_providers(load_settings(env={
        "OPENAI_API_KEY": "op-key", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
        "AZURE_OPENAI_API_KEY": "az-key", "AZURE_OPENAI_ENDPOINT": "https://res.example.com/",
    }))
    request = providers["openai"].forward("GET", "files", "purpose=batch", {"accept": "application/json"}, b"")
    assert (request.url, request.headers["authorization"]) == ("http://127.0.0.1:9/v1/files?purpose=batch", "Bearer op-key")
    request = providers["azure"].forward("POST", "audio/speech", "", {}, b"{}")
    assert request.url == "https://res.example.com/openai/v1/audio/speech"
    assert request.headers == {"api-key": "az-key"}
    assert providers["mock"].forward("POST", "moderations", "", {}, b"{}").url == "mock:///v1/moderations"


def test_endpoint_names_fit_the_column():
    assert len(endpoint_name("a/" * 100, "GET")) == 64
