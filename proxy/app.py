"""The Starlette application: the API under `/v1`, Datasette under `/ui`, one lifespan for both."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount

from .api import ProxyAPI
from .config import Settings
from .errors import ProxyError
from .providers import build_providers
from .recorder import Recorder
from .store import Store
from .upstream import UpstreamClient


def create_app(settings: Settings) -> Starlette:
    store = Store(settings.database_url)
    recorder = Recorder(store)
    client = UpstreamClient(settings.timeouts.connect, settings.timeouts.first_byte)
    api = ProxyAPI(settings, build_providers(settings), client, recorder)
    routes: list = api.routes()
    datasette = None
    if settings.ui and store.path is not None:
        from analytics.datasette import create_datasette

        datasette = create_datasette(store.path, base_url="/ui/")
        routes.append(Mount("/ui", app=datasette.app()))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await recorder.start()  # migrates the log, replays any spool left by an earlier run
        await client.open()
        if datasette is not None:
            await datasette.invoke_startup()
        try:
            yield
        finally:
            await client.aclose()
            await recorder.stop()
            await store.dispose()

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: _http_error})
    app.state.api = api
    app.state.ui = datasette is not None
    return app


async def _http_error(request: Request, exc: HTTPException) -> Response:
    """Starlette's own 404/405 answers, in OpenAI's error shape like every other error."""
    error = ProxyError(exc.status_code, f"{exc.detail}: {request.method} {request.url.path}", code="unknown_url")
    return Response(error.json(), exc.status_code, media_type="application/json")
