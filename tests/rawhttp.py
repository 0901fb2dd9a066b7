"""A raw-socket HTTP/1.1 client for the tests that need what real clients never send: any
header bytes, wrong framing, a head or body sent slowly or not at all."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from typing import Any


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-cased names; the last value of a repeated header
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def build(method: str, path: str, host: str, headers: list[tuple[bytes, bytes]], body: bytes = b"",
          framing: str = "length") -> bytes:
    """The request's bytes. `framing`: `length` (a correct Content-Length), `chunked`, or `none`
    (neither header: the caller frames it, or sends no body)."""
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: " + host.encode()]
    lines += [name + b": " + value for name, value in headers]
    if framing == "length":
        lines.append(b"Content-Length: %d" % len(body))
    elif framing == "chunked":
        lines.append(b"Transfer-Encoding: chunked")
        body = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def connect(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def read_response(sock: socket.socket, timeout: float = 10.0) -> RawResponse | None:
    """The one response on `sock`, read until the server closes (or the body's framing ends);
    None when the server closed without answering."""
    data = b""
    deadline = time.monotonic() + timeout
    while b"\r\n\r\n" not in data:
        chunk = _recv(sock, deadline)
        if not chunk:
            return None if not data else _fail(data)
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    status = int(status_line.split()[1])
    if "content-length" in headers:
        size = int(headers["content-length"])
        while len(rest) < size:
            chunk = _recv(sock, deadline)
            if not chunk:
                break
            rest += chunk
        return RawResponse(status, headers, rest[:size])
    if headers.get("transfer-encoding") == "chunked":
        while not rest.endswith(b"0\r\n\r\n"):
            chunk = _recv(sock, deadline)
            if not chunk:
                break
            rest += chunk
        return RawResponse(status, headers, _dechunk(rest))
    while chunk := _recv(sock, deadline):
        rest += chunk
    return RawResponse(status, headers, rest)


def exchange(port: int, request: bytes, timeout: float = 10.0) -> RawResponse | None:
    with connect(port, timeout) as sock:
        sock.sendall(request)
        return read_response(sock, timeout)


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """Whether the server closes `sock` (EOF or reset) within `timeout` seconds."""
    sock.settimeout(timeout)
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _recv(sock: socket.socket, deadline: float) -> bytes:
    sock.settimeout(max(deadline - time.monotonic(), 0.01))
    try:
        return sock.recv(65536)
    except ConnectionResetError:
        return b""


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2:]
    return out


def _fail(data: bytes) -> RawResponse:
    raise AssertionError(f"the server closed mid-head: {data[:200]!r}")
