"""bench.png: throughput against connections (b), latencies (a, c, f) and memory (e), in four panels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import scenario_responses
from report_format import f
from targets import LABEL, TARGET_NAMES


def plot(r: dict[str, Any], path: Path) -> str | None:
    """Draw the run into `path`; without matplotlib, say why there is no plot instead."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return f"no plot: {exc} (pip install -r bench/requirements.txt)"
    colors = {"direct": "#888888", "ours": "#1f77b4", "litellm": "#d62728", "portkey": "#2ca02c", "translated": "#9ecae1"}
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    cells = r.get("b", {}).get("cells", [])
    for ax, latency in ((axes[0][0], 0), (axes[0][1], 50)):
        sel = [c for c in cells if c["latency_ms"] == latency]
        if not sel:
            ax.set_visible(False)
            continue
        for name in TARGET_NAMES:
            pts = [(c["conns"], c["targets"][name]["rps"]) for c in sel if name in c["targets"]]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=colors[name], label=LABEL[name])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks([c["conns"] for c in sel], [str(c["conns"]) for c in sel])
        ax.set_xlabel("connections")
        ax.set_ylabel("requests / s (median)")
        ax.set_title(f"b. throughput, upstream answers after {latency} ms")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    ax = axes[1][0]
    groups = []
    a = r.get("a", {}).get("targets", {})
    c = r.get("c", {}).get("targets", {})
    if a:
        groups += [("a. p50", {k: v["p50_ms"] for k, v in a.items()}), ("a. p99", {k: v["p99_ms"] for k, v in a.items()})]
    if c:
        groups += [("c. TTFT p50", {k: v["ttft_p50_ms"] for k, v in c.items()}),
                   ("c. chunk gap p99", {k: v["gap_p99_ms"] for k, v in c.items()})]
    fs = r.get("f", {}).get("sequential", {}).get("targets", {})
    ft = r.get("f", {}).get("streaming", {}).get("targets", {})
    if fs:
        groups.append(("f. p50", {k: v["p50_ms"] for k, v in fs.items()}))
    if ft:
        groups.append(("f. TTFT p50", {k: v["ttft_p50_ms"] for k, v in ft.items()}))
    if groups:
        series = [x for x in (*TARGET_NAMES, "translated") if any(x in vals for _, vals in groups)]
        width = 0.8 / len(series)
        for i, name in enumerate(series):
            xs = [g for g, (_, vals) in enumerate(groups) if name in vals]
            ys = [groups[g][1][name] for g in xs]
            bars = ax.bar([x + (i - (len(series) - 1) / 2) * width for x in xs], ys, width, color=colors[name],
                          label=scenario_responses.LABEL[name] if name == "translated" else LABEL[name])
            ax.bar_label(bars, [f"{y:.2f}" for y in ys], fontsize=7)
        ax.set_xticks(range(len(groups)), [g[0].replace(" ", "\n", 1) for g in groups], fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("ms (median of rounds)")
        ax.set_title("a. sequential latency, c. streaming (50 chunks, 2 ms apart), f. Responses API", fontsize=10)
        ax.legend()
        ax.grid(True, axis="y", which="both", alpha=0.3)
    else:
        ax.set_visible(False)
    ax = axes[1][1]
    e = r.get("e")
    runs = ([("ours", e)] if e and "samples" in e else []) + list((e or {}).get("references", {}).items())
    if runs:
        for name, run in runs:
            s = [x for x in run["samples"] if x["rss_kib"]]
            ax.plot([x["requests"] for x in s], [x["rss_kib"] / 1024 for x in s], "o-", color=colors[name],
                    label=f"{LABEL[name]} ({f(run['growth_percent'], 1)} % from {run['mark_requests']:,})")
        ax.set_ylim(bottom=0)
        ax.set_xlabel("requests")
        ax.set_ylabel("RSS, MiB")
        ax.set_title("e. memory over the run (RSS)")
        ax.legend()
        ax.grid(True, alpha=0.3)
    else:
        ax.set_visible(False)
    m = r.get("machine", {})
    fig.suptitle(f"Study Query LLM bench, {r.get('started', '')} — {m.get('cores', '?')} cores, {m.get('cpu', '')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
