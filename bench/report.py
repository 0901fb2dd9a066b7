"""Turn bench/run.py's results into results.json, results.md, bench.png (and bench/README.md).

    python bench/report.py [bench/results/results.json]   # redo the table and plot from saved results

The text comes from report_markdown.py (its targets table from report_goals.py), the plot
from report_plot.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from report_markdown import markdown  # noqa: E402
from report_plot import plot  # noqa: E402

README = BENCH / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def write(results: dict[str, Any], out: Path, update_readme: bool = False) -> None:
    """Write the three files into `out`, print the text, and on a full run put it into bench/README.md."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    text = markdown(results)
    (out / "results.md").write_text("# Benchmark results\n\n" + text)
    problem = plot(results, out / "bench.png")
    print()
    print(text)
    if problem:
        print(problem)
    print(f"results: {out / 'results.md'}, {out / 'results.json'}, {out / 'bench.png'}")
    if update_readme and README.exists():
        readme = README.read_text()
        if START in readme and END in readme:
            head, rest = readme.split(START, 1)
            _, tail = rest.split(END, 1)
            body = text.replace("](bench.png)", "](results/bench.png)")
            README.write_text(f"{head}{START}\n{body}{END}{tail}")
            print(f"updated {README}")


if __name__ == "__main__":
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else BENCH / "results" / "results.json"
    write(json.loads(source.read_text()), source.parent, update_readme=False)
