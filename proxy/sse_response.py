"""The ASGI responses for relayed answers: forward as it comes, notice a client leaving, always record.

Starlette's StreamingResponse may leave a generator unclosed when the client goes away
mid-stream; this class owns the loop, so the row is written whichever way the stream ends.
A stream that reaches its end is recorded before its last event is sent: a client that
received the whole stream can count on its row (the journal has it, see proxy.recorder).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping

from starlette.types import Receive, Scope, Send

from .record import Attempt, CallRecord
from .responses.relay import ResponsesRelay
from .streaming import StreamRelay
from .timeouts import timeout
from .upstream import UpstreamResponse, UpstreamUnreachable

log = logging.getLogger("proxy.stream")

CLIENT_DISCONNECTED = "client_disconnected"
SHUT_DOWN = "the proxy shut down before the answer was complete"
#: No proxy or browser cache may hold back an event stream.
STREAM_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class Relayed:
    """What every relayed answer shares: a client leaving is noticed at once, a shutdown that cuts
    the answer is told apart from it, and the row is written whichever way the answer ends.
    Subclasses relay (`_relay`) and say what the row keeps (`_fill_record`)."""

    def __init__(
        self,
        record: CallRecord,
        response: UpstreamResponse,
        attempt: Attempt,
        headers: Mapping[str, str],
        submit: Callable[[CallRecord], None],
        *,
        idle_timeout: float,
    ) -> None:
        """`submit` takes the finished record."""
        self.record = record
        self.idle_timeout = idle_timeout
        self.response = response
        self.attempt = attempt
        self.submit = submit
        self.headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in {**headers, **STREAM_HEADERS}.items()]
        self.scope: Scope = {}  # the request's, once called
        self._finished = False  # the last byte is on its way: a hang-up now changes nothing
        self._client_left = False
        self._recorded = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        error: str | None = CLIENT_DISCONNECTED
        relay_task = asyncio.current_task()
        assert relay_task is not None
        watcher = asyncio.create_task(self._watch_disconnect(receive, relay_task))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.headers})
            error = await self._relay(send)
        except OSError:
            pass  # the client went away while we were sending to it
        except asyncio.CancelledError:
            if not (self._client_left and relay_task.uncancel() == 0):
                error = SHUT_DOWN  # cancelled from outside: the server's grace period ran out
                raise
            # cancelled by the watcher: the client left, which the row says; nothing to raise
        except Exception as failure:
            log.error("stream of request %s failed in the proxy", self.record.request_id, exc_info=failure)
            error = f"the proxy failed mid-stream: {failure!r}"
        finally:
            self._finished = True
            watcher.cancel()
            await self.response.close()
            self._record(error)

    async def _watch_disconnect(self, receive: Receive, relay_task: asyncio.Task[None]) -> None:
        """Cancel the relay as soon as the client hangs up, even while upstream is silent."""
        while (await receive())["type"] != "http.disconnect":
            pass
        if not self._finished:
            self._client_left = True
            relay_task.cancel()

    def _record(self, error: str | None) -> None:
        if self._recorded:
            return
        self._recorded = True
        self.attempt.finish(200, error)
        self._fill_record()
        self.record.finish(200, error)
        self.submit(self.record)

    async def _next_chunk(self, chunks: AsyncIterator[bytes]) -> bytes | None:
        """The upstream's next bytes (None at its end); TimeoutError after `idle_timeout` of silence."""
        with timeout(self.idle_timeout):
            return await anext(chunks, None)

    async def _relay(self, send: Send) -> str | None:
        """Relay the answer to its end; return the error it ended with, if any."""
        raise NotImplementedError

    def _fill_record(self) -> None:
        raise NotImplementedError


class RelayedStream(Relayed):
    """A relayed event stream (chat/completions, completions, the Responses API), event by event."""

    def __init__(
        self,
        record: CallRecord,
        response: UpstreamResponse,
        attempt: Attempt,
        relay: StreamRelay | ResponsesRelay,
        headers: Mapping[str, str],
        submit: Callable[[CallRecord], None],
        *,
        idle_timeout: float,
        on_complete: Callable[[bytes, StreamRelay | ResponsesRelay], None] | None = None,
    ) -> None:
        """`on_complete` gets every byte the client received, once the stream ended cleanly."""
        super().__init__(record, response, attempt, headers, submit, idle_timeout=idle_timeout)
        self.relay = relay
        self.on_complete = on_complete
        self._sent: list[bytes] | None = [] if on_complete is not None else None

    async def _relay(self, send: Send) -> str | None:
        """Forward upstream events until the end; return the error the stream ended with, if any."""
        relay, sent = self.relay, self._sent
        error = None
        chunks = self.response.iter_bytes()
        try:
            while True:
                try:
                    chunk = await self._next_chunk(chunks)
                except TimeoutError:
                    error = f"upstream sent nothing for {self.idle_timeout:g}s mid-stream"
                    tail = relay.fail(error, code="upstream_stream_timeout")
                    break
                if chunk is None:
                    tail = relay.flush()
                    break
                out = relay.feed(chunk)
                if out:
                    await send({"type": "http.response.body", "body": out, "more_body": True})
                    if sent is not None:
                        sent.append(out)
        except UpstreamUnreachable as exc:
            error = f"upstream stream broke after {len(relay.text)} characters: {exc}"
            tail = relay.fail(error, code="upstream_stream_error")
        finally:
            await chunks.aclose()
        self._finished = True
        if error is None and relay.error is not None:
            error = str(relay.error.get("message") or relay.error)
        self._record(error)  # before the last event leaves
        await send({"type": "http.response.body", "body": tail, "more_body": False})
        if error is None and sent is not None and self.on_complete is not None:
            self.on_complete(b"".join(sent) + tail, relay)
        return error

    def _fill_record(self) -> None:
        record, relay = self.record, self.relay
        record.answer = relay.assembled()
        record.response_text = relay.text
        record.usage = relay.usage
        if relay.first_token_at is not None:
            record.ttft_ms = round((relay.first_token_at - record.started) * 1000, 3)
