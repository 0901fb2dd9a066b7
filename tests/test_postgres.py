"""The same store code path on PostgreSQL (asyncpg). Skips where no server listens."""

import asyncio
import uuid

from postgres_helpers import POSTGRES_URL, needs_postgres
from proxy.record import CallRecord
from proxy.recorder import Recorder
from proxy.store import Store

pytestmark = needs_postgres


def test_migrate_and_record_on_postgres(tmp_path):
    async def go():
        store = Store(POSTGRES_URL)
        await store.migrate()
        assert await store.migrate() == []
        record = CallRecord("chat/completions", model="mock/m", provider="mock", upstream_model="m", user="u")
        record.payload = {"model": "mock/m", "messages": [{"role": "user", "content": "hi"}]}
        record.response_body = b'{"choices": [{"message": {"content": "yo"}}], "usage": {"total_tokens": 3}}'
        record.begin_attempt("mock", "/chat/completions").finish(200)
        record.finish(200)
        recorder = Recorder(store, journal_dir=tmp_path / "journal")
        await recorder.start()
        recorder.submit(record)
        await recorder.stop()
        async with store.engine.connect() as conn:
            row = (
                await conn.exec_driver_sql(
                    'SELECT prompt, response, total_tokens, "user", attempts FROM inference_runs WHERE request_id = $1',
                    (record.request_id,),
                )
            ).one()
            attempts = (
                await conn.exec_driver_sql("SELECT count(*) FROM attempts WHERE request_id = $1", (record.request_id,))
            ).scalar()
        await store.dispose()
        return tuple(row), attempts

    row, attempts = asyncio.run(go())
    assert row == ("user: hi", "yo", 3, "u", 1)
    assert attempts == 1


def test_display_url_hides_the_password():
    from proxy.store.engine import display_url

    secret = uuid.uuid4().hex
    assert secret not in display_url(f"postgresql://me:{secret}@db.example/log")
