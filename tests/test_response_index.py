"""The memory of recent responses: bounded in count and in bytes, the rest read from the log.

An agent sends its whole conversation again each turn, so each response the index keeps
holds the conversation so far; bounded by count alone, 4,096 of them held gigabytes.
"""

from __future__ import annotations

import asyncio

import orjson

from proxy.record import CallRecord
from proxy.responses.state import ENTRY_BYTES, ResponseIndex


class Log:
    """The lookup the index falls back to: records the ids asked for; the log has none of them."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def __call__(self, response_id: str) -> list:
        self.asked.append(response_id)
        return []


def finished(i: int, input_bytes: int = 10, body: bytes | None = None) -> CallRecord:
    record = CallRecord("responses", provider="mock", upstream_model="m", status_code=200)
    record.payload = {"model": "mock/m", "input": "x" * input_bytes}
    record.request_text = orjson.dumps(record.payload).decode()
    record.response_body = body if body is not None else orjson.dumps({"id": f"resp_{i}", "output": []})
    return record


def found(index: ResponseIndex, response_id: str) -> bool:
    return asyncio.run(index.find(response_id)) is not None


def test_the_latest_responses_are_kept_up_to_a_count_and_older_ones_asked_of_the_log():
    log = Log()
    index = ResponseIndex(log, size=3)
    for i in range(5):
        index.remember(finished(i))
    assert len(index) == 3
    assert all(found(index, f"resp_{i}") for i in (2, 3, 4)) and log.asked == []
    assert not found(index, "resp_0") and log.asked == ["resp_0"]


def test_the_bytes_kept_are_bounded_the_newest_first_to_stay():
    log = Log()
    index = ResponseIndex(log, max_bytes=1_000_000)
    for i in range(50):  # 5 MB of requests
        index.remember(finished(i, input_bytes=100_000))
        assert index.bytes <= 1_000_000
    assert 8 <= len(index) <= 10
    assert found(index, "resp_49") and found(index, f"resp_{50 - len(index)}") and log.asked == []
    assert not found(index, "resp_0") and log.asked == ["resp_0"]
    assert index.bytes <= 1_000_000  # reading the answers kept their sizes


def test_the_newest_response_stays_however_large_for_the_follow_up_that_may_come_next():
    index = ResponseIndex(Log(), max_bytes=10_000)
    index.remember(finished(1))
    index.remember(finished(2, input_bytes=50_000))
    assert len(index) == 1 and found(index, "resp_2")
    index.remember(finished(3))
    assert len(index) == 1 and found(index, "resp_3") and index.bytes < 10_000


def test_entries_that_leave_give_their_bytes_back():
    index = ResponseIndex(Log())
    index.remember(finished(1, body=b"not json"))  # no id to be found by: dropped when read
    index.remember(finished(2))
    assert index.bytes > 2 * ENTRY_BYTES
    assert found(index, "resp_2")
    assert index.bytes == ENTRY_BYTES + len(finished(2).request_text) + len(finished(2).response_body)
    index.forget("resp_2")
    assert index.bytes == 0 and len(index) == 0 and not found(index, "resp_2")


def test_deletions_are_remembered_up_to_the_count_the_older_ones_by_the_log():
    log = Log()
    index = ResponseIndex(log, size=3)
    for i in range(10):
        index.remember(finished(i))
        index.forget(f"resp_{i}")
    assert len(index._deleted) == 3 and len(index) == 0
    assert not found(index, "resp_9") and log.asked == []  # known deleted, the log not asked
    assert not found(index, "resp_0") and log.asked == ["resp_0"]
