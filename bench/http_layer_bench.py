"""The HTTP layer's own cost per request: uvicorn's httptools protocol against the proxy's
GuardedProtocol (header limit, head and body timeouts, connection cap), and the per-request
checks in front of the app (Host allow-list, JSON depth pre-check).

CPU time in one process, no sockets, no other process: a fake transport, a keep-alive
connection, one chat request per read, an app that answers at once. The two sides run in
short alternating rounds; the medians and the best rounds are printed (on a busy machine a
single round can be off by a tenth).

    .venv/bin/python bench/http_layer_bench.py [--requests 5000] [--rounds 41]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import timeit
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from uvicorn.config import Config  # noqa: E402
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol  # noqa: E402
from uvicorn.server import ServerState  # noqa: E402

from proxy.hosts import HostAllowList, allowed_names  # noqa: E402
from proxy.http_protocol import protocol_class  # noqa: E402
from proxy.json_depth import depth_exceeds  # noqa: E402
from proxy.limits import ClientLimits  # noqa: E402

BODY = b'{"model":"bench-model","messages":[{"role":"user","content":"hi 1234567890"}]}'
REQUEST = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nContent-Type: application/json\r\n"
    b"User-Agent: OpenAI/Python 1.0\r\nAccept: application/json\r\nAuthorization: Bearer sk-x\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
)
ANSWER = b'{"id":"x","choices":[]}'


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.written += len(data)

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        pass


async def app(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(ANSWER))]})
    await send({"type": "http.response.body", "body": ANSWER})


async def run(protocol_type: type, requests: int) -> float:
    """CPU seconds for `requests` requests on one keep-alive connection."""
    config = Config(app, http=protocol_type, lifespan="off", access_log=False, log_level="warning", proxy_headers=False)
    config.load()
    protocol = protocol_type(config=config, server_state=ServerState(), app_state={})
    protocol.connection_made(Transport())
    started = time.process_time()
    for _ in range(requests):
        protocol.data_received(REQUEST)
        await asyncio.sleep(0)  # the request's task runs the app and answers
        await asyncio.sleep(0)
    elapsed = time.process_time() - started
    protocol.connection_lost(None)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=41)
    args = parser.parse_args()
    sides = {"uvicorn HttpToolsProtocol": HttpToolsProtocol, "GuardedProtocol": protocol_class(ClientLimits(), 10_000)}
    rounds: dict[str, list[float]] = {name: [] for name in sides}
    for i in range(args.rounds):
        for name, kind in (sides.items() if i % 2 else reversed(sides.items())):
            rounds[name].append(asyncio.run(run(kind, args.requests)) / args.requests * 1e6)
    print(f"HTTP layer, µs of CPU per request ({args.rounds} rounds of {args.requests:,}): median, best")
    medians = {name: statistics.median(times) for name, times in rounds.items()}
    for name, times in rounds.items():
        print(f"  {name:26} {medians[name]:6.2f} {min(times):6.2f}")
    first, second = medians.values()
    print(f"  added by GuardedProtocol   {second - first:+6.2f} (median), {min(rounds['GuardedProtocol']) - min(rounds['uvicorn HttpToolsProtocol']):+6.2f} (best)")

    hosts = HostAllowList(allowed_names([], "127.0.0.1"))
    headers = [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json")]
    hosts.allows(headers)
    n = 1_000_000
    host_ns = min(timeit.repeat(lambda: hosts.allows(headers), number=n, repeat=5)) / n * 1e9
    depth_ns = min(timeit.repeat(lambda: depth_exceeds(BODY, 128), number=n, repeat=5)) / n * 1e9
    print(f"Host allow-list check: {host_ns:.0f} ns per request")
    print(f"JSON depth pre-check of a {len(BODY)}-byte chat body: {depth_ns:.0f} ns per request")


if __name__ == "__main__":
    main()
