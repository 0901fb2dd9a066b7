"""An answer's head and body leave in one write (proxy.http_protocol.CoalescingTransport);
a head alone (a stream whose first event is not there yet) leaves at the next turn of the loop."""

from __future__ import annotations

import asyncio
import socket
import struct
import sys

import pytest
import rawhttp

from proxy.http_protocol import CoalescingTransport


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class RecordingTransport:
    """The calls a transport gets, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes]] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.calls.append(("write", bytes(data)))

    def writelines(self, pieces: tuple[bytes, ...]) -> None:
        self.calls.append(("writelines", b"".join(pieces)))

    def close(self) -> None:
        self.closing = True
        self.calls.append(("close", b""))

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str) -> str:
        return f"extra:{name}"


def coalescing() -> tuple[RecordingTransport, CoalescingTransport]:
    """A recording transport, and the coalescing one in front of it (inside a running loop)."""
    inner = RecordingTransport()
    return inner, CoalescingTransport(inner, asyncio.get_running_loop())  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_a_head_and_its_body_go_in_one_call():
    inner, transport = coalescing()
    transport.write(b"HEAD\r\n\r\n")
    assert inner.calls == []  # held back
    transport.write(b"BODY")
    assert inner.calls == [("writelines", b"HEAD\r\n\r\nBODY")]
    await asyncio.sleep(0)  # the flush scheduled for the head finds nothing to do
    transport.write(b"MORE")
    assert inner.calls == [("writelines", b"HEAD\r\n\r\nBODY"), ("write", b"MORE")]


@pytest.mark.anyio
async def test_a_head_alone_leaves_at_the_next_turn_of_the_loop():
    inner, transport = coalescing()
    transport.write(b"HEAD")
    await asyncio.sleep(0)
    assert inner.calls == [("write", b"HEAD")]
    transport.write(b"event one")  # a stream's events then go as they come, in order
    assert inner.calls == [("write", b"HEAD"), ("write", b"event one")]


@pytest.mark.anyio
async def test_close_sends_a_held_head_first():
    inner, transport = coalescing()
    transport.write(b"HEAD")
    transport.close()
    assert inner.calls == [("write", b"HEAD"), ("close", b"")]
    await asyncio.sleep(0)
    assert len(inner.calls) == 2  # not sent twice


@pytest.mark.anyio
async def test_a_held_head_is_dropped_when_the_client_is_gone():
    inner, transport = coalescing()
    transport.write(b"HEAD")
    inner.closing = True
    await asyncio.sleep(0)
    assert inner.calls == []
    assert transport.is_closing()


@pytest.mark.anyio
async def test_everything_else_is_the_transport_s():
    inner, transport = coalescing()
    assert transport.get_extra_info("peername") == "extra:peername"


@pytest.fixture(scope="module")
def proxy(module_proxy_factory):
    return module_proxy_factory()


def data_segments_in(sock: socket.socket) -> int:
    """`tcpi_data_segs_in` of Linux's `struct tcp_info`: TCP segments with data received."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return struct.unpack_from("I", info, DATA_SEGS_IN_OFFSET)[0]


#: The field's offset in `struct tcp_info` (linux/tcp.h, since Linux 4.6).
DATA_SEGS_IN_OFFSET = 152


@pytest.mark.skipif(sys.platform != "linux", reason="counts TCP segments with Linux's TCP_INFO")
def test_the_server_answers_in_one_segment(proxy):
    """Against the real server: each answer arrives as one TCP segment (uvicorn alone sends
    the head, then the body, as two)."""
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    body = b'{"model":"mock/echo","messages":[{"role":"user","content":"one segment"}]}'
    request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    segments = []
    for _ in range(3):
        before = data_segments_in(sock)
        sock.sendall(request)
        answer = rawhttp.read_response(sock)
        assert answer is not None and answer.status == 200, answer
        segments.append(data_segments_in(sock) - before)
    sock.close()
    assert segments == [1, 1, 1]
