"""`study-query-llm` (and `python -m proxy`): one argparse entry point for every command."""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from typing import TYPE_CHECKING

from .config import ConfigError, Settings, load_settings, read_environment
from .exposure import open_bind_refusal
from .store.engine import display_url
from .workers import positive_int, worker_count

if TYPE_CHECKING:
    from .app import ProxyApp


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="study-query-llm",
        description="An OpenAI-compatible logging proxy: every call recorded in SQLite, browsable in Datasette.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the proxy (and Datasette under /ui/)")
    serve.add_argument("--host", help="address to bind (default: $PANEL_ADDRESS or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default: $PANEL_PORT or 8000)")
    database = serve.add_mutually_exclusive_group()
    database.add_argument("--db", metavar="PATH", help="SQLite file for the log")
    database.add_argument("--database-url", metavar="URL", help="sqlite:///file.db or postgresql://… (default: $DATABASE_URL)")
    serve.add_argument("--config", metavar="FILE", help="TOML file with extra providers, aliases and proxy keys")
    serve.add_argument("--no-ui", action="store_true", help="do not mount Datasette under /ui/ nor the playground under /playground/")
    serve.add_argument(
        "--allow-open", action="store_true",
        help="serve on a non-loopback address without proxy keys (also $STUDY_ALLOW_OPEN=1)",
    )
    serve.add_argument(
        "--workers", type=_workers_flag, metavar="N",
        help="worker processes on the one port (default: $WORKERS or 1; docs/deployment.md)",
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    ui = commands.add_parser("ui", help="browse a log in Datasette (read-only)")
    ui.add_argument("--db", metavar="PATH", help="SQLite file of the log (default: $DATABASE_URL's file)")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=8001)
    from analytics import export, report, runner

    export.add_arguments(commands.add_parser("export", help="copy the log into a SQLite file that `ui` serves"))
    runner.add_arguments(commands.add_parser("study", help="run a prompt set across models, every call recorded"))
    report.add_arguments(commands.add_parser("report", help="compare providers and models from the log"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return serve(args)
        if args.command == "study":
            from analytics import runner

            return runner.run(args)
        if args.command == "report":
            from analytics import report

            return report.run(args)
        if args.command == "export":
            from analytics import export

            return export.run(args)
        return ui(args)
    except ConfigError as exc:
        print(f"study-query-llm: configuration error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as exc:
        print(f"study-query-llm: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `study-query-llm report | head`: the reader has what it wanted
        sys.stdout = None  # type: ignore[assignment]  # no flush of the closed pipe at exit
        return 0


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = load_settings(
        config_file=args.config,
        host=args.host,
        port=args.port,
        database_url=args.database_url or args.db,
        ui=False if args.no_ui else None,
        allow_open=True if args.allow_open else None,
    )
    refusal = open_bind_refusal(settings.host, bool(settings.client_keys), settings.allow_open)
    if refusal:
        print(f"study-query-llm: {refusal}", file=sys.stderr)
        return 2
    workers = worker_count(args.workers, read_environment().get("WORKERS"))
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s: %(name)s: %(message)s")
    # httpx (the study runner's client) logs every URL it calls at INFO: noise in a server log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if workers > 1:
        from .serve_workers import serve_workers

        return serve_workers(settings, workers, args.log_level)
    app = announce(settings)
    tune_garbage_collector()
    uvicorn.run(app, host=settings.host, port=settings.port, **server_options(settings, args.log_level))
    return 0


def announce(settings: Settings, workers: int = 1) -> ProxyApp:
    """The app for `settings`, and the lines saying where it serves what."""
    from .app import create_app

    app = create_app(settings)
    base = f"http://{settings.host}:{settings.port}"
    several = f", {workers} workers" if workers > 1 else ""
    print(f"Study Query LLM proxy: {base}/v1  (default provider: {settings.default_provider}{several})", flush=True)
    if app.state.ui_copy is not None:
        copy = app.state.ui_copy
        print(f"Datasette UI:          {base}/ui/  (a copy of the log, refreshed every {copy.refresh:g}s: {copy.path})", flush=True)
    elif app.state.ui:
        print(f"Datasette UI:          {base}/ui/", flush=True)
    if settings.ui:
        print(f"Playground:            {base}/playground/", flush=True)
    print(f"Log:                   {display_url(settings.database_url)}", flush=True)
    return app


def server_options(settings: Settings, log_level: str) -> dict[str, object]:
    """uvicorn's options for one proxy process (host and port aside): the same for every worker."""
    from .http_protocol import protocol_class
    from .limits import connection_cap, raise_open_file_limit

    limits = settings.limits
    capacity = connection_cap(limits.max_connections, raise_open_file_limit())
    return dict(
        http=protocol_class(limits, capacity),  # header limit, head and body timeouts, the connection cap
        timeout_keep_alive=limits.keep_alive_timeout,  # seconds, a float is fine
        log_level=log_level,
        access_log=False,
        proxy_headers=False,  # nothing reads the client's address: no X-Forwarded-* rewriting per request
        server_header=False,  # no `server: uvicorn`: it tells a client nothing, and each answer's headers are checked one by one
        timeout_graceful_shutdown=limits.shutdown_grace,  # then calls still in flight are answered 503
    )


def _workers_flag(text: str) -> int:
    try:
        return positive_int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def tune_garbage_collector() -> None:
    """Collect young objects less often and never rescan start-up's objects.

    With CPython's default (700 allocations) a proxy under load ran a collection every few
    requests, and the full ones over every module and class held requests back: p99 at 32
    connections was 60-70 ms. With these settings it was 7-8 ms, and throughput rose by a
    fifth (bench/README.md has the runs).
    """
    gc.set_threshold(50_000, 10, 10)
    gc.freeze()


def ui(args: argparse.Namespace) -> int:
    from analytics.datasette import serve_ui

    serve_ui(args.db or load_settings().database_url, host=args.host, port=args.port)
    return 0
