"""What one client may cost the server: header bytes, waiting time, connections, JSON depth.

These are the `[server]` settings that protect the process from hostile and slow clients
(the body size limit, `max_body_bytes`, is older and lives in `Settings` itself), and how long
a stopping server waits for them. The HTTP layer (proxy/http_protocol.py) applies the first
four, the request handlers the depth, uvicorn the shutdown grace.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass, fields

#: orjson refuses to serialise values nested deeper than 254 levels, and the proxy serialises
#: what clients send (cache keys, log rows) with a level or two added: a depth limit must stay
#: well below that.
MAX_JSON_DEPTH_CEILING = 200
#: File descriptors kept back from clients for the database, its journals, the spool,
#: Datasette and the listening socket; the rest is shared half and half between client
#: connections and the upstream connections their calls open.
RESERVED_FDS = 64
#: The scope key the HTTP layer sets when a request's body stopped arriving (its value: the
#: timeout in seconds); the body reader turns it into a 408.
BODY_TIMED_OUT = "study_query_llm.body_timed_out"
#: The scope key the HTTP layer sets when a request's body framing could not be parsed (a bad
#: chunk); the body reader turns it into a 400, with the call's row.
BODY_MALFORMED = "study_query_llm.body_malformed"
#: The scope key of a callable that ends the answer under way by closing its connection (a
#: relayed body that upstream broke off): the client sees it cut, and the server logs no error.
CUT_ANSWER = "study_query_llm.cut_answer"


@dataclass(frozen=True)
class ClientLimits:
    """`[server]` limits on each client connection and request."""

    max_header_bytes: int = 64 * 1024  # request line and headers together; more → 431
    header_timeout: float = 30.0  # from the first byte of a request (or the connection) to its last header
    body_timeout: float = 60.0  # the longest silence while a request body is arriving
    keep_alive_timeout: float = 20.0  # an idle keep-alive connection is closed after this
    max_connections: int = 0  # 0: derived from the open-file limit (connection_cap)
    max_json_depth: int = 128  # nesting of a JSON body or X-Study-Metadata; deeper → 400
    shutdown_grace: float = 30.0  # after SIGTERM, how long calls in flight may take before they are cut (503)

    def check(self) -> str | None:
        """What is wrong with these values, for a configuration error; None when they are usable."""
        for name in ("max_header_bytes", "header_timeout", "body_timeout", "keep_alive_timeout", "shutdown_grace"):
            if getattr(self, name) <= 0:
                return f"[server] {name} must be positive"
        if self.max_connections < 0:
            return "[server] max_connections must be 0 (derived from the open-file limit) or positive"
        if not 1 <= self.max_json_depth <= MAX_JSON_DEPTH_CEILING:
            return f"[server] max_json_depth must be between 1 and {MAX_JSON_DEPTH_CEILING}"
        return None


#: The `[server]` keys that set ClientLimits.
LIMIT_KEYS = frozenset(f.name for f in fields(ClientLimits))


def raise_open_file_limit() -> int:
    """Raise the soft limit on open files to the hard one (as Go's runtime and nginx's
    `worker_rlimit_nofile` do: the common soft default of 1,024 is a few hundred clients);
    return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def connection_cap(configured: int, open_files: int) -> int:
    """The most client connections served at once: `configured`, or else half of the open
    files left after RESERVED_FDS (each client call may hold an upstream connection too)."""
    if configured > 0:
        return configured
    return max(1, (open_files - RESERVED_FDS) // 2)
