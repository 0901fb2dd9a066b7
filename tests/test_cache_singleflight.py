import asyncio
import time

from proxy.answers import CapturedStream, WholeAnswer, answer_size
from proxy.cache import AnswerCache, request_key
from proxy.routing import Route
from proxy.singleflight import SingleFlight

ROUTES = [Route("openai", "gpt-4o")]


def test_request_key_is_canonical_and_separates_what_matters():
    a = request_key("chat/completions", ROUTES, "id1", {"model": "m", "messages": [], "temperature": 0})
    b = request_key("chat/completions", ROUTES, "id1", {"temperature": 0, "messages": [], "model": "m"})
    assert a == b
    assert a != request_key("chat/completions", ROUTES, "id2", {"model": "m", "messages": [], "temperature": 0})
    assert a != request_key("chat/completions", [Route("azure", "gpt-4o")], "id1", {"model": "m", "messages": [], "temperature": 0})
    assert a != request_key("completions", ROUTES, "id1", {"model": "m", "messages": [], "temperature": 0})


def test_cache_ttl_and_size_bound(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    cache = AnswerCache(ttl=10, max_entries=2, max_bytes=100, size=len)
    get = lambda key: asyncio.run(cache.get(key))  # noqa: E731
    cache.put(b"a", b"1")
    cache.put(b"b", b"2")
    assert get(b"a") == b"1"  # a is now the most recently used
    cache.put(b"c", b"3")
    assert get(b"b") is None and get(b"a") == b"1" and len(cache) == 2
    now[0] += 11
    assert get(b"a") is None and cache.bytes == 1


def test_the_cache_is_bounded_in_bytes_and_keeps_no_answer_larger_than_the_bound():
    cache = AnswerCache(ttl=10, max_entries=100, max_bytes=100, size=len)
    get = lambda key: asyncio.run(cache.get(key))  # noqa: E731
    for i in range(10):
        cache.put(bytes([i]), b"x" * 30)
        assert cache.bytes <= 100
    assert len(cache) == 3 and get(bytes([9])) and get(bytes([7])) and get(bytes([6])) is None
    cache.put(b"big", b"y" * 101)
    assert get(b"big") is None and len(cache) == 3
    cache.put(bytes([9]), b"z" * 101)  # a key stored again too large: its old answer goes too
    assert get(bytes([9])) is None and cache.bytes == 60


def test_an_answer_counts_its_bytes_and_a_stream_its_text_again():
    whole = WholeAnswer(200, {}, b"x" * 1000, "openai", "m")
    stream = CapturedStream(b"e" * 3000, {}, {"output": "hello"}, "t" * 500, None, "openai", "m")
    assert answer_size(whole) == 1000 and answer_size(stream) == 4000


def test_single_flight_makes_one_call_for_concurrent_identical_keys():
    calls = []

    async def go():
        flights = SingleFlight()

        async def work():
            calls.append(1)
            await asyncio.sleep(0.05)
            return "answer"

        results = await asyncio.gather(*(flights.run(b"k", work) for _ in range(8)))
        assert len(flights) == 0
        return results

    results = asyncio.run(go())
    assert len(calls) == 1
    assert [r[0] for r in results] == ["answer"] * 8
    assert sorted(r[1] for r in results) == [False] * 7 + [True]


def test_a_follower_cancelled_does_not_cancel_the_shared_call():
    async def go():
        flights = SingleFlight()
        finished = []

        async def work():
            await asyncio.sleep(0.05)
            finished.append(1)
            return "answer"

        leader = asyncio.create_task(flights.run(b"k", work))
        await asyncio.sleep(0)
        follower = asyncio.create_task(flights.run(b"k", work))
        other = asyncio.create_task(flights.run(b"k", work))
        await asyncio.sleep(0.01)
        follower.cancel()
        return await leader, await other, finished

    led, followed, finished = asyncio.run(go())
    assert (led, followed, finished) == (("answer", True), ("answer", False), [1])


def test_the_leaders_failure_reaches_every_follower_and_its_cancellation_cuts_them():
    async def go(fail: BaseException):
        flights = SingleFlight()

        async def work():
            await asyncio.sleep(0.02)
            raise fail

        leader = asyncio.create_task(flights.run(b"k", work))
        await asyncio.sleep(0)
        followers = [asyncio.create_task(flights.run(b"k", work)) for _ in range(3)]
        if isinstance(fail, asyncio.CancelledError):
            await asyncio.sleep(0.01)
            leader.cancel()  # the server's shutdown cancels every request's task
        results = await asyncio.gather(leader, *followers, return_exceptions=True)
        return results, len(flights)

    results, left = asyncio.run(go(ValueError("upstream bug")))
    assert [type(r) for r in results] == [ValueError] * 4 and left == 0
    results, left = asyncio.run(go(asyncio.CancelledError()))
    assert [type(r) for r in results] == [asyncio.CancelledError] * 4 and left == 0
