"""proxy/event_buffer.py: events cut at their ends whatever the chunking, CRLF or LF."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.event_buffer import EventBuffer, events_of

line_ends = st.sampled_from([b"\n", b"\r\n"])
fields = st.binary(max_size=6).map(lambda b: bytes(c for c in b if c not in b"\r\n"))
event_streams = st.lists(st.tuples(fields, line_ends), max_size=6).map(
    lambda events: b"".join(b"data: " + text + end + end for text, end in events)
)


@settings(max_examples=400, deadline=None, database=None, derandomize=True)
@given(event_streams, st.sampled_from([b"", b"data: tail", b"data: t\r"]), st.lists(st.integers(1, 9), min_size=1))
def test_any_chunking_gives_the_events_of_the_whole_stream(stream, tail, sizes):
    stream += tail
    whole = stream.replace(b"\r\n", b"\n")
    buffer, got, at, turn = EventBuffer(), [], 0, 0
    while at < len(stream):
        size = sizes[turn % len(sizes)]
        got += events_of(buffer.push(stream[at : at + size]))
        at, turn = at + size, turn + 1
    assert got == events_of(whole)
    assert buffer.rest() == whole[sum(map(len, got)) :]
    assert buffer.rest() == b""  # given once


def test_an_event_end_split_between_chunks_is_found():
    buffer = EventBuffer()
    assert buffer.push(b"data: a\r") == b""
    assert buffer.push(b"\n\r") == b""
    assert buffer.push(b"\ndata: b\n") == b"data: a\n\n"
    assert buffer.push(b"\n") == b"data: b\n\n"
