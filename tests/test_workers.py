"""`proxy.workers.Supervisor` with stand-in workers: what it does when a worker ends by itself.

The workers are forks of the test process that write their pid to a file and sleep or exit;
the stop signal goes to the main thread only (`pthread_kill`), where the supervisor waits for it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from proxy.workers import STARTUP_FAILURE, Supervisor, _become_worker, worker_count

pytestmark = pytest.mark.timeout(30)


def started_pids(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def stand_in(path: Path, exit_code: int | None):
    """A worker that notes its pid, then exits with `exit_code` at once (None: waits for SIGTERM)."""

    def target(first: bool) -> int:
        with open(path, "a") as file:
            file.write(f"{os.getpid()}\n")
        if exit_code is not None:
            return exit_code
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
        while True:
            time.sleep(1)

    return target


def stop_later(seconds: float) -> threading.Timer:
    main = threading.main_thread().ident
    assert main is not None
    timer = threading.Timer(seconds, signal.pthread_kill, (main, signal.SIGTERM))
    timer.start()
    return timer


def test_a_worker_that_fails_to_start_stops_them_all(tmp_path):
    path = tmp_path / "pids"
    timer = stop_later(10)  # a safety net only: the supervisor must return by itself long before
    try:
        began = time.monotonic()
        assert Supervisor(2, stand_in(path, STARTUP_FAILURE)).run() == 1
    finally:
        timer.cancel()
    assert time.monotonic() - began < 5
    assert 1 <= len(started_pids(path)) <= 2  # no replacement (the second may be stopped before it notes its pid)


def test_a_worker_that_exits_is_replaced_but_no_faster_than_once_a_second(tmp_path):
    path = tmp_path / "pids"
    timer = stop_later(2.5)
    try:
        assert Supervisor(1, stand_in(path, 0)).run() == 0
    finally:
        timer.cancel()
    assert 2 <= len(started_pids(path)) <= 4, started_pids(path)


def test_sigterm_stops_every_worker_and_returns_0(tmp_path):
    path = tmp_path / "pids"
    timer = stop_later(1.0)
    try:
        assert Supervisor(3, stand_in(path, None)).run() == 0
    finally:
        timer.cancel()
    pids = started_pids(path)
    assert len(pids) == 3
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # gone, and reaped


def test_workers_that_exit_are_reaped_when_another_thread_takes_their_sigchld(tmp_path):
    """SIGCHLD goes to the process: with the supervisor's thread blocking it, a thread that does
    not (here a sleeping one, in a server one a library started) takes it and it is lost. The
    supervisor still sees its workers gone, within REAP_INTERVAL_S, rather than waiting on."""
    idle = threading.Event()
    bystander = threading.Thread(target=idle.wait, args=(20,), daemon=True)
    bystander.start()
    timer = stop_later(0.5)
    try:
        began = time.monotonic()
        assert Supervisor(2, stand_in(tmp_path / "pids", None)).run() == 0
    finally:
        timer.cancel()
        idle.set()
    assert time.monotonic() - began < 5


@pytest.mark.parametrize(("flag", "env", "expected"), [(None, None, 1), (None, " ", 1), (None, "4", 4), (2, "4", 2)])
def test_the_flag_wins_over_the_variable(flag, env, expected):
    assert worker_count(flag, env) == expected


def test_a_sigterm_that_comes_before_the_worker_is_set_up_still_stops_it():
    """A stop signal sent between the fork and the worker's own signal set-up is pending (the
    supervisor blocks it): it must end the worker, not meet a handler inherited from the parent."""
    swallowed = []
    previous = signal.signal(signal.SIGTERM, lambda *_: swallowed.append(1))
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        pid = os.fork()
        if pid == 0:
            os.kill(os.getpid(), signal.SIGTERM)  # pending: blocked, as in a fresh worker
            _become_worker(os.getppid())
            os._exit(3)  # reached only if the signal was swallowed
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        signal.signal(signal.SIGTERM, previous)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM, status
