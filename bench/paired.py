"""Two checkouts of the proxy side by side on one core: the ratio of their throughput.

    git worktree add ../before HEAD~3                     # the version to compare with
    python bench/paired.py --base ../before               # whole chat calls, 32 connections
    python bench/paired.py --base ../before --stream --gap-ms 0      # 50-event streams, in bursts
    python bench/paired.py --base ../before --api responses --stream # Responses API streams
    python bench/paired.py --base ../before --conns 1     # one call at a time each
    python bench/paired.py --base . --base-durability none   # what the journal costs this tree

This tree's proxy and --base's run at once, both pinned to core 0 with durability `process`
(--durability and --base-durability choose others),
the fake upstream and one wrk per proxy on core 1. Each round loads both together: the kernel
gives each proxy half of the core, so the ratio of their req/s is the inverse ratio of their
CPU cost per call, and whatever else the machine is doing weighs on both alike. On a shared
2-core VM, where one minute's throughput differs from the next by a quarter or more, this
ratio is what shows a change of a few percent. Prints each round and the median ratio.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from durability import MODES as DURABILITIES, ModeProxy  # noqa: E402
from measure import med, wrk_together  # noqa: E402
from procs import ROOT, Process, log, script_scratch, settle  # noqa: E402
from servers import Upstream  # noqa: E402
from targets import CHAT, RESPONSES, STREAM_CHUNKS  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", type=Path, required=True, help="the other checkout (a git worktree)")
    p.add_argument("--api", choices=("chat", "responses"), default="chat")
    p.add_argument("--stream", action="store_true", help=f"streamed answers of {STREAM_CHUNKS} events")
    p.add_argument("--gap-ms", type=float, default=2.0, help="between stream events (default 2)")
    p.add_argument("--durability", choices=DURABILITIES, default="process", help="this tree's (default process)")
    p.add_argument("--base-durability", choices=DURABILITIES, default="process", help="--base's (default process)")
    p.add_argument("--conns", type=int, default=32, help="connections per proxy (default 32)")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--duration", type=float, default=4.0, help="seconds per round (default 4)")
    args = p.parse_args()
    base = args.base.resolve()
    if not (base / "proxy" / "__main__.py").exists():
        p.error(f"{base} is not a checkout of this project")
    api = RESPONSES if args.api == "responses" else CHAT
    upstream_path = f"/t-paired/chunks-{STREAM_CHUNKS}/gap-{args.gap_ms:g}/v1" if args.stream else "/t-paired/v1"
    tmp = script_scratch("paired")
    try:
        upstream = Upstream(tmp)
        proxies = {label: ModeProxy(upstream, tmp, mode, label, tree=tree, upstream_path=upstream_path)
                   for label, tree, mode in (("this", ROOT, args.durability), ("base", base, args.base_durability))}
        loads = {label: (proxy.target.url("lat0", api), proxy.target.body("lat0", args.stream, api))
                 for label, proxy in proxies.items()}
        pids = [proxy.proc.pid for proxy in proxies.values()]
        what = f"{api.endpoint}{', streamed' if args.stream else ''}, {args.conns} connections each"
        log(f"paired: this tree ({ROOT}, {args.durability}) and {base} ({args.base_durability}), both on core 0: {what}, {args.rounds} rounds of {args.duration:g}s")
        wrk_together(loads, args.conns, 1.0)  # warm-up
        ratios = []
        for _ in range(args.rounds):
            settle(pids)
            found = wrk_together(loads, args.conns, args.duration)
            ratios.append(found["this"]["rps"] / found["base"]["rps"])
            log(f"  this {found['this']['rps']:,.0f} req/s, base {found['base']['rps']:,.0f} req/s: {ratios[-1]:.3f}")
        print(f"this ÷ base, req/s: {med(ratios):.3f} (rounds {min(ratios):.3f}–{max(ratios):.3f})")
    finally:
        Process.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
