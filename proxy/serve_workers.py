"""`serve --workers N` with N > 1: the start-up done once, then the workers (`proxy.workers`).

Before the first fork the parent migrates the log, points prometheus-client at a directory
that every worker shares (so that `/metrics` sums them), and holds the port. Each worker
then builds its own app and runs it on a socket of its own, exactly as a lone `serve` does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shutil
import sys
import tempfile

from .config import Settings
from .store import Store
from .workers import STARTUP_FAILURE, PortTaken, Supervisor, listen, reserve_port

log = logging.getLogger("proxy.workers")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def serve_workers(settings: Settings, count: int, log_level: str) -> int:
    """Run `count` workers until SIGTERM/SIGINT; the exit code of `serve`."""
    import uvicorn

    from .cli import announce, server_options, tune_garbage_collector

    if not sys.platform.startswith("linux"):  # SO_REUSEPORT spreads connections over sockets on Linux only
        print("study-query-llm: --workers needs Linux; elsewhere run one `serve` per port behind a load balancer",
              file=sys.stderr)
        return 2
    own_metrics_dir = None
    if not settings.metrics_dir:
        own_metrics_dir = tempfile.mkdtemp(prefix="study-query-llm-metrics-")
        settings = dataclasses.replace(settings, metrics_dir=own_metrics_dir)
    # prometheus-client picks its multiprocess mode from the environment when first imported,
    # which happens below (the app's modules) and so in every worker.
    os.environ[MULTIPROC_ENV] = settings.metrics_dir or ""
    try:
        try:
            reserved = reserve_port(settings.host, settings.port)
        except PortTaken as exc:
            print(f"study-query-llm: {exc.strerror}", file=sys.stderr)
            return 1
        settings = dataclasses.replace(settings, port=reserved[0].getsockname()[1])  # --port 0: the one chosen
        prepare_log(settings)
        from .app import create_app  # imported before the fork: every worker shares these pages

        def worker(first: bool) -> int:
            """One worker's life; the first one started says where the proxy serves."""
            for held in reserved:  # the parent's: should it die, the port is free again
                held.close()
            sock = listen(settings.host, settings.port)
            app = announce(settings, count) if first else create_app(settings)
            tune_garbage_collector()
            server = uvicorn.Server(uvicorn.Config(app, **server_options(settings, log_level)))  # type: ignore[arg-type]
            server.run(sockets=[sock])
            return 0 if server.started else STARTUP_FAILURE

        try:
            return Supervisor(count, worker, settings.metrics_dir).run()
        finally:
            for held in reserved:
                held.close()
    finally:
        if own_metrics_dir is not None:
            shutil.rmtree(own_metrics_dir, ignore_errors=True)


def prepare_log(settings: Settings) -> None:
    """Migrate the log before any worker starts, so that no two workers migrate it at once.

    A log that cannot be reached now (PostgreSQL still starting) is not fatal: each worker
    starts degraded, as a lone `serve` would, and migrates once the database answers.
    """
    store = Store(settings.database_url)

    async def migrate() -> None:
        try:
            await store.migrate()
        finally:
            await store.dispose()

    try:
        asyncio.run(migrate())
    except Exception as exc:
        log.warning("cannot prepare the log %s now (%s): the workers will, once it answers", store.display, exc)
