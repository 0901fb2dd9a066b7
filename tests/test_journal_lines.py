"""A journal line gives back exactly the rows its call would have had: the record's facts are
kept, and rendered again when the line is read back (after a crash, or rows that waited on disk).

Records of every kind made by the real handlers (the app called in-process, the mock provider),
and hand-made ones for what the handlers rarely make: each one's line, decoded, must equal its
own rows. Records whose facts cannot be kept exactly fall back to their rendered rows.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import httpx
import orjson
import pytest

from proxy.app import create_app
from proxy.config import load_settings
from proxy.config_sections import LogPolicy
from proxy.logrow import FIELDS, LAYOUT, LAYOUTS, decode, facts_of, flatten, journal_line
from proxy.pricing import Pricer
from proxy.record import CallRecord
from proxy.recorder import Recorder


def assert_round_trip(record: CallRecord, pricer: Pricer | None) -> bytes:
    line = journal_line(record)
    bad: list[bytes] = []
    assert decode([line], bad, pricer) == flatten([record.rows()]) and not bad, record.request_id
    return line


def test_every_kind_of_record_the_handlers_make_comes_back_the_same(tmp_path, monkeypatch):
    made: list[CallRecord] = []
    real_submit = Recorder.submit
    monkeypatch.setattr(Recorder, "submit", lambda self, record: made.append(record) or real_submit(self, record))
    settings = replace(load_settings(env={}, database_url=str(tmp_path / "log.db"), ui=False),
                       log=LogPolicy(durability="process"))
    chat = {"model": "mock/echo", "messages": [{"role": "user", "content": "hello ünïcode 😀"}], "user": "u1",
            "metadata": {"experiment": "e1"}}

    async def go() -> Pricer:
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as http:
                study = {"X-Study-Tags": "a,b", "X-Study-Session": "s1", "X-Study-Metadata": '{"k": 1}',
                         "Authorization": "Bearer sk-test-not-a-key"}
                await http.post("/v1/chat/completions", json=chat, headers=study)
                await http.post("/v1/chat/completions", json={**chat, "stream": True})
                await http.post("/v1/chat/completions", json=chat, headers={"X-Study-Cache": "on"})
                await http.post("/v1/chat/completions", json=chat, headers={"X-Study-Cache": "on"})  # a hit
                await http.post("/v1/completions", json={"model": "mock/echo", "prompt": "once upon"})
                await http.post("/v1/embeddings", json={"model": "mock/echo", "input": ["a", "b"]})
                await http.post("/v1/responses", json={"model": "mock/echo", "input": "hi"})
                await http.post("/v1/responses", json={"model": "mock/echo", "input": "hi", "stream": True})
                await http.post("/v1/chat/completions", json=chat, headers={"X-Study-Log": "meta"})
                await http.post("/v1/chat/completions", content=b"{broken", headers={"content-type": "application/json"})
                await http.post("/v1/chat/completions", json={"model": "nowhere/x", "messages": []})
                await http.post("/v1/nothing-here", json={})
        return app.api.pricer

    pricer = asyncio.run(go())
    assert len(made) >= 12
    for record in made:
        line = assert_round_trip(record, pricer)
        assert line.startswith(b'{"v":1,"facts":')  # the facts, not the rendered rows
        if record.payload_is_text:  # the body once, as its text: the payload is parsed from it on replay
            assert facts_of(orjson.loads(line))["payload"] is None and record.payload is not None
    assert sum(r.payload_is_text for r in made) >= 9
    assert b"sk-test-not-a-key" not in b"".join(journal_line(r) for r in made)


def record(**fields) -> CallRecord:
    r = CallRecord("chat/completions", model="mock/m", provider="mock", upstream_model="m")
    r.payload = {"model": "mock/m", "messages": [{"role": "user", "content": "q"}]}
    r.request_text = orjson.dumps(r.payload).decode()
    r.response_body = orjson.dumps({"choices": [{"message": {"content": "a"}}], "usage": {"total_tokens": 3}})
    r.begin_attempt("mock", "/chat/completions").finish(503, "upstream answered 503")
    r.begin_attempt("mock", "/chat/completions").finish(200)
    for name, value in fields.items():
        setattr(r, name, value)
    r.finish(200)
    return r


@pytest.mark.parametrize("fields", [
    {},
    {"notes": ["a note"], "tags": ["x"], "client": "alice", "study_metadata": {"deep": {"er": [1, 2.5, None]}}},
    {"status_code": 400, "response_body": b'{"error": {"message": "bad", "type": "x"}}'},
    {"payload": None, "request_text": "{not json \ufffd"},
])
def test_hand_made_records_come_back_the_same(fields):
    line = assert_round_trip(record(**fields), None)
    assert line.startswith(b'{"v":1,"facts":')


def test_facts_that_cannot_be_kept_exactly_are_journaled_as_their_rendered_rows():
    not_utf8 = record(response_body=b'{"choices": [{"message": {"content": "\xff\xfe"}}]}')
    too_big = record(usage={"prompt_tokens": 2**70, "completion_tokens": 1, "total_tokens": 1})
    for r in (not_utf8, too_big):
        line = journal_line(r)
        assert line.startswith(b'{"run":')
        runs, _ = decode([line])
        assert runs[0]["request_id"] == r.request_id


def test_the_current_layout_names_every_field_of_a_record_in_order():
    assert FIELDS == LAYOUTS[LAYOUT], (
        "CallRecord's fields changed: add a layout to proxy.logrow.LAYOUTS and make it LAYOUT "
        "(editing one would misread the journals written with it)")


def test_a_line_in_the_object_form_of_the_first_journals_is_still_read():
    r = record(tags=["x"], notes=["n"])
    item = orjson.loads(journal_line(r))
    facts = facts_of(item)
    assert facts["tags"] == ["x"] and facts["request_id"] == r.request_id
    old_form = orjson.dumps({"record": facts}) + b"\n"
    bad: list[bytes] = []
    assert decode([old_form], bad) == flatten([r.rows()]) and not bad


@pytest.mark.parametrize("damage", [
    lambda item: {**item, "facts": item["facts"][:-1]},  # a value short
    lambda item: {**item, "v": 999},  # a layout this version does not know
    lambda item: {**item, "facts": 7},
])
def test_a_record_line_that_does_not_fit_its_layout_is_set_aside(damage):
    line = orjson.dumps(damage(orjson.loads(journal_line(record())))) + b"\n"
    bad: list[bytes] = []
    assert decode([line], bad) == ([], []) and bad == [line]
