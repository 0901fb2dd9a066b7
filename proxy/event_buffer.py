"""Upstream server-sent events cut at their ends, in time linear in the bytes.

Each relay (chat and completions, the Responses API, the translation of chat streams into
Responses events) gets upstream bytes in arbitrary chunks and must pass on whole events.
Appending each chunk to one bytes object and searching all of it again was quadratic: one
32 MB event (a large final `response`, an image's partial frames) held the event loop, and
every other call, for 17 s. Here a partial event is kept as its pieces, only the bytes that
just arrived are searched for the blank line that ends an event, and line ends are made
`\n` one chunk at a time (a `\r` that ends a chunk waits for the next, which may begin with
its `\n`).
"""

from __future__ import annotations

#: What ends an event, once line ends are `\n`.
EVENT_END = b"\n\n"


class EventBuffer:
    __slots__ = ("_held", "_carry")

    def __init__(self) -> None:
        self._held: list[bytes] = []  # the start of an event not complete yet, line ends made `\n`
        self._carry = b""  # a chunk's last `\r`, which may be the start of a CRLF

    def push(self, chunk: bytes) -> bytes:
        """Every event the stream has completed so far and not given before (each ends with a
        blank line), or b"" when `chunk` completed none."""
        if self._carry:
            chunk, self._carry = self._carry + chunk, b""
        if chunk.endswith(b"\r"):
            chunk, self._carry = chunk[:-1], b"\r"
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n")
        if not chunk:
            return b""
        held = self._held
        before = held[-1][-1:] if held else b""  # an event's end may straddle two chunks
        found = (before + chunk).rfind(EVENT_END)
        if found < 0:
            held.append(chunk)
            return b""
        cut = found - len(before) + len(EVENT_END)
        ready = b"".join([*held, chunk[:cut]]) if held else chunk[:cut]
        self._held = [chunk[cut:]] if cut < len(chunk) else []
        return ready

    def rest(self) -> bytes:
        """What is left when the stream ends: the start of an event it never completed."""
        rest = b"".join(self._held) + self._carry
        self._held, self._carry = [], b""
        return rest


def events_of(ready: bytes) -> list[bytes]:
    """The events of `push()`'s answer, each with its closing blank line."""
    events, start = [], 0
    while (end := ready.find(EVENT_END, start)) >= 0:
        events.append(ready[start : end + len(EVENT_END)])
        start = end + len(EVENT_END)
    return events
