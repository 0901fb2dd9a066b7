"""One-time set-ups that take a minute or two on a fresh machine, started in the background
when the session begins, so that they overlap the rest of the suite instead of adding to it.

They are: the container tests' base image, wheels and images (tests/docker_cli.py), and the venv
of tests/client_venv.py. The tests that need them are moved to the end of the run
(`last_the_slow_set_ups`), where they find them made. Each set-up already holds a lock while
it works (a file lock, a thread lock), so a test that arrives early waits for it rather than
making it twice; a set-up that fails here is tried again by its test, which then says why.

The background threads run at a low priority (Linux priorities are per thread, and the
commands they start inherit them), so that the tests running meanwhile keep the CPU.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable

import pytest

#: What marks a test as needing a set-up: its marker name, and the set-up.
CONTAINER, CLIENTS = "container", "client_venv"
BACKGROUND_NICENESS = 15


def last_the_slow_set_ups(items: list[pytest.Item], start: bool = True) -> None:
    """Move the tests that need a slow set-up to the end (stable otherwise), and start their
    set-ups in the background."""
    slow = [item for item in items if _set_up_of(item)]
    items[:] = [item for item in items if not _set_up_of(item)] + slow
    if not start:
        return
    needed = {_set_up_of(item) for item in slow}
    if CONTAINER in needed:
        _start(_container_set_up)
    if CLIENTS in needed:
        _start(_clients_set_up)


def _set_up_of(item: pytest.Item) -> str | None:
    return next((name for name in (CONTAINER, CLIENTS) if item.get_closest_marker(name)), None)


def _container_set_up() -> None:
    import docker_cli

    if docker_cli.engine_missing() is None:
        docker_cli.project_images()


def _clients_set_up() -> None:
    import client_venv

    client_venv.client_python()


def _start(set_up: Callable[[], None]) -> None:
    def run() -> None:
        with contextlib.suppress(AttributeError, OSError):  # not Linux: at normal priority
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICENESS)
        with contextlib.suppress(BaseException):  # its test makes it again and reports why
            set_up()

    threading.Thread(target=run, name=f"prewarm-{set_up.__name__}", daemon=True).start()
