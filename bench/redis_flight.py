"""Redis single-flight's added latency, for a leader and a follower, against the in-process flight.

    .venv/bin/python bench/redis_flight.py [--rounds 10] [--block 200] [--pairs 50] [--redis-url URL]

Processes: the fake upstream (bench/fake_upstream.py) on core 1; the proxies on core 0, each
`python -m proxy serve` logging to its own SQLite file:

* **local**: one proxy without REDIS_URL (single-flight within the process);
* **redis A** and **redis B**: two proxies on the same REDIS_URL (a key prefix of this run,
  deleted at the end).

Two measurements, interleaved in rounds (the order rotating), medians of the rounds' medians:

* **leader**: one request at a time, each body unique, to a 0 ms upstream, so every request
  leads its own flight. Through `redis A` the leader takes the lease (one Redis round trip)
  before calling upstream, and hands its answer over in the background. Added = redis − local.
* **follower**: pairs of identical requests to a 50 ms upstream: the leader's request goes
  out, the follower's 10 ms later. In-process both go to `local` (the follower joins the flight
  in the process); with Redis the leader goes to A and the follower to B, which waits for A's
  answer through Redis. The follower's delay is the time from the leader's answer to its own;
  added = redis − local.

The clients are raw sockets (bench/clients.py), on core 1 with the upstream. Results are
printed and written to bench/results/redis_flight.json.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import selectors
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import clients  # noqa: E402
from procs import (  # noqa: E402
    PINNING, PROXY_CPU, PY, ROOT, Process, clean_env, free_port, pinned, script_scratch, wait_http,
)
from servers import Upstream  # noqa: E402

UPSTREAM_MS = 50
FOLLOWER_GAP_S = 0.01
RUN = secrets.token_hex(4)


class Proxy:
    def __init__(self, name: str, upstream: Upstream, tmp: Path, redis_url: str | None, prefix: str) -> None:
        self.name = name
        config = tmp / f"{name}.toml"
        config.write_text(
            f'[providers.lat{UPSTREAM_MS}]\nbase_url = "{upstream.base}/t-flight/lat-{UPSTREAM_MS}/v1"\n'
            'api_key_env = "OPENAI_API_KEY"\n\n'
            f'[redis]\nprefix = "{prefix}"\n'
        )
        self.port = free_port()
        env = clean_env(OPENAI_API_KEY="sk-bench-upstream", OPENAI_BASE_URL=f"{upstream.base}/t-flight/v1", PYTHONPATH=str(ROOT))
        env.pop("REDIS_URL", None)
        if redis_url:
            env["REDIS_URL"] = redis_url
        cmd = [PY, "-m", "proxy", "serve", "--host", "127.0.0.1", "--port", str(self.port), "--db", str(tmp / f"{name}.db"),
               "--no-ui", "--config", str(config), "--log-level", "warning"]
        self.proc = Process(name, [*pinned(PROXY_CPU), *cmd], tmp / f"{name}.log", env=env, cwd=tmp)
        wait_http(self.port, "/healthz", self.proc, timeout=60)
        self.conn = clients.Conn("127.0.0.1", self.port)

    def request(self, model: str, text: str) -> bytes:
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 16}).encode()
        return clients.build_request("127.0.0.1", self.port, "/v1/chat/completions", body)


def answer_done(buffer: bytes) -> bool:
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return False
    length = clients.header_value(buffer[:end].lower(), b"\r\ncontent-length:")
    return length is not None and len(buffer) >= end + 4 + int(length)


def pair(leader: Proxy, follower: Proxy, text: str) -> float | None:
    """Send identical requests (the follower's 10 ms after the leader's); ms from the leader's answer
    to the follower's, or None when the second did not join the first's flight (a stalled machine)."""
    model = f"lat{UPSTREAM_MS}/bench-model"
    socks = []
    for proxy in (leader, follower):
        sock = socket.create_connection(("127.0.0.1", proxy.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks.append(sock)
    try:
        socks[0].sendall(leader.request(model, text))
        time.sleep(FOLLOWER_GAP_S)
        socks[1].sendall(follower.request(model, text))
        done: dict[int, int] = {}
        buffers = {0: b"", 1: b""}
        with selectors.DefaultSelector() as selector:
            for i, sock in enumerate(socks):
                selector.register(sock, selectors.EVENT_READ, i)
            while len(done) < 2:
                for key, _ in selector.select(timeout=10):
                    i = key.data
                    buffers[i] += key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if i not in done and answer_done(buffers[i]):
                        done[i] = time.perf_counter_ns()
                        selector.unregister(key.fileobj)
        for i in (0, 1):
            assert buffers[i].startswith(b"HTTP/1.1 200"), buffers[i][:200]
        if b"x-study-cache: dedup" not in buffers[1].lower():
            return None
        return (done[1] - done[0]) / 1e6
    finally:
        for sock in socks:
            sock.close()


def sequential(proxy: Proxy, count: int) -> list[float]:
    proxy.conn.open()
    proxy.conn.call(proxy.request("openai/bench-model", f"warm {RUN} {secrets.token_hex(4)}"))
    times = []
    for _ in range(count):
        status, ns, _ = proxy.conn.call(proxy.request("openai/bench-model", f"leader {RUN} {secrets.token_hex(8)}"))
        assert status == 200
        times.append(ns / 1e6)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--block", type=int, default=200, help="sequential leader requests per target and round")
    parser.add_argument("--pairs", type=int, default=30, help="leader/follower pairs per target and round")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "redis_flight.json"))
    args = parser.parse_args(argv)
    tmp = script_scratch("flight")
    prefix = f"bench-flight-{RUN}:"
    upstream = Upstream(tmp)
    try:
        local = Proxy("local", upstream, tmp, None, prefix)
        a = Proxy("redis-a", upstream, tmp, args.redis_url, prefix)
        b = Proxy("redis-b", upstream, tmp, args.redis_url, prefix)
        for proxy in (local, a, b):
            sequential(proxy, 50)  # warm-up
        leader: dict[str, list[float]] = {"local": [], "redis": []}
        follower: dict[str, list[float]] = {"local": [], "redis": []}
        missed = {"local": 0, "redis": 0}  # pairs whose second request did not join the first's flight
        for r in range(args.rounds):
            order = ["local", "redis"] if r % 2 == 0 else ["redis", "local"]
            for name in order:
                leader[name].append(median(sequential(local if name == "local" else a, args.block)))
            for name in order:
                gaps = [pair(local, local, f"pair {RUN} {r} {i} {secrets.token_hex(4)}") if name == "local"
                        else pair(a, b, f"pair {RUN} {r} {i} {secrets.token_hex(4)}") for i in range(args.pairs)]
                joined = [gap for gap in gaps if gap is not None]
                missed[name] += len(gaps) - len(joined)
                follower[name].append(median(joined))
            print(f"round {r + 1}/{args.rounds}: leader local {leader['local'][-1]:.3f} ms, redis {leader['redis'][-1]:.3f} ms; "
                  f"follower after leader: local {follower['local'][-1]:.3f} ms, redis {follower['redis'][-1]:.3f} ms", flush=True)
        added_leader = [red - loc for loc, red in zip(leader["local"], leader["redis"])]
        added_follower = [red - loc for loc, red in zip(follower["local"], follower["redis"])]
        results: dict[str, Any] = {
            "command": "python bench/redis_flight.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "pinning": "proxies on core 0, fake upstream and clients on core 1" if PINNING else "none",
            "rounds": args.rounds, "block": args.block, "pairs": args.pairs, "upstream_ms_follower": UPSTREAM_MS,
            "leader_ms": {k: round(median(v), 3) for k, v in leader.items()},
            "leader_added_ms": round(median(added_leader), 3),
            "follower_after_leader_ms": {k: round(median(v), 3) for k, v in follower.items()},
            "follower_added_ms": round(median(added_follower), 3),
            "pairs_not_joined": missed,
            "load_average": os.getloadavg(),
        }
        print(json.dumps(results, indent=2))
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
        return 0
    finally:
        Process.stop_all()
        _delete_prefix(args.redis_url, prefix)
        for path in sorted(tmp.glob("*")):
            path.unlink(missing_ok=True)
        tmp.rmdir()


def _delete_prefix(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        for key in client.scan_iter(match=prefix + "*"):
            client.delete(key)
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
