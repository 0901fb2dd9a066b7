"""The app's wiring: an answer's first message (and a stream's last event) leaves only once the
call's row is in the journal, for durabilities `process` and `power`; with `none` it does not wait.

The app is called as an ASGI application in-process, with a `send` that looks at the journal
files at the moment each message would go to the client.
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace

import orjson
import pytest

from proxy.app import create_app
from proxy.config import load_settings
from proxy.config_sections import LogPolicy
from proxy.journal import read_lines
from proxy.logrow import decode


def on_disk(directory) -> set[str]:
    """Request ids in the journal, or already through it into the database beside it."""
    found = set()
    for path in directory.glob("*.jsonl"):
        runs, _ = decode(read_lines(path, 0, None, 10**6)[0])
        found |= {run["request_id"] for run in runs}
    db = sqlite3.connect(directory.with_name("log.db"))
    try:
        found |= {row[0] for row in db.execute("SELECT request_id FROM inference_runs")}
    finally:
        db.close()
    return found


async def call(app, body: dict, journal_dir) -> list[tuple[str, bool, bool]]:
    """POST /v1/chat/completions; for each message sent: (type, more_body, row on disk by then)."""
    sent: list[tuple[str, bool, bool]] = []
    request_id: list[str] = []
    data = orjson.dumps(body)
    messages = [{"type": "http.request", "body": data, "more_body": False}]

    async def receive():
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # no disconnect: wait until cancelled

    async def send(message):
        if message["type"] == "http.response.start":
            request_id.append(dict(message["headers"])[b"x-study-request-id"].decode())
        sent.append((message["type"], message.get("more_body", False), request_id[0] in on_disk(journal_dir)))

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
             "query_string": b"", "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json")],
             "scheme": "http",
             "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5000), "http_version": "1.1",
             "asgi": {"version": "3.0"}, "root_path": ""}
    await app(scope, receive, send)
    return sent


@pytest.mark.parametrize("durability", ["process", "power", "none"])
def test_an_answer_leaves_after_its_row_reached_the_journal(tmp_path, durability):
    settings = replace(load_settings(env={}, database_url=str(tmp_path / "log.db"), ui=False),
                       log=LogPolicy(durability=durability))
    journal_dir = tmp_path / "log.db.journal"

    async def go():
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            plain = await call(app, {"model": "mock/echo", "messages": [{"role": "user", "content": "hi"}]}, journal_dir)
            stream = await call(app, {"model": "mock/echo", "messages": [{"role": "user", "content": "a b c"}],
                                      "stream": True}, journal_dir)
        return plain, stream

    plain, stream = asyncio.run(go())
    assert plain[0][0] == "http.response.start" and stream[-1][:2] == ("http.response.body", False)
    if durability == "none":
        assert not plain[0][2]  # nothing waits for a disk
        return
    assert plain[0][2], plain  # the answer's first message: the row was on disk already
    assert not stream[0][2] and stream[-1][2], stream  # a stream: its row is written before its last event
