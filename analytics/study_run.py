"""Sending a study's planned calls, K at a time, in-process or to a running proxy.

One code path for both: an `httpx.AsyncClient` that posts plain OpenAI chat completions to
`/v1/chat/completions`, either over an `httpx.ASGITransport` around
`proxy.app.create_app(settings)` (its lifespan around the run, so the recorder starts and
drains) or over the network to a running proxy. So every call goes through the same
routing, retries, de-duplication switch and recording as a served request.

A model's first call goes alone: when it shows the model cannot be served at all, the
model's other calls are skipped rather than sent to fail the same way. Ctrl-C cancels what
is in flight and leaves what finished in the log; an unreachable proxy stops the run.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from .plan import Call, metadata_header
from .progress import Progress

#: An answer with one of these statuses to a model's first call says the model cannot be
#: served at all (unknown model, provider without a key, bad proxy key): its other calls are
#: skipped rather than sent to fail the same way.
MODEL_LEVEL_STATUSES = frozenset({401, 403, 404})
IN_PROCESS_BASE_URL = "http://study-runner.invalid/v1"


@dataclass
class Result:
    """What one call came back with, as the runner saw it (the log row has the rest)."""

    call: Call
    status_code: int
    error: str | None
    latency_ms: float

    @property
    def ok(self) -> bool:
        return self.status_code == 200 and self.error is None


@dataclass
class _Gate:
    """A model's first call goes alone; the others wait for it and are skipped if it shows
    that the model cannot be served at all."""

    state: str = "new"  # new → probing → open | closed
    opened: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str | None = None
    skipped: int = 0


class _Fatal(Exception):
    """The proxy cannot be reached: no point in sending anything else."""


@dataclass
class Outcome:
    """How a run ended: what it sent, and why it stopped early if it did."""

    results: list[Result]
    interrupted: bool
    fatal: str | None
    closed_models: dict[str, str]  # model → why its calls were skipped
    skipped: int


class StudyRun:
    """Sends the planned calls through one `httpx.AsyncClient`, K at a time."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        url: str,
        name: str,
        calls: Sequence[Call],
        params: dict[str, Any],
        headers: dict[str, str],
        concurrency: int,
        progress: Progress,
    ) -> None:
        self.client, self.url, self.name = client, url, name
        self.calls, self.params, self.headers = list(calls), params, headers
        self.concurrency = concurrency
        self.progress = progress
        self.run_id = uuid.uuid4().hex[:8]
        self.results: list[Result] = []
        self.gates: dict[str, _Gate] = {}
        self.interrupted = False
        self.fatal: str | None = None
        self._next = 0
        self._workers: list[asyncio.Task[None]] = []
        self._warned_omitted = False

    async def run(self) -> Outcome:
        """Every call, unless Ctrl-C or an unreachable proxy ends the run first: the outcome either way."""
        loop = asyncio.get_running_loop()
        self._workers = [asyncio.create_task(self._worker()) for _ in range(min(self.concurrency, len(self.calls)))]
        handled = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self.interrupt)
                handled.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or Windows
                pass
        try:
            outcomes = await asyncio.gather(*self._workers, return_exceptions=True)
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, (asyncio.CancelledError, _Fatal)):
                raise outcome
        closed = {m: g.reason or "" for m, g in self.gates.items() if g.state == "closed"}
        skipped = sum(g.skipped for g in self.gates.values())
        return Outcome(self.results, self.interrupted, self.fatal, closed, skipped)

    def interrupt(self) -> None:
        """Ctrl-C (or SIGTERM): cancel what is in flight; a second one quits at once."""
        if self.interrupted:
            raise KeyboardInterrupt
        self.interrupted = True
        self.progress.write("Interrupted: cancelling the calls in flight (Ctrl-C again to quit at once)…")
        self._stop()

    def _stop(self) -> None:
        current = asyncio.current_task()
        for worker in self._workers:
            if worker is not current:
                worker.cancel()

    async def _worker(self) -> None:
        while not self.interrupted and self.fatal is None and self._next < len(self.calls):
            call = self.calls[self._next]
            self._next += 1
            gate = self.gates.setdefault(call.model, _Gate())
            if gate.state == "probing":
                await gate.opened.wait()
            if gate.state == "closed":
                gate.skipped += 1
                self.progress.advance("skipped")
                continue
            probing = gate.state == "new"
            if probing:
                gate.state = "probing"
            result: Result | None = None
            try:
                result = await self._send(call)
            except httpx.TransportError as exc:
                self.fatal = f"cannot reach the proxy at {self.url}: {str(exc) or type(exc).__name__}"
                self._stop()
                raise _Fatal(self.fatal) from None
            finally:
                if probing:
                    if result is not None and result.status_code in MODEL_LEVEL_STATUSES:
                        gate.state, gate.reason = "closed", f"HTTP {result.status_code}: {result.error}"
                        self.progress.write(f"model {call.model!r} cannot be used ({gate.reason}): skipping its other calls")
                    else:  # answered, or the run is ending (cancelled, or the proxy is gone)
                        gate.state = "open"
                    gate.opened.set()
            self.results.append(result)
            self.progress.advance("ok" if result.ok else "failed")

    async def _send(self, call: Call) -> Result:
        metadata, omitted = metadata_header(self.name, self.run_id, call)
        if omitted and not self._warned_omitted:
            self._warned_omitted = True
            self.progress.write(
                f"note: item fields {', '.join(omitted)} of {call.item.where} are not in the row's metadata "
                "(a name the runner uses, or too large for a header)"
            )
        body = {"model": call.model, "messages": call.item.messages, **self.params}
        headers = {**self.headers, "X-Study-Metadata": metadata}
        started = time.perf_counter()
        response = await self.client.post(self.url, json=body, headers=headers)
        latency = (time.perf_counter() - started) * 1000
        error = None if response.status_code == 200 else _error_message(response)
        return Result(call, response.status_code, error, round(latency, 3))


def _error_message(response: httpx.Response) -> str:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict) and error.get("message"):
        code = f" ({error['code']})" if error.get("code") else ""
        return f"{error['message']}{code}"
    return response.text[:200] or response.reason_phrase


async def run_in_process(settings: Any, name: str, calls: list[Call], params: dict[str, Any],
                         headers: dict[str, str], concurrency: int, progress: Progress) -> Outcome:
    """The calls through an app made from `settings`, in this process: no server, no port."""
    from proxy.app import create_app

    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    # The lifespan opens the upstream pool and starts the recorder; leaving it drains the recorder,
    # so every call that finished is in the log, however the run ends.
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=transport, base_url=IN_PROCESS_BASE_URL, timeout=None, limits=limits) as client:
            run = StudyRun(client, IN_PROCESS_BASE_URL + "/chat/completions", name, calls, params, headers,
                           concurrency, progress)
            return await run.run()


async def run_over_network(base_url: str, name: str, calls: list[Call], params: dict[str, Any],
                           headers: dict[str, str], concurrency: int, progress: Progress) -> Outcome:
    """The calls to a running proxy at `base_url` (its OpenAI base URL, ending in /v1)."""
    base = base_url.rstrip("/")
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    # No read timeout: the proxy has its own (first byte, stream idle, whole-request deadline).
    timeout = httpx.Timeout(None, connect=10.0)
    async with httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False) as client:
        run = StudyRun(client, base + "/chat/completions", name, calls, params, headers, concurrency, progress)
        return await run.run()


async def wait_for_log(base_url: str, timeout: float = 5.0) -> None:
    """A running proxy writes rows a few ms after answering: wait until its recorder has
    nothing pending (`/healthz`), so the comparison sees this run's last rows."""
    root = re.sub(r"/v1/?$", "", base_url.rstrip("/"))
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            try:
                health = (await client.get(root + "/healthz")).json()
                if health.get("log", {}).get("pending") == 0:
                    await asyncio.sleep(0.05)  # `pending` drops when the batch is taken, before its commit
                    return
            except (httpx.HTTPError, ValueError, AttributeError):
                await asyncio.sleep(0.3)  # not this proxy's /healthz: give the writer a moment
                return
            await asyncio.sleep(0.05)
