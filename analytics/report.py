"""`study-query-llm report`: the provider comparison of `analytics.study`, as a terminal table
or as CSV / JSON for scripts.

    study-query-llm report [--db PATH | --database-url URL] [--since 24h] [--by provider|model|tag]
                           [--format table|csv|json] [--study NAME]

The table is for reading: a header line (which log, which window, how many calls), one row
per provider and model (or per provider, model or tag), rounded numbers. CSV and JSON carry
every column of `Study.provider_comparison` unrounded, and nothing else, so that a script
can parse them; an empty log gives a header-only CSV and `[]`.
"""

from __future__ import annotations

import argparse
import math
import sys
from datetime import datetime
from typing import Any, TextIO

from typing import TYPE_CHECKING

from .timespec import parse_duration, parse_time

if TYPE_CHECKING:  # pandas, rich and the study layer load only when a report runs, not with every CLI command
    import pandas as pd

    from .study import By

EXIT_OK = 0
EXIT_USAGE = 2

#: `--by` → `Study.provider_comparison(by=…)`; no `--by`: one row per provider and model.
BY: dict[str | None, By] = {None: "provider_model", "provider": "provider", "model": "model", "tag": "tag"}
#: What a NULL group is called in the table.
NO_GROUP = {"provider": "(none)", "model": "(none)", "tag": "(untagged)"}
#: A terminal table that is not on a terminal (a pipe, a file) gets this width, not rich's 80.
PIPE_WIDTH = 200


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `report` command's arguments (the CLI adds the sub-parser and calls `run`)."""
    database = parser.add_mutually_exclusive_group()
    database.add_argument("--db", metavar="PATH", help="SQLite file of the log")
    database.add_argument("--database-url", metavar="URL",
                          help="sqlite:///file.db or postgresql://… (default: $DATABASE_URL, else study_query_llm.db)")
    parser.add_argument("--since", type=_since, metavar="WHEN",
                        help="only calls since then: 30m, 24h, 7d, or an ISO time in UTC (default: the whole log)")
    parser.add_argument("--by", choices=("provider", "model", "tag"),
                        help="one row per provider, model or tag (default: per provider and model)")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table",
                        help="a table to read (default), or CSV / JSON records with every column for scripts")
    parser.add_argument("--study", metavar="NAME", help="only the calls of this study (the rows tagged with its name)")


def _since(text: str) -> str:
    try:
        parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def run(args: argparse.Namespace) -> int:
    """`study-query-llm report …`: 0 when the report was printed (an empty log included), 2
    when the log cannot be read."""
    database = args.database_url or args.db or default_database()
    since = parse_time(args.since) if args.since else None  # one moment for the header and the numbers
    filters: dict[str, Any] = {k: v for k, v in (("since", since), ("study", args.study)) if v is not None}
    from .study import LogError, Study

    try:
        with Study(database) as study:
            comparison = study.provider_comparison(by=BY[args.by], **filters)
            # Providers and models split the log, so their rows add up to it; tags do not (a row
            # counts once per tag), and only then is the log asked again.
            totals = study.summary(**filters) if args.by == "tag" else comparison[["calls", "errors"]].sum()
            where = study.display
    except (LogError, ValueError) as exc:
        print(f"study-query-llm report: {exc}", file=sys.stderr)
        return EXIT_USAGE
    out = sys.stdout
    if args.format == "csv":
        comparison.to_csv(out, index=False, lineterminator="\n")
    elif args.format == "json":
        out.write(comparison.to_json(orient="records", indent=2) + "\n")
    elif totals["calls"] == 0:
        print(f"No calls in {where} {scope(args, since)}: nothing to report yet.", file=out)
    else:
        print_table(comparison, header(where, args, since, totals), out)
    return EXIT_OK


def default_database() -> str:
    """Where the proxy writes by default: `$DATABASE_URL` (from the environment or `.env`)."""
    from proxy.config import DEFAULT_DATABASE_URL, read_environment

    return read_environment().get("DATABASE_URL") or DEFAULT_DATABASE_URL


def scope(args: argparse.Namespace, since: datetime | None) -> str:
    """The window and study of the report, in words."""
    if since is None:
        window = "over the whole log"
    else:
        window = f"since {since:%Y-%m-%d %H:%M} UTC" + (f" (last {args.since})" if _relative(args.since) else "")
    return window + (f", study {args.study!r}" if args.study else "")


def _relative(text: str) -> bool:
    try:
        parse_duration(text)
    except ValueError:
        return False
    return True


def header(where: str, args: argparse.Namespace, since: datetime | None, totals: pd.Series) -> str:
    calls, errors = int(totals["calls"]), int(totals["errors"])
    return f"Log {where}, {scope(args, since)}: {_counted(calls, 'call')}, {_counted(errors, 'error')} ({errors / calls:.1%})"


def _counted(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def print_table(comparison: pd.DataFrame, title: str, out: TextIO) -> None:
    """The header, the comparison as a rich table, and what its numbers mean (the header and the
    note as plain lines: rich would pad them with spaces to the table's width)."""
    keys = [c for c in ("provider", "model", "tag") if c in comparison.columns]
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for key in keys:
        table.add_column(key)
    for name, _ in COLUMNS:
        table.add_column(name, justify="right", no_wrap=True)
    for row in comparison.to_dict("records"):
        cells = [_text(row[k]) or NO_GROUP[k] for k in keys]
        table.add_row(*cells, *(cell(row) for _, cell in COLUMNS))
    print(title, file=out)
    Console(file=out, width=None if out.isatty() else PIPE_WIDTH, highlight=False).print(table)
    print(NOTE, file=out)


def _missing(value: Any) -> bool:
    import pandas as pd

    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _text(value: Any) -> str:
    return "" if _missing(value) else str(value)


def _ms(value: Any) -> str:
    """Milliseconds, as precise as they are small: 0.42, 6.9, 1,250."""
    if _missing(value):
        return "–"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def _count(value: Any) -> str:
    return "–" if _missing(value) else f"{int(value):,}"


def _usd(value: Any) -> str:
    return "–" if _missing(value) else f"{value:,.4f}"


def _share(value: Any) -> str:
    return "–" if _missing(value) else f"{value:.1%}"


#: The table's numeric columns: (heading, cell from a comparison row).
COLUMNS = (
    ("calls", lambda r: _count(r["calls"])),
    ("errors", lambda r: f"{_count(r['errors'])} ({_share(r['error_rate'])})"),
    ("p50 ms", lambda r: _ms(r["p50_latency_ms"])),
    ("p95 ms", lambda r: _ms(r["p95_latency_ms"])),
    ("p99 ms", lambda r: _ms(r["p99_latency_ms"])),
    ("TTFT p50", lambda r: _ms(r["p50_ttft_ms"])),
    ("TTFT p95", lambda r: _ms(r["p95_ttft_ms"])),
    ("tokens", lambda r: _count(r["total_tokens"])),
    ("cost $", lambda r: _usd(r["cost_usd"])),
    ("saved $", lambda r: _usd(r["saved_cost_usd"])),
    ("cached", lambda r: _share(r["cache_share"])),
)
NOTE = ("Latency and TTFT: successful calls answered upstream (no cache hit or dedup). Cost: spent, on the calls\n"
        "with a known price. Saved: what the cache hits and dedup calls would have cost.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="study-query-llm report",
                                     description="Calls, errors, latency, tokens and cost per provider and model, from the log.")
    add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """`python -m analytics.report …` (the same as `study-query-llm report …`)."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
