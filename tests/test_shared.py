"""The pieces of the shared single-flight and cache that need no server: the answers' bytes,
the URL as it is printed, the background writes' bound, and the metrics' label caps."""

from __future__ import annotations

import asyncio

from proxy.answers import CapturedStream, WholeAnswer
from proxy.errors import ProxyError
from proxy.shared import build_sharing, codec
from proxy.shared.background import Background
from proxy.shared.health import display_redis_url
from proxy.singleflight import SingleFlight
from proxy.cache import AnswerCache
from proxy.config import load_settings


def test_answers_survive_the_trip_through_bytes():
    whole = WholeAnswer(200, {"content-type": "application/json"}, b'{"a": "\\u00e9\x00"}', "openai", "gpt-4o", True, b"logged")
    stream = CapturedStream(b"data: {}\n\n", {"x-request-id": "r"}, {"id": "x"}, "text", {"total_tokens": 3}, "azure", "dep")
    error = ProxyError(502, "Upstream `openai` could not be reached", type="upstream_error", code="upstream_unreachable",
                       headers={"x-should-retry": "false"})
    assert codec.decode(codec.encode(whole)) == whole
    assert codec.decode(codec.encode(stream)) == stream
    back = codec.decode(codec.encode(error))
    assert isinstance(back, ProxyError)
    assert (back.status_code, back.message, back.type, back.code, back.headers) == (
        502, error.message, "upstream_error", "upstream_unreachable", {"x-should-retry": "false"})
    no_log = WholeAnswer(404, {}, b"", "mock", None)
    assert codec.decode(codec.encode(no_log)) == no_log


def test_bytes_it_did_not_make_decode_to_none():
    data = codec.encode(WholeAnswer(200, {}, b"body", "p", "m"))
    for bad in (b"", b"garbage", data[:-1], data + b"x", b"SQA1\x00\x00\x00\x05{bad}"):
        assert codec.decode(bad) is None


def test_a_redis_password_is_never_printed():
    assert display_redis_url("redis://:hunter2@cache.internal:6380/1") == "redis://:***@cache.internal:6380/1"
    assert display_redis_url("rediss://app:hunter2@cache.internal/0") == "rediss://app:***@cache.internal/0"
    assert display_redis_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    settings = load_settings({"REDIS_URL": "redis://:hunter2@h:6379/0"})
    assert "hunter2" not in repr(settings)


def test_without_redis_url_everything_stays_in_process():
    sharing = build_sharing(load_settings({}))
    assert type(sharing.flights) is SingleFlight and type(sharing.cache) is AnswerCache
    assert sharing.closers == [] and sharing.health is None


def test_background_writes_are_bounded_and_drained():
    async def go() -> tuple[int, int, list[int]]:
        done: list[int] = []
        background = Background(limit=2)

        async def work(n: int) -> None:
            await asyncio.sleep(0.01)
            done.append(n)

        for n in range(4):
            background.run(work(n))
        await background.aclose()
        return len(background), background.skipped, done

    assert asyncio.run(go()) == (0, 2, [0, 1])
