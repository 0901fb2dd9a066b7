"""A forwarded answer relayed as its bytes arrive: generated speech, a file's content, a long text.

The proxy never holds such an answer whole, so a client playing audio as it is generated hears
it as soon as it would from the upstream, and a 2 GB download costs the proxy one read buffer,
not 2 GB. The row keeps what `proxy.bodies.logged_body` keeps of any forwarded answer: the
content type and size, or the text up to the log's cap. An upstream that breaks off (or goes
silent) mid-body breaks the client's connection off too, once the row is written: a cut file
must never look complete, so its end is not sent.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from starlette.types import Send

from .bodies import LOG_CAP, is_text, logged_body, media_type
from .limits import CUT_ANSWER
from .sse_response import Relayed
from .upstream import UpstreamResponse, UpstreamUnreachable

log = logging.getLogger("proxy.forward")

#: An upstream answer at most this long, of a text type, is read whole (and logged whole).
WHOLE_TEXT_MAX = LOG_CAP


def relayed_unread(response: UpstreamResponse) -> bool:
    """Whether a 200 answer is relayed as it comes rather than read whole first: anything but a
    short text (JSON lists, moderations) whose length is known."""
    length = response.headers.get("content-length", "")
    if not length.isascii() or not length.isdigit():
        return True
    return not is_text(media_type(response.headers.get("content-type", ""))) or int(length) > WHOLE_TEXT_MAX


class RelayedBody(Relayed):
    """A forwarded 200 answer, relayed chunk by chunk as the upstream sends it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.size = 0
        self.kept: list[bytes] = []  # the first LOG_CAP + 1 bytes, for a text answer's row
        self.kept_size = 0
        self.content_type = self.response.headers.get("content-type", "")

    async def _relay(self, send: Send) -> str | None:
        chunks = self.response.iter_bytes(bounded=False)  # held nowhere: any size may pass
        error: str | None = None
        try:
            while True:
                try:
                    chunk = await self._next_chunk(chunks)
                except TimeoutError:
                    error = f"upstream sent nothing for {self.idle_timeout:g}s mid-body, after {self.size} bytes"
                    break
                if chunk is None:
                    break
                self._tally(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except UpstreamUnreachable as exc:
            error = f"upstream broke off after {self.size} bytes: {exc}"
        finally:
            await chunks.aclose()
        self._finished = True
        self._record(error)  # before the end leaves
        if error is not None:
            log.warning("forwarded answer of request %s: %s; the client's connection is cut", self.record.request_id, error)
            cut = self.scope.get(CUT_ANSWER)
            if cut is not None:  # (elsewhere, the server closes the connection of an unfinished answer)
                cut()  # no end of body: the client sees a cut answer
            return error
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return None

    def _tally(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.kept_size <= LOG_CAP:
            self.kept.append(chunk[: LOG_CAP + 1 - self.kept_size])
            self.kept_size += len(self.kept[-1])

    def _fill_record(self) -> None:
        logged, note = logged_body(b"".join(self.kept), self.content_type, "response_json", size=self.size)
        if note:
            self.record.notes.append(note)
        self.record.response_body = logged.encode() if logged is not None else None


def relayed_headers(response: UpstreamResponse, headers: Mapping[str, str]) -> dict[str, str]:
    """`headers`, with the upstream's Content-Length when the bytes relayed are the bytes it sent
    (not decoded from gzip): the client then knows the size, and sees a cut answer as cut."""
    length = response.headers.get("content-length")
    if length is not None and not response.headers.get("content-encoding"):
        return {**headers, "content-length": length}
    return dict(headers)
