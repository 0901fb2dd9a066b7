"""Every other `/v1/*` endpoint end to end: forwarded to the provider that the body's `model` routes
to (the default one without a model), through the real openai SDK, with a row each.

One proxy for the module: OpenAI (the default), Azure, a configured `local` provider, an
unreachable `dead` one and an alias that falls back from `dead` to OpenAI; proxy keys on; a
small body limit (forward_setup.py). Headers, bodies and what is refused:
test_e2e_forward_bodies.py.
"""

from __future__ import annotations

import uuid

import httpx
import openai
import pytest
from openai import OpenAI

from conftest import assert_error_shape, loads, unique
from fake_endpoints import SPEECH, transcription_text
from forward_setup import assert_no_key_written, assert_operator_auth, attempts_of, row_of
from forward_setup import client, http, proxy  # noqa: F401  (the module's fixtures)
from provider_setup import ALICE_KEY, AZURE_KEY, LOCAL_KEY, sdk_client

pytestmark = pytest.mark.timeout(60)


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


def test_stored_chat_completions_are_listed_by_the_default_provider(proxy, client, upstream):
    """`GET /v1/chat/completions` (the SDK's `chat.completions.list()`) is OpenAI's, not a wrong method."""
    page = client.chat.completions.with_raw_response.list(limit=5)
    assert [c.id for c in page.parse()] == ["chatcmpl-stored1"]
    sent = upstream.only()
    assert (sent.method, sent.path, sent.query) == ("GET", "/v1/chat/completions", "limit=5")
    assert_operator_auth(sent)
    row = row_of(proxy, page)
    assert (row["endpoint"], row["provider"], row["status_code"], row["prompt"]) == ("chat/completions/list", "openai", 200, None)


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
    response = httpx.delete(proxy.url + "/openai/v1/chat/completions", headers={"api-key": ALICE_KEY}, timeout=10)
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


# -- the mock, and secrets -------------------------------------------------------------------


def test_the_mock_moderates_and_says_what_it_does_not_serve(proxy_factory, upstream):
    mock_only = proxy_factory()
    client = sdk_client(mock_only, "unused")
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
    """Last in the module: nothing above left a key in what the proxy wrote."""
    assert_no_key_written(proxy)
