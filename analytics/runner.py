"""The `study` command: one prompt set × many models, through the proxy's own pipeline, into the log.

    study-query-llm study PROMPTS --models a,b,c [--repeats N] [--concurrency K] [--name NAME]
                          [--param temperature=0.2 …] [--db PATH | --database-url URL]
                          [--base-url http://host:port/v1 [--api-key KEY]] [--resume]

PROMPTS is JSONL or CSV (`analytics.prompts`). The calls are planned by `analytics.plan`,
sent in-process or to a running proxy by `analytics.study_run` (with `analytics.progress`
on stderr), and read back from the log by `analytics.study_rows`, which also prints the
comparison at the end. This module checks the command line, ties those steps together,
and says how the run ended: its exit code and, when calls are left, the command that
finishes them.

Every row of a study carries:

* `tags` = `["<name>"]` (`X-Study-Tags`) and `session_id` = `<name>` (`X-Study-Session`);
* `metadata` = `{"study", "run", "item", "repeat", "input_hash", …the item's own fields}`
  (`X-Study-Metadata`, which the proxy merges into the row and never sends upstream).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any

from .plan import Call, parse_models, parse_params, plan_calls
from .progress import Progress
from .prompts import StudyError, load_prompts
from .study_rows import finished_keys, print_comparison, read_study_rows
from .study_run import Outcome, run_in_process, run_over_network, wait_for_log

DEFAULT_CONCURRENCY = 4
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+/-]{0,99}$")

EXIT_OK = 0
EXIT_FAILED_CALLS = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def default_name(prompts: str | Path) -> str:
    """Without `--name`: the prompt file's stem, made fit for a tag."""
    stem = re.sub(r"[^A-Za-z0-9._:@+/-]+", "-", Path(prompts).stem).strip("-._") or "study"
    return stem[:100]


def check_name(name: str) -> str:
    """The name becomes a tag and a session id: a word of safe characters, or `StudyError`."""
    if not NAME_PATTERN.match(name):
        raise StudyError(
            f"--name {name!r}: use letters, digits and . _ : @ + / - (no spaces or commas; "
            "it becomes a tag), starting with a letter or digit, at most 100 characters"
        )
    return name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `study` command's arguments (the CLI adds the sub-parser and calls `run`)."""
    parser.add_argument("prompts", metavar="PROMPTS",
                        help='JSONL ({"prompt": …} or {"messages": […]} per line) or CSV with a "prompt" column')
    parser.add_argument("--models", required=True, metavar="A,B,C", help="comma-separated models, as a client names them")
    parser.add_argument("--repeats", type=_positive_int, default=1, metavar="N", help="calls per prompt and model (default 1)")
    parser.add_argument("--concurrency", type=_positive_int, default=DEFAULT_CONCURRENCY, metavar="K",
                        help=f"calls in flight at once (default {DEFAULT_CONCURRENCY})")
    parser.add_argument("--name", help="the study's name, tagged on every row (default: the prompt file's name)")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="a request parameter, e.g. temperature=0.2 or max_tokens=200 (JSON values); repeatable")
    parser.add_argument("--resume", action="store_true",
                        help="run only the calls that have no successful row of this study in the log")
    parser.add_argument("--retries", type=_non_negative_int, metavar="N",
                        help="upstream retries per call (X-Study-Retries; default: the proxy's)")
    parser.add_argument("--cache", choices=("off", "on", "refresh"), default="off",
                        help="the proxy's answer cache for these calls (default off: every call reaches a model)")
    database = parser.add_mutually_exclusive_group()
    database.add_argument("--db", metavar="PATH", help="SQLite file of the log")
    database.add_argument("--database-url", metavar="URL", help="sqlite:///file.db or postgresql://… (default: $DATABASE_URL)")
    parser.add_argument("--config", metavar="FILE", help="TOML file with extra providers and aliases (in-process mode)")
    parser.add_argument("--base-url", metavar="URL",
                        help="a running proxy's OpenAI base URL, e.g. http://127.0.0.1:8000/v1 (default: run in-process)")
    parser.add_argument("--api-key", metavar="KEY",
                        help="the running proxy's key, if it has [clients] (default: $STUDY_QUERY_LLM_API_KEY)")


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text}")
    return value


def run(args: argparse.Namespace) -> int:
    """`study-query-llm study …`: 0 when every call succeeded, 1 when some failed or were
    skipped, 2 for bad input, 130 when interrupted."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        return asyncio.run(_run(args))
    except StudyError as exc:
        print(f"study-query-llm study: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("study-query-llm study: stopped at once; rows of calls that had finished may be missing "
              "from the log. Re-run with --resume to finish the study.", file=sys.stderr)
        return EXIT_INTERRUPTED


async def _run(args: argparse.Namespace) -> int:
    from proxy.config import ConfigError, load_settings

    items = load_prompts(args.prompts)
    models = parse_models(args.models)
    params = parse_params(args.param)
    name = check_name(args.name or default_name(args.prompts))
    network = args.base_url is not None
    if network and args.config:
        raise StudyError("--config configures the in-process proxy; with --base-url the running proxy's configuration applies")
    if not network and args.api_key:
        raise StudyError("--api-key is for a running proxy (--base-url); in-process calls need no proxy key")

    settings = None
    database: str | None = args.database_url or args.db
    if not network:
        try:
            settings = load_settings(config_file=args.config, database_url=database, ui=False)
        except ConfigError as exc:
            raise StudyError(f"configuration error: {exc}") from None
        # The runner is the operator: proxy keys ([clients]) and the Host allow-list guard the
        # network, not this process.
        settings = dataclasses.replace(settings, client_keys={}, allowed_hosts=("*",))
        database = settings.database_url
    elif args.resume and database is None:
        raise StudyError("--resume with --base-url reads the proxy's log: give it with --db PATH or --database-url URL")

    rows = await _read_rows(database, name) if database is not None else None
    calls = plan_calls(items, models, args.repeats, params)
    done = finished_keys(rows or [])
    if rows and not args.resume:
        raise StudyError(
            f"the log already has {len(rows)} rows of study {name!r}: add --resume to run only what is missing, "
            "or choose another --name"
        )
    todo = [c for c in calls if c.key not in done]
    before = len(calls) - len(todo)
    where = f"proxy at {args.base_url}" if network else "in-process proxy"
    if args.cache != "off" and args.repeats > 1:
        print(f"note: with --cache {args.cache}, repeats of a prompt may be answered from the proxy's cache",
              file=sys.stderr)
    print(
        f"Study {name!r}: {_count(len(items), 'prompt')} × {_count(len(models), 'model')} × "
        f"{_count(args.repeats, 'repeat')} = {_count(len(calls), 'call')}"
        + (f"; {before} already in the log, {len(todo)} to run" if args.resume else "")
        + f" ({where}, concurrency {args.concurrency})",
        file=sys.stderr,
        flush=True,
    )

    headers = _headers(args, name, network)
    outcome = None
    if todo:
        progress = Progress(f"study {name}", len(calls), before)
        if network:
            outcome = await run_over_network(args.base_url, name, todo, params, headers, args.concurrency, progress)
        else:
            outcome = await run_in_process(settings, name, todo, params, headers, args.concurrency, progress)
        progress.close()
        if network and database is not None:
            await wait_for_log(args.base_url)
        rows = await _read_rows(database, name) if database is not None else None
    else:
        print("Nothing to run: every call of the study has a successful row in the log.", file=sys.stderr)

    print_comparison(name, database, rows, outcome, models, sys.stdout)
    sys.stdout.flush()
    return _report_end(args, name, calls, rows, outcome)


def _headers(args: argparse.Namespace, name: str, network: bool) -> dict[str, str]:
    """The headers every call of the run carries (each adds its own `X-Study-Metadata`)."""
    headers = {
        "X-Study-Tags": name,
        "X-Study-Session": name,
        # Repeats are identical requests on purpose: the proxy must not fold them into one call.
        "X-Study-Dedup": "off",
        "X-Study-Cache": args.cache,
    }
    if args.retries is not None:
        headers["X-Study-Retries"] = str(args.retries)
    api_key = args.api_key or os.environ.get("STUDY_QUERY_LLM_API_KEY")
    if network and api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


async def _read_rows(database: str, name: str) -> list[dict[str, Any]]:
    try:
        return await read_study_rows(database, name)
    except Exception as exc:
        from proxy.store.engine import display_url

        raise StudyError(f"cannot read the log {display_url(database)}: {type(exc).__name__}: {exc}") from None


def _report_end(args: argparse.Namespace, name: str, calls: list[Call], rows: list[dict[str, Any]] | None,
                outcome: Outcome | None) -> int:
    err = sys.stderr
    if outcome is None:
        return EXIT_OK
    for model, reason in outcome.closed_models.items():
        print(f"Model {model!r} was skipped after its first call failed: {reason}", file=err)
    ran = len(outcome.results)
    ok = sum(r.ok for r in outcome.results)
    if outcome.fatal:
        print(f"study-query-llm study: stopped: {outcome.fatal}", file=err)
    if outcome.interrupted or outcome.fatal:
        if rows is not None:
            missing = len(calls) - len({k for k in finished_keys(rows)} & {c.key for c in calls})
            status = f"{ok} calls of this run finished; {missing} of the study's {len(calls)} calls are still to do"
        else:
            status = f"{ok} calls of this run finished"
        print(f"{'Interrupted' if outcome.interrupted else 'Stopped'}: {status}. What finished is in the log.", file=err)
        print(f"To finish the study: {resume_command(args, name)}", file=err)
        return EXIT_INTERRUPTED if outcome.interrupted else EXIT_FAILED_CALLS
    if ok < ran or outcome.skipped:
        what = f"{ran - ok} of {ran} calls failed" + (f" and {outcome.skipped} were skipped" if outcome.skipped else "")
        print(f"{what} (errors above). To run them again: {resume_command(args, name)}", file=err)
        return EXIT_FAILED_CALLS
    return EXIT_OK


def resume_command(args: argparse.Namespace, name: str) -> str:
    """The command line that finishes this study."""
    parts = ["study-query-llm", "study", args.prompts, "--models", args.models, "--name", name]
    if args.repeats != 1:
        parts += ["--repeats", str(args.repeats)]
    if args.concurrency != DEFAULT_CONCURRENCY:
        parts += ["--concurrency", str(args.concurrency)]
    for spec in args.param:
        parts += ["--param", spec]
    if args.retries is not None:
        parts += ["--retries", str(args.retries)]
    if args.cache != "off":
        parts += ["--cache", args.cache]
    if args.db:
        parts += ["--db", args.db]
    if args.database_url:
        from proxy.store.engine import display_url

        parts += ["--database-url", display_url(args.database_url)]
    if args.config:
        parts += ["--config", args.config]
    if args.base_url:
        parts += ["--base-url", args.base_url]
    parts.append("--resume")
    return shlex.join(parts)


def build_parser() -> argparse.ArgumentParser:
    """The `study` command on its own, for `python -m analytics.runner`."""
    parser = argparse.ArgumentParser(
        prog="study-query-llm study",
        description="Run a prompt set across models through the proxy's pipeline, every call recorded in the log.",
    )
    add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """`python -m analytics.runner …` (the same as `study-query-llm study …`)."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
