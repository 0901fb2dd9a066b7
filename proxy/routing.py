"""Model string → the ordered routes (provider, upstream model) that may answer it."""

from __future__ import annotations

from dataclasses import dataclass

from .config import Settings
from .errors import ProxyError


@dataclass(frozen=True, slots=True)
class Route:
    provider: str
    upstream_model: str


def check_deployment(name: str) -> None:
    """400 for an Azure deployment name that would not be one path segment upstream."""
    if name in ("", ".", "..") or "/" in name or "\\" in name:
        raise ProxyError(
            400,
            f"{name!r} is not an Azure deployment name: it may not be empty, `.` or `..`, or hold a slash.",
            param="model",
            code="invalid_deployment",
        )


class Router:
    """Resolves the `model` a client asked for; only configured providers are ever reachable."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def available(self, provider: str) -> bool:
        config = self.settings.providers.get(provider)
        return config is not None and (config.kind == "mock" or config.api_key is not None)

    def resolve(self, model: str) -> list[Route]:
        """Prefix picks the provider; a bare model goes through the aliases, then the default."""
        if model not in self.settings.aliases:
            return [self._direct(model, model)]
        routes, refused = [], []
        for target in self.settings.aliases[model]:
            try:
                routes.append(self._direct(target, model))
            except ProxyError as exc:
                refused.append(exc)
        if not routes:
            raise refused[0]
        return routes

    def _direct(self, target: str, asked: str) -> Route:
        prefix, slash, rest = target.partition("/")
        if slash and prefix in self.settings.providers:
            if not rest:
                raise ProxyError(
                    404, f"The model `{asked}` names no model after `{prefix}/`.", param="model", code="model_not_found"
                )
            if not self.available(prefix):
                raise ProxyError(
                    404,
                    f"The model `{asked}` cannot be served: provider `{prefix}` has no API key configured.",
                    param="model",
                    code="model_not_found",
                )
            return self._route(prefix, rest)
        default = self.settings.providers[self.settings.default_provider]
        if default.kind == "azure" and default.default_model:
            return self._route(default.name, default.default_model)
        return self._route(default.name, target)

    def _route(self, provider: str, upstream_model: str) -> Route:
        """An Azure deployment goes into the upstream URL's path: it must be one segment."""
        if self.settings.providers[provider].kind == "azure":
            check_deployment(upstream_model)
        return Route(provider, upstream_model)

    def listed_models(self) -> list[tuple[str, str]]:
        """(model id, owner) for `GET /v1/models`: each provider's default model, then the aliases."""
        models = []
        for provider in self.settings.providers.values():
            if self.available(provider.name) and provider.default_model:
                models.append((f"{provider.name}/{provider.default_model}", provider.name))
        models.extend((alias, "alias") for alias in self.settings.aliases)
        return models
