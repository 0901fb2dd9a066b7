"""The Starlette application: the API under `/v1`, Datasette under `/ui`, one lifespan for both."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.types import Receive, Scope, Send

from .api import API_PREFIXES, ENDPOINTS, ProxyAPI
from .config import Settings
from .cors import with_cors
from .errors import ProxyError
from .hosts import HostAllowList, allowed_names, misdirected
from .operator_auth import require_proxy_key
from .providers import build_providers
from .recorder import Recorder
from .store import Store
from .upstream import UpstreamClient
from .websocket_refusal import refuse_websocket


#: The paths of calls that get a row: refused with 503 while no row can be kept.
API_PATHS = tuple(prefix + "/" for prefix in API_PREFIXES)
API_PATHS_LONGEST_FIRST = tuple(sorted(API_PATHS, key=len, reverse=True))


class ProxyApp(Starlette):
    """Starlette, behind the Host allow-list, with the `POST /v1/*` calls taken straight to their handler.

    Those handlers answer every error themselves, in OpenAI's shape, so Starlette's
    exception middleware and route matching would only add time to each call (about a
    tenth of the proxy's CPU under load); everything else goes through Starlette as usual.
    `hosts` None serves every Host; `origins` puts the CORS policy behind the Host check.
    """

    def __init__(
        self, api: ProxyAPI, hosts: HostAllowList | None, origins: Sequence[str] = (), **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.api = api
        self.hosts = hosts
        self.misdirected = misdirected()
        self.direct = {f"/v1/{endpoint}": endpoint for endpoint in ENDPOINTS}
        # Without origins no request pays for a CORS layer.
        self.serve = with_cors(self.dispatch, origins) if origins else self.dispatch

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.hosts is not None and scope["type"] != "lifespan" and not self.hosts.allows(scope["headers"]):
            await self.misdirected(scope, receive, send)
            return
        await self.serve(scope, receive, send)

    async def dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        """An HTTP call is refused while its row could not be kept; with durability process or
        power, its answer leaves once its row is journaled (`GroupCommit.durable_send`)."""
        if scope["type"] == "websocket":
            await refuse_websocket(self.api, API_PATHS_LONGEST_FIRST, scope, receive, send)
            return
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        recorder = self.api.recorder
        if not recorder.accepting and scope["path"].startswith(API_PATHS):
            await log_unavailable(recorder)(scope, receive, send)
            return
        commit = recorder.commit
        if commit is None:
            await self._route(scope, receive, send)
            return
        commit.active += 1
        try:
            await self._route(scope, receive, commit.durable_send(send))
        finally:
            commit.active -= 1

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self.direct.get(scope["path"])
        if endpoint is not None and scope["method"] == "POST":
            scope["app"] = self
            response = await self.api.handle(Request(scope, receive), endpoint)
            await response(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings) -> ProxyApp:
    policy = settings.log
    store = Store(settings.database_url, synchronous="FULL" if policy.durability == "power" else "NORMAL")
    recorder = Recorder(store, durability=policy.durability, journal_dir=policy.journal_dir or None,
                        memory_bytes=policy.memory_bytes, serve_unlogged=policy.serve_unlogged)
    client = UpstreamClient(settings.timeouts.connect, settings.timeouts.first_byte,
                            max_answer_bytes=settings.max_answer_bytes)
    api = ProxyAPI(settings, build_providers(settings), client, recorder)
    recorder.pricer = api.pricer  # rows read back from a journal are priced as the live ones
    routes: list = api.routes()
    datasette = ui_copy = None
    if settings.ui and (store.path is not None or store.dialect == "postgresql"):
        from analytics.datasette import create_datasette

        ui_path = store.path
        if ui_path is None:  # PostgreSQL: Datasette serves a SQLite copy, refreshed in the background
            from analytics.ui_copy import UICopy

            ui_copy = UICopy(settings.database_url, settings.ui_copy)
            ui_path = ui_copy.path
        datasette = create_datasette(ui_path, base_url="/ui/")
        ui = datasette.app()
        routes.append(Mount("/ui", app=require_proxy_key(ui, settings.client_keys)))
    if settings.ui:
        from .playground import playground_app

        routes.append(Mount("/playground", app=playground_app()))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await recorder.start()  # migrates the log, replays journals left by processes that died
        await api.start()  # Redis (when configured) and the metrics' publisher
        if ui_copy is not None:
            await ui_copy.start()
        if datasette is not None:
            await datasette.invoke_startup()
        try:
            yield
        finally:
            await client.aclose()
            if ui_copy is not None:
                await ui_copy.aclose()
            await recorder.stop()
            await api.aclose()  # after the recorder: the metrics' last publish has its final counts
            await store.dispose()

    options: dict[str, Any] = {
        "routes": routes, "lifespan": lifespan, "exception_handlers": {HTTPException: _http_error}
    }
    names = allowed_names(settings.allowed_hosts, settings.host)
    hosts = None if "*" in names else HostAllowList(names)
    app = ProxyApp(api, hosts, settings.cors_allow_origins, **options)
    app.state.ui = datasette is not None
    app.state.ui_copy = ui_copy
    return app


def log_unavailable(recorder: Recorder) -> Response:
    """The answer to a call that could not be logged: the journal and memory are both full."""
    recorder.refused_calls += 1
    error = ProxyError(
        503,
        "The proxy cannot record calls right now (its log database and journal both refuse rows), "
        "so it does not serve them; try again shortly. /healthz says why.",
        type="server_error", code="log_unavailable", headers={"retry-after": "2"},
    )
    return Response(error.json(), 503, headers=error.headers, media_type="application/json")


async def _http_error(request: Request, exc: HTTPException) -> Response:
    """Starlette's own 404/405 answers, in OpenAI's error shape like every other error."""
    error = ProxyError(exc.status_code, f"{exc.detail}: {request.method} {request.url.path}", code="unknown_url")
    return Response(error.json(), exc.status_code, media_type="application/json")
