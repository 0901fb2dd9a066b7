"""`GET /v1/models`: every configured provider's own list, each id prefixed `provider/`, and ours.

Each provider that lists models (not Azure: its catalogue names base models, not the
deployments that `azure/<deployment>` routes to) is asked for `{base_url}/models` with its
key, all at once and for at most `FETCH_TIMEOUT` seconds, and its list is kept for
`LIST_TTL`. A provider that fails or is too slow is left out, with a warning in the server's
log, and asked again after `FAILED_TTL`. After the upstream lists come the providers'
configured default models and the config's aliases (`owned_by: "alias"`), without duplicates.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

import orjson

from .errors import ProxyError
from .providers import Provider
from .routing import Router
from .singleflight import SingleFlight
from .timeouts import timeout
from .upstream import UpstreamClient, UpstreamUnreachable

log = logging.getLogger("proxy.models")

#: How long an upstream's model list is kept.
LIST_TTL = 300.0
#: How long a provider whose list could not be fetched is left out before it is asked again.
FAILED_TTL = 30.0
#: The longest one upstream may take to answer its list.
FETCH_TIMEOUT = 2.0

Model = dict[str, Any]


class ModelCatalogue:
    """The models the proxy lists and describes, fetched from the upstreams and cached."""

    def __init__(
        self,
        router: Router,
        providers: Mapping[str, Provider],
        client: UpstreamClient,
        *,
        ttl: float = LIST_TTL,
        failed_ttl: float = FAILED_TTL,
        timeout: float = FETCH_TIMEOUT,
    ) -> None:
        self.router = router
        self.providers = providers
        self.client = client
        self.ttl = ttl
        self.failed_ttl = failed_ttl
        self.timeout = timeout
        self._lists: dict[str, tuple[float, list[Model]]] = {}  # provider → (expires at, its models)
        self._flights: SingleFlight[list[Model]] = SingleFlight()

    async def listing(self) -> dict[str, Any]:
        """The body of `GET /v1/models`."""
        return {"object": "list", "data": await self.models()}

    async def model(self, model_id: str) -> Model:
        """The body of `GET /v1/models/{id}`; a 404 for an id that is not listed."""
        for model in await self.models():
            if model["id"] == model_id:
                return model
        raise ProxyError(
            404,
            f"The model `{model_id}` does not exist or is not listed by this proxy (see GET /v1/models).",
            param="model",
            code="model_not_found",
        )

    async def models(self) -> list[Model]:
        """Every listed model, upstream lists first, each id once."""
        names = [n for n, p in self.providers.items() if p.lists_models and self.router.available(n)]
        fetched = await asyncio.gather(*(self._provider_models(name) for name in names))
        listed: dict[str, Model] = {}
        for models in fetched:
            for model in models:
                listed.setdefault(model["id"], model)
        for model_id, owner in self.router.listed_models():
            listed.setdefault(model_id, {"id": model_id, "object": "model", "created": 0, "owned_by": owner})
        return list(listed.values())

    async def _provider_models(self, name: str) -> list[Model]:
        cached = self._lists.get(name)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        models, _ = await self._flights.run(name.encode(), lambda: self._fetch(name))
        return models

    async def _fetch(self, name: str) -> list[Model]:
        """One provider's list, prefixed; empty (and a warning) when it cannot be had."""
        provider = self.providers[name]
        request = provider.forward("GET", "models", "", {"accept": "application/json"}, b"")
        try:
            with timeout(self.timeout):
                response = await provider.send(self.client, request)
                body = await response.read()
            if response.status_code != 200:
                raise _Unusable(f"it answered HTTP {response.status_code}")
            models = _prefixed(name, body)
        except (UpstreamUnreachable, _Unusable) as exc:
            return self._failed(name, str(exc))
        except TimeoutError:
            return self._failed(name, f"it did not answer within {self.timeout:g}s")
        self._lists[name] = (time.monotonic() + self.ttl, models)
        return models

    def _failed(self, name: str, why: str) -> list[Model]:
        log.warning("GET /v1/models: the model list of provider `%s` is left out: %s", name, why)
        self._lists[name] = (time.monotonic() + self.failed_ttl, [])
        return []


class _Unusable(Exception):
    """An upstream answered its model list with something that is not one."""


def _prefixed(provider: str, body: bytes) -> list[Model]:
    """The upstream's `data` as model objects whose ids carry the provider's prefix."""
    try:
        data = orjson.loads(body).get("data")
    except (orjson.JSONDecodeError, AttributeError):
        data = None
    if not isinstance(data, list):
        raise _Unusable("its answer is not a model list")
    models = []
    for item in data:
        if isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"]:
            created = item.get("created")
            owned_by = item.get("owned_by")
            models.append({
                "id": f"{provider}/{item['id']}",
                "object": "model",
                "created": created if isinstance(created, int) and not isinstance(created, bool) else 0,
                "owned_by": owned_by if isinstance(owned_by, str) and owned_by else provider,
            })
    return models
