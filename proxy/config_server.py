"""Who may reach the server and how much they may send: `[server]`, `[clients]` and their variables.

Where an environment variable and a `[server]` key name the same list, the variable
replaces the file's list rather than adding to it, so one variable can narrow a shared
config file without editing it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .config_sections import ConfigError, section
from .hosts import HostError, allowed_names
from .limits import LIMIT_KEYS, ClientLimits

#: A browser origin as a page sends it: scheme://host[:port], no path (checked after lower-casing).
ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://[^/?#\s]+")
SERVER_KEYS = frozenset({"max_body_bytes", "max_answer_bytes", "cors_allow_origins", "allowed_hosts", *LIMIT_KEYS})


def check_server_keys(server: Mapping[str, Any]) -> None:
    """Refuse a `[server]` key the proxy does not know (timeouts are a common misplacement)."""
    unknown = set(server) - SERVER_KEYS
    if unknown:
        raise ConfigError(
            f"[server] has no setting {', '.join(sorted(unknown))} "
            "(timeouts live in [timeouts]: connect, first_byte, stream_idle)"
        )


def cors_origins(from_env: str | None, from_file: Any) -> tuple[str, ...]:
    """`CORS_ALLOW_ORIGINS` (a comma list) when it is set, else `[server] cors_allow_origins` (a list)."""
    if not isinstance(from_file, list) or not all(isinstance(o, str) for o in from_file):
        raise ConfigError("[server] cors_allow_origins must be a list of strings")
    if from_env:
        source, origins = "CORS_ALLOW_ORIGINS", from_env.split(",")
    else:
        source, origins = "[server] cors_allow_origins", from_file
    origins = [o.strip().lower() for o in origins if o.strip()]
    for origin in origins:
        if origin != "*" and not ORIGIN.fullmatch(origin):
            raise ConfigError(
                f"{source}: {origin!r} is not an origin: write scheme://host[:port] "
                "(no path, no trailing slash), or * for any origin"
            )
    return tuple(dict.fromkeys(origins))


def allowed_hosts(from_env: str | None, from_file: Any) -> tuple[str, ...]:
    """`ALLOWED_HOSTS` (a comma list) when set, else `[server] allowed_hosts`; the defaults
    (loopback names and the bound address) are filled in by the app, which knows the address."""
    if not isinstance(from_file, list) or not all(isinstance(h, str) for h in from_file):
        raise ConfigError("[server] allowed_hosts must be a list of strings")
    source, entries = ("ALLOWED_HOSTS", from_env.split(",")) if from_env else ("[server] allowed_hosts", from_file)
    try:
        return allowed_names(entries, "") if any(e.strip() for e in entries) else ()
    except HostError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def flag(value: str | None, name: str) -> bool:
    """An on/off environment variable; unset or empty is off, anything unrecognised is an error."""
    if not value:
        return False
    if value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if value.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be 1/true/yes/on or 0/false/no/off, not {value!r}")


def limits(server: Mapping[str, Any]) -> ClientLimits:
    """The per-client limits among the `[server]` keys, checked against each other."""
    found = section(ClientLimits, {k: v for k, v in server.items() if k in LIMIT_KEYS}, "server")
    problem = found.check()
    if problem:
        raise ConfigError(problem)
    return found


def client_keys(table: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    """Proxy keys → the client alias recorded in the log (the key itself never is)."""
    keys = {}
    for alias, spec in table.items():
        key = env.get(spec.get("key_env", "")) if isinstance(spec, Mapping) else spec
        if not isinstance(key, str) or not key:
            raise ConfigError(f"client {alias!r}: its key is empty or its key_env variable is unset")
        keys[key] = alias
    return keys
