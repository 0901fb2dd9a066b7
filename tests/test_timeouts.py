"""proxy/timeouts.py: asyncio.timeout's contract on one timer per loop."""

from __future__ import annotations

import asyncio
import time

import pytest

from proxy.timeouts import timeout, watchdog

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "uvloop"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, bool]]:
    """The server's loop (uvloop) and plain asyncio's."""
    return ("asyncio", {"use_uvloop": request.param == "uvloop"})


async def test_a_block_past_its_delay_raises_timeout_error_on_time() -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        with timeout(0.05):
            await asyncio.sleep(5)
    assert 0.04 <= time.monotonic() - started < 0.5
    assert len(watchdog()) == 0


async def test_a_block_that_ends_in_time_leaves_nothing_filed() -> None:
    with timeout(10):
        await asyncio.sleep(0)
    assert len(watchdog()) == 0


async def test_an_earlier_expiry_filed_later_fires_first() -> None:
    """The timer is armed for a 30 s wait; a 50 ms one filed afterwards must still fire on time."""
    long_wait = asyncio.create_task(_sleep_within(30, 60))
    await asyncio.sleep(0.01)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        with timeout(0.05):
            await asyncio.sleep(5)
    assert time.monotonic() - started < 0.5
    long_wait.cancel()
    with pytest.raises(asyncio.CancelledError):
        await long_wait


async def _sleep_within(limit: float, duration: float) -> None:
    with timeout(limit):
        await asyncio.sleep(duration)


async def test_a_cancel_from_outside_stays_a_cancel() -> None:
    task = asyncio.create_task(_sleep_within(10, 5))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(watchdog()) == 0


async def test_nested_timeouts_fire_the_inner_one_only() -> None:
    with timeout(10):
        with pytest.raises(TimeoutError):
            with timeout(0.02):
                await asyncio.sleep(5)
        await asyncio.sleep(0.05)  # the outer block goes on: the task is not left cancelled
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_many_timeouts_that_never_fire_keep_the_heap_small() -> None:
    for _ in range(20_000):
        with timeout(600):
            pass
    dog = watchdog()
    assert len(dog) == 0
    assert len(dog._heap) <= 2 * 1024 + 2


async def test_call_at_fires_unless_cancelled() -> None:
    dog = watchdog()
    fired: list[str] = []
    now = dog.loop.time()
    dog.call_at(now + 0.02, lambda: fired.append("kept"))
    dropped = dog.call_at(now + 0.01, lambda: fired.append("dropped"))
    dog.cancel(dropped)
    await asyncio.sleep(0.1)
    assert fired == ["kept"]


async def test_timeout_outside_a_task_is_refused() -> None:
    errors: list[BaseException] = []

    def outside_a_task() -> None:
        try:
            with timeout(1):
                pass
        except RuntimeError as exc:
            errors.append(exc)

    asyncio.get_running_loop().call_soon(outside_a_task)
    await asyncio.sleep(0.01)
    assert errors and "inside a task" in str(errors[0])
