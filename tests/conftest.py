"""Fixtures for the end-to-end tests: a fake upstream, the real proxy as a subprocess, and the log.

The proxy runs exactly as a user runs it (`python -m proxy serve …`) in its own temporary
directory (so no `.env` of the repository is read) with an environment stripped of every
provider, database and panel variable, plus what the test sets.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from fake_upstream import FakeUpstream

REPO_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0

#: Variables the proxy reads; never inherited from the developer's shell.
_STRIPPED_PREFIXES = ("OPENAI_", "AZURE_", "HYPERBOLIC_", "DATABASE_URL", "PANEL_", "STUDY_")
#: What a child process needs from the parent environment to run Python at all.
_KEPT = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TEMP", "TMP", "TZ", "SYSTEMROOT", "USER", "LOGNAME")

ISO_UTC_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
HEX32 = re.compile(r"^[0-9a-f]{32}$")


def fake_key(kind: str = "sk-test") -> str:
    """A key that is obviously fake and unique to this run."""
    return f"{kind}-{uuid.uuid4().hex}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def minimal_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in _KEPT or k.startswith("LC_")}
    env = {k: v for k, v in env.items() if not k.startswith(_STRIPPED_PREFIXES)}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = str(REPO_ROOT)
    env.update(extra or {})
    return env


# --------------------------------------------------------------------------------------
# The log
# --------------------------------------------------------------------------------------


class Log:
    """Read access to the proxy's SQLite file, one short connection per query."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        conn = sqlite3.connect(self.path, timeout=5)
        try:
            conn.row_factory = sqlite3.Row
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def rows(self, where: str = "1", params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        return self.query(f"SELECT * FROM inference_runs WHERE {where} ORDER BY id", params)

    def count(self) -> int:
        try:
            return self.query("SELECT count(*) FROM inference_runs")[0][0]
        except sqlite3.OperationalError:
            return 0

    def row(self, request_id: str) -> sqlite3.Row:
        rows = self.rows("request_id = ?", (request_id,))
        assert len(rows) == 1, f"{len(rows)} rows for request_id {request_id}"
        return rows[0]

    def attempts(self, request_id: str) -> list[sqlite3.Row]:
        return self.query("SELECT * FROM attempts WHERE request_id = ? ORDER BY attempt", (request_id,))

    def wait_count(self, n: int, timeout: float = 5.0) -> list[sqlite3.Row]:
        """Wait until at least `n` rows exist; return all rows."""
        deadline = time.monotonic() + timeout
        while True:
            count = self.count()
            if count >= n:
                return self.rows()
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {n} rows in {self.path}, found {count} after {timeout}s")
            time.sleep(0.02)

    def wait_response(self, response_id: str, timeout: float = 5.0) -> sqlite3.Row:
        """The row of the `POST /responses` call that created `response_id` (waiting for the recorder)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                rows = self.rows("endpoint = 'responses' AND metadata LIKE ?", (f'%"{response_id}"%',))
            except sqlite3.OperationalError:
                rows = []
            if rows:
                return rows[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"no row for response {response_id} after {timeout}s")
            time.sleep(0.02)

    def wait_row(self, request_id: str, timeout: float = 5.0) -> sqlite3.Row:
        deadline = time.monotonic() + timeout
        while True:
            try:
                rows = self.rows("request_id = ?", (request_id,))
            except sqlite3.OperationalError:
                rows = []
            if rows:
                assert len(rows) == 1, f"{len(rows)} rows for request_id {request_id}"
                return rows[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"no row with request_id {request_id} after {timeout}s")
            time.sleep(0.02)


# --------------------------------------------------------------------------------------
# The proxy
# --------------------------------------------------------------------------------------


@dataclass
class ProxyServer:
    """One running `python -m proxy serve` process."""

    directory: Path
    port: int
    process: subprocess.Popen[bytes]
    output_path: Path
    env: dict[str, str]

    @property
    def url(self) -> str:
        """The proxy root, e.g. for `AzureOpenAI(azure_endpoint=...)`."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def v1(self) -> str:
        """The OpenAI base URL, e.g. for `OpenAI(base_url=...)`."""
        return self.url + "/v1"

    @property
    def db_path(self) -> Path:
        return self.directory / "log.db"

    @property
    def log(self) -> Log:
        return Log(self.db_path)

    def output(self) -> str:
        return self.output_path.read_text(errors="replace") if self.output_path.exists() else ""

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then wait; returns the exit code (kills and fails if it hangs)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
                raise AssertionError(f"proxy did not exit {timeout}s after SIGTERM:\n{self.output()}")
        return self.process.returncode

    def stop_ok(self) -> None:
        """Stop and check it was a clean exit: 0, or death by the re-raised SIGTERM (uvicorn
        restores the default handler and re-raises the signal after a graceful shutdown)."""
        code = self.stop()
        assert code in (0, -signal.SIGTERM, 128 + signal.SIGTERM), f"exit code {code}:\n{self.output()}"
        assert "Traceback" not in self.output(), self.output()


def start_proxy(
    directory: Path,
    env: Mapping[str, str] | None = None,
    config: str | None = None,
    ui: bool = False,
    extra_args: list[str] | None = None,
) -> ProxyServer:
    """Start the proxy in `directory` and wait for `/healthz`; fail with its output if it won't."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args = [sys.executable, "-m", "proxy", "serve", "--host", "127.0.0.1", "--port", str(port)]
    if "--database-url" not in (extra_args or []):  # a test's own log (PostgreSQL), else log.db here
        args += ["--db", str(directory / "log.db")]
    if config is not None:
        config_path = directory / "config.toml"
        config_path.write_text(config)
        args += ["--config", str(config_path)]
    if not ui:
        args.append("--no-ui")
    args += extra_args or []
    full_env = minimal_env(env)
    output_path = directory / "server-output.txt"
    with open(output_path, "wb") as out:
        process = subprocess.Popen(args, cwd=directory, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    server = ProxyServer(directory, port, process, output_path, full_env)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise AssertionError(f"proxy exited with {process.returncode} at start:\n{server.output()}")
        try:
            if httpx.get(server.url + "/healthz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            process.wait(5)
            raise AssertionError(f"proxy did not answer /healthz within {START_TIMEOUT}s:\n{server.output()}")
        time.sleep(0.05)


ProxyFactory = Callable[..., ProxyServer]


@pytest.hookimpl(trylast=True)  # after -m and -k have deselected
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from prewarm import last_the_slow_set_ups

    last_the_slow_set_ups(items, start=not config.option.collectonly)


@pytest.fixture(scope="session")
def fake_upstream_server() -> Iterator[FakeUpstream]:
    server = FakeUpstream().start()
    yield server
    server.stop()


@pytest.fixture
def upstream(fake_upstream_server: FakeUpstream) -> FakeUpstream:
    """The session's fake upstream, its request list cleared for this test."""
    fake_upstream_server.clear()
    return fake_upstream_server


def _factory(tmp_factory: pytest.TempPathFactory, name: str) -> tuple[ProxyFactory, list[ProxyServer]]:
    started: list[ProxyServer] = []

    def make(env: Mapping[str, str] | None = None, config: str | None = None, ui: bool = False,
             extra_args: list[str] | None = None) -> ProxyServer:
        server = start_proxy(tmp_factory.mktemp(name), env, config, ui, extra_args)
        started.append(server)
        return server

    return make, started


def _stop_all(started: list[ProxyServer]) -> None:
    for server in started:
        try:
            server.stop()
        except AssertionError:
            pass


@pytest.fixture
def proxy_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyFactory]:
    """`make(env=..., config=..., ui=False, extra_args=[...])` → a running proxy, stopped after the test."""
    make, started = _factory(tmp_path_factory, "proxy")
    yield make
    _stop_all(started)


@pytest.fixture(scope="module")
def module_proxy_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyFactory]:
    """Like `proxy_factory`, but the proxies live for the whole module."""
    make, started = _factory(tmp_path_factory, "proxy")
    yield make
    _stop_all(started)


# --------------------------------------------------------------------------------------
# Small helpers shared by the test modules
# --------------------------------------------------------------------------------------


def provider_env(upstream: FakeUpstream, *, openai: str | None = None, azure: str | None = None,
                 hyperbolic: str | None = None, **extra: str) -> dict[str, str]:
    """Environment pointing the built-in providers whose key is given at the fake upstream.

    OpenAI lives at `/v1`, Hyperbolic at `/hyperbolic/v1`, Azure at the root, so the fake's
    recorded path tells which provider the proxy called.
    """
    env: dict[str, str] = {}
    if openai:
        env |= {"OPENAI_API_KEY": openai, "OPENAI_BASE_URL": upstream.base_url + "/v1", "OPENAI_MODEL": "gpt-4o-mini"}
    if azure:
        env |= {"AZURE_OPENAI_API_KEY": azure, "AZURE_OPENAI_ENDPOINT": upstream.base_url,
                "AZURE_OPENAI_DEPLOYMENT": "gpt-4o-dep", "AZURE_OPENAI_API_VERSION": "2024-10-21"}
    if hyperbolic:
        env |= {"HYPERBOLIC_API_KEY": hyperbolic, "HYPERBOLIC_ENDPOINT": upstream.base_url + "/hyperbolic/v1"}
    env |= extra
    return env


def loads(text: str | None) -> Any:
    assert text is not None, "expected a JSON column, got NULL"
    return json.loads(text)


def assert_error_shape(body: Any) -> dict[str, Any]:
    """The OpenAI error body: exactly message, type, param, code; returns the inner object."""
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["type"], str) and error["type"], error
    return error


def unique(prefix: str) -> str:
    """A model (or text) name no other test uses, e.g. `unique("fail-503-twice")`: the fake
    upstream keeps its once/twice state per full model name."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def sse_data(body: str) -> list[str]:
    """The `data:` payloads of an SSE body, in order."""
    events = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        lines = [line for line in block.splitlines() if line.startswith("data:")]
        if lines:
            events.append("\n".join(line[5:].strip() for line in lines))
    return events
