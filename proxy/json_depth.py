"""How deeply a JSON text nests, found without parsing it, and refused past a limit.

orjson parses up to 1,024 levels but serialises only 254, and the proxy serialises what
clients send (cache keys, log rows): a body nested 300 levels deep would parse, then fail
later as a fault of the proxy. The check counts brackets outside strings. Most bodies hold
fewer brackets in all than the limit, and are let through after two byte counts.
"""

from __future__ import annotations

import re

from .errors import ProxyError

#: A JSON string, escapes included: brackets inside one are text, not structure.
STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
OPENERS = frozenset(b"[{")
BRACKETS = b"[]{}"
#: Every byte but the four brackets, for bytes.translate's delete argument.
NOT_BRACKETS = bytes(b for b in range(256) if b not in BRACKETS)


def depth_exceeds(text: bytes, limit: int) -> bool:
    """Whether `text` (JSON, valid or not) nests arrays and objects more than `limit` deep."""
    if text.count(b"[") + text.count(b"{") <= limit:
        return False
    depth = 0
    for byte in STRING.sub(b"", text).translate(None, NOT_BRACKETS):
        if byte in OPENERS:
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def check_depth(text: bytes, limit: int, what: str = "The request body", param: str | None = None,
                code: str = "invalid_json") -> None:
    """400 when `text` nests deeper than `limit`."""
    if depth_exceeds(text, limit):
        raise ProxyError(
            400, f"{what} nests arrays and objects more than {limit} levels deep.", param=param, code=code
        )
