"""Redis for the tests: the machine's server on 6379 (a key prefix per test, cleaned up after),
and a server of a test's own (`redis-server` on a free port) for the tests that stop it."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


def listening(port: int, host: str = REDIS_HOST) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        return True
    except OSError:
        return False


needs_redis = pytest.mark.skipif(not listening(REDIS_PORT), reason=f"no Redis on {REDIS_HOST}:{REDIS_PORT}")


def redis_config(prefix: str, **policy: object) -> str:
    """The `[redis]` table of a proxy's config: this test's prefix, short leases and polls."""
    values = {"prefix": prefix, "lease": 1.0, "poll": 0.1, "retry_interval": 1.0, **policy}
    lines = [f"{key} = {value!r}" if not isinstance(value, str) else f'{key} = "{value}"' for key, value in values.items()]
    return "[redis]\n" + "\n".join(lines) + "\n"


def prefixed_keys(prefix: str, url: str = REDIS_URL) -> dict[bytes, bytes | None]:
    """Every string key under `prefix`, with its value."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        return {key: client.get(key) for key in client.scan_iter(match=prefix + "*")}
    finally:
        client.close()


def delete_prefixed(prefix: str, url: str = REDIS_URL) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        for key in client.scan_iter(match=prefix + "*"):
            client.delete(key)
    finally:
        client.close()


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    prefix = f"sqllm-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    if listening(REDIS_PORT):
        delete_prefixed(prefix)


@dataclass
class OwnRedis:
    """A `redis-server` of the test's own, which it may stop and start again on the same port."""

    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{REDIS_HOST}:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", REDIS_HOST, "--save", "", "--appendonly", "no",
             "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not listening(self.port):
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None


def free_port_redis_url() -> str:
    """A Redis URL on which nothing listens."""
    with socket.socket() as sock:
        sock.bind((REDIS_HOST, 0))
        port = sock.getsockname()[1]
    return f"redis://{REDIS_HOST}:{port}/0"
