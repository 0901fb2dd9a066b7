"""The `Host` header allow-list: requests addressed to any other name get 421 and go no further.

A web page can make its visitor's browser call the proxy under a name the page's owner
controls (DNS rebinding: `evil.example` first resolves to the page's server, then to
127.0.0.1). The browser then treats the proxy as the page's own origin and lets the page read
the answers, `/ui/` included. The `Host` header still says `evil.example`, so refusing every
name that is not the proxy's own stops it. The check runs in front of everything, a set
lookup per request.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import ProxyError

#: The names a client on this machine uses, whatever the bound address.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
#: `Host` values seen and allowed, kept so that the next request with the same value costs one
#: lookup; bounded, since a port may be any of 65,535.
SEEN_CAP = 1024


class HostError(ValueError):
    """An entry of the allow-list that cannot be a host name."""


def normalise(entry: str) -> str:
    """An allow-list entry as it is compared: lower case, no trailing dot, IPv6 in brackets.
    A port is refused: every port of an allowed name is allowed."""
    name = entry.strip().lower().rstrip(".")
    if name in ("*", ""):
        return name
    if name.startswith("["):
        if not name.endswith("]") or ":" not in name:
            raise HostError(f"{entry!r} is not a host: write an IPv6 address as [::1], without a port")
        return name
    if name.count(":") >= 2:  # a bare IPv6 address
        return f"[{name}]"
    if ":" in name or "/" in name or " " in name:
        raise HostError(f"{entry!r} is not a host name: write it without scheme, port or path")
    return name


def allowed_names(configured: Iterable[str], bound: str) -> tuple[str, ...]:
    """The allow-list: the configured entries, or by default the loopback names and the bound address."""
    names = [normalise(entry) for entry in configured]
    names = [name for name in names if name]
    if not names:
        names = [*LOOPBACK_NAMES, normalise(bound)] if bound else list(LOOPBACK_NAMES)
    return tuple(dict.fromkeys(names))


class HostAllowList:
    """Which `Host` values may reach the app; `.example.org` allows the name and its subdomains."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = frozenset(n for n in names if not n.startswith("."))
        self.suffixes = tuple(n for n in names if n.startswith("."))
        self._seen: set[bytes] = set()

    def allows(self, headers: Iterable[tuple[bytes, bytes]]) -> bool:
        """Whether the one `Host` header of an ASGI scope's headers names an allowed host. A
        second `Host` is refused (RFC 9112 §3.2): a proxy in front may read the other one."""
        hosts = [value for name, value in headers if name == b"host"]
        if len(hosts) != 1:
            return False
        value = hosts[0]
        return value in self._seen or self._check(value)

    def _check(self, value: bytes) -> bool:
        host = _host_part(value.decode("latin-1").strip().lower())
        allowed = host in self.names or any(host.endswith(s) or host == s[1:] for s in self.suffixes)
        if allowed and len(self._seen) < SEEN_CAP:
            self._seen.add(value)
        return allowed


def _host_part(value: str) -> str:
    """`host` of `host[:port]` (`[v6]` of `[v6][:port]`), without a trailing dot."""
    if value.startswith("["):
        end = value.find("]")
        return value[: end + 1] if end > 0 else value
    host, colon, port = value.rpartition(":")
    if colon and port.isascii() and port.isdigit():
        value = host
    return value.rstrip(".")


def misdirected() -> ASGIApp:
    """The ASGI app that answers a request for another host: 421, in OpenAI's error shape, no row."""
    body = ProxyError(
        421,
        "This proxy does not serve the host named in the request's Host header. "
        "Its operator can allow the name in ALLOWED_HOSTS.",
        code="misdirected_request",
    ).json()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "http.response.start", "status": 421, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app
