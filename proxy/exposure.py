"""Whether `serve` may start where it was asked to listen.

Bound to a loopback address the proxy is reachable from this machine only. Bound to any
other address with no proxy keys (`[clients]`), anyone who can reach the port spends the
operator's provider keys and reads the whole log through `/ui/`: the proxy then refuses to
start unless told to run open (`--allow-open` or `STUDY_ALLOW_OPEN=1`, for a container whose port
is published to the host only, or a trusted network).
"""

from __future__ import annotations

import ipaddress
import socket


def is_loopback(host: str) -> bool:
    """Whether every address `host` names is a loopback one (127.0.0.0/8, ::1, `localhost`)."""
    name = host.strip().strip("[]")
    if not name:
        return False  # every interface
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(name, None)}
    except (OSError, UnicodeError):
        return False
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def open_bind_refusal(host: str, has_client_keys: bool, allow_open: bool) -> str | None:
    """Why `serve` must not start on `host`; None when it may."""
    if allow_open or has_client_keys or is_loopback(host):
        return None
    return (
        f"refusing to listen on {host}, an address other machines may reach, with no proxy keys: "
        "anyone who can reach it could spend your provider keys and read every logged prompt "
        "in /ui/. Configure proxy keys ([clients] in the config file), bind to 127.0.0.1, or "
        "pass --allow-open (or set STUDY_ALLOW_OPEN=1) to run open on purpose, for example in a "
        "container whose port is published on the host's loopback only."
    )
