"""Forwarded answers that are not short text are relayed as they arrive (proxy/body_relay.py):
speech is heard while it is generated, a large file passes without the proxy holding it, an
upstream that breaks off mid-body breaks the client off too, and each call has its row with
the content type and size.

The module's proxy is forward_setup.py's; the fake upstream drips `drip-*` speech and serves
`GET …/files/{id}/content?bytes=N[&gap=S][&cut=K]` (tests/fake_endpoints.py).
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from fake_endpoints import FILE_BYTE, SPEECH, SPEECH_CHUNKS, SPEECH_GAP
from forward_setup import client, http, proxy  # noqa: F401  (the module's fixtures)

pytestmark = pytest.mark.timeout(60)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(next(line for line in status if line.startswith("VmRSS:")).split()[1]) * 1024


def test_speech_is_heard_while_it_is_generated(proxy, client):
    started = time.monotonic()
    with client.audio.speech.with_streaming_response.create(model="drip-tts", voice="alloy", input="Hello there") as answer:
        assert answer.headers["content-length"] == str(len(SPEECH))
        request_id = answer.headers["x-study-request-id"]
        pieces = []
        for piece in answer.iter_bytes():
            pieces.append((time.monotonic() - started, piece))
    first_at, ended_at = pieces[0][0], time.monotonic() - started
    generation = (SPEECH_CHUNKS - 1) * SPEECH_GAP
    assert b"".join(piece for _, piece in pieces) == SPEECH
    assert ended_at >= generation
    assert first_at < generation / 2, (first_at, ended_at)  # not held until the upstream finished
    row = proxy.log.wait_row(request_id)
    assert (row["endpoint"], row["status_code"], row["error"]) == ("audio/speech", 200, None)
    assert json.loads(row["response_json"]) == {"content_type": "audio/mpeg", "bytes": len(SPEECH)}


def test_a_large_file_is_relayed_without_being_held(proxy, http):
    size = 64 << 20
    pid = proxy.process.pid
    before = peak = rss_bytes(pid)
    received = 0
    with http.stream("GET", "/files/file-big/content", params={"bytes": size}) as answer:
        assert answer.status_code == 200 and answer.headers["content-length"] == str(size)
        request_id = answer.headers["x-study-request-id"]
        for piece in answer.iter_raw(1 << 20):
            assert set(piece) == set(FILE_BYTE)
            received += len(piece)
            peak = max(peak, rss_bytes(pid))
    assert received == size
    assert peak - before < 24 << 20, f"the proxy grew by {(peak - before) >> 20} MiB relaying a 64 MiB file"
    row = proxy.log.wait_row(request_id)
    assert (row["endpoint"], row["status_code"], row["error"]) == ("files/{id}/content", 200, None)
    assert json.loads(row["response_json"]) == {"content_type": "application/octet-stream", "bytes": size}


def test_an_upstream_that_breaks_off_mid_body_cuts_the_client_off_too(proxy, http):
    with http.stream("GET", "/files/file-cut/content", params={"bytes": 1_000_000, "cut": 300_000}) as answer:
        request_id = answer.headers["x-study-request-id"]
        with pytest.raises(httpx.RemoteProtocolError):  # a cut file never looks complete
            for _ in answer.iter_raw():
                pass
    row = proxy.log.wait_row(request_id)
    assert row["status_code"] == 200 and "upstream broke off after 300000 bytes" in row["error"]
    assert json.loads(row["response_json"]) == {"content_type": "application/octet-stream", "bytes": 300_000}
    assert http.get("/files").status_code == 200  # the proxy carries on
    assert "the client's connection is cut" in proxy.output()  # said once, as what it is:
    assert "without completing response" not in proxy.output()  # not as an error of the app


def test_a_client_that_leaves_mid_body_leaves_a_row(proxy, http):
    with http.stream("GET", "/files/file-slow/content", params={"bytes": 4 << 20, "gap": 0.05}) as answer:
        request_id = answer.headers["x-study-request-id"]
        next(answer.iter_raw(1 << 16))
    row = proxy.log.wait_row(request_id)
    assert row["error"] == "client_disconnected"
    assert 0 < json.loads(row["response_json"])["bytes"] < 4 << 20


def test_short_json_answers_are_still_read_whole(proxy, http):
    answer = http.get("/files")
    assert answer.status_code == 200 and answer.json()["object"] == "list"
    assert answer.headers["content-length"] == str(len(answer.content))
    row = proxy.log.wait_row(answer.headers["x-study-request-id"])
    assert json.loads(row["response_json"])["object"] == "list"
