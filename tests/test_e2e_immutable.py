"""The log's files made immutable (`chattr +i`) under a running proxy: no SIGBUS.

SQLite maps the WAL index (`-shm`) into memory; the kernel answers a write to a page of that
mapping with SIGBUS once the file is immutable, and at low traffic the writer's next
transaction made one. The proxy must instead see a database that refuses writes: keep the
rows, keep serving, and write them once the flag is gone. Needs root and a filesystem with
the immutable flag (ext4, xfs, btrfs); skipped elsewhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import httpx
import pytest

pytestmark = pytest.mark.timeout(90)

CHAT = {"model": "mock/echo", "messages": [{"role": "user", "content": "hi"}]}


def chattr(flag: str, *paths) -> bool:
    result = subprocess.run(["chattr", flag, *map(str, paths)], capture_output=True)
    return result.returncode == 0


@pytest.fixture
def immutable_ok(tmp_path):
    if shutil.which("chattr") is None or os.geteuid() != 0:
        pytest.skip("chattr +i needs the chattr tool and root")
    probe = tmp_path / "probe"
    probe.write_text("x")
    if not chattr("+i", probe):
        pytest.skip("this filesystem has no immutable flag")
    chattr("-i", probe)


def call(proxy) -> str:
    try:
        response = httpx.post(proxy.v1 + "/chat/completions", json=CHAT, timeout=10)
    except httpx.HTTPError:
        time.sleep(0.5)
        raise AssertionError(f"the proxy died (exit {proxy.process.poll()}):\n{proxy.output()}") from None
    assert response.status_code == 200, response.text
    return response.headers["x-study-request-id"]


def test_immutable_log_files_do_not_kill_the_proxy(immutable_ok, proxy_factory):
    proxy = proxy_factory()
    made = [call(proxy) for _ in range(3)]  # right away: the -shm pages as a fresh writer leaves them
    files = [p for p in (proxy.db_path, proxy.directory / "log.db-wal", proxy.directory / "log.db-shm") if p.exists()]
    assert chattr("+i", *files)
    try:
        time.sleep(0.5)
        for _ in range(5):  # low traffic: one call at a time, the writer idle in between
            made.append(call(proxy))
            time.sleep(0.3)
        assert proxy.running(), f"the proxy died (exit {proxy.process.returncode}):\n{proxy.output()}"
        health = httpx.get(proxy.url + "/healthz", timeout=5).json()
        assert health["log"]["degraded"] is True, health
    finally:
        chattr("-i", *files)
    deadline = time.monotonic() + 15
    while {r["request_id"] for r in proxy.log.rows()} < set(made):
        assert time.monotonic() < deadline, "the rows kept meanwhile were not written after the flag was cleared"
        time.sleep(0.2)
    proxy.stop_ok()
