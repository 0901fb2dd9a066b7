"""Large server-sent events through the proxy's three stream readers, in CPU seconds.

The chat relay (`proxy.streaming.StreamRelay`), the Responses relay
(`proxy.responses.relay.ResponsesRelay`) and the chat-to-Responses translator
(`proxy.responses.translate_answer.StreamTranslator`) each get one event of SIZE MB in
64 KiB chunks, as an upstream's socket delivers it. The time is what the event loop (and
every other call) waits while one such event passes; it should grow with the size, not with
its square (proxy/event_buffer.py).

    .venv/bin/python bench/event_bench.py [--sizes 4,16,32] [--chunk 65536]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.responses.relay import ResponsesRelay  # noqa: E402
from proxy.responses.translate_answer import StreamTranslator  # noqa: E402
from proxy.streaming import StreamRelay  # noqa: E402


def readers() -> dict[str, object]:
    return {
        "chat relay": StreamRelay("chat/completions", False),
        "Responses relay": ResponsesRelay(),
        "translator": StreamTranslator({"model": "m", "input": "x"}, "m"),
    }


def event(size_mb: int) -> bytes:
    text = "x" * (size_mb << 20)
    return b'data: {"choices":[{"index":0,"delta":{"content":"' + text.encode() + b'"}}]}\n\n'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="4,16,32", help="event sizes in MB, comma-separated")
    parser.add_argument("--chunk", type=int, default=65536, help="bytes per chunk")
    args = parser.parse_args(argv)
    print("| event | " + " | ".join(readers()) + " |")
    print("|---|" + "---|" * len(readers()))
    for size in (int(s) for s in args.sizes.split(",")):
        data, cells = event(size), []
        for reader in readers().values():
            started = time.process_time()
            for i in range(0, len(data), args.chunk):
                reader.feed(data[i : i + args.chunk])  # type: ignore[attr-defined]
            cells.append(f"{time.process_time() - started:.3f} s")
        print(f"| {size} MB | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
