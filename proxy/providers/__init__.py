"""One adapter per upstream kind; `build_providers` instantiates those the operator configured."""

from __future__ import annotations

from ..config import Settings
from .azure import AzureProvider
from .base import Provider
from .mock import MockProvider
from .translated import TranslatingProvider

_ADAPTERS: dict[str, type[Provider]] = {"openai": Provider, "azure": AzureProvider, "mock": MockProvider}


def build_providers(settings: Settings) -> dict[str, Provider]:
    """One adapter per provider; those without a Responses API get their `responses` calls translated."""
    providers = {}
    for name, config in settings.providers.items():
        provider = _ADAPTERS[config.kind](config)
        providers[name] = provider if config.responses else TranslatingProvider(provider)
    return providers


__all__ = ["Provider", "AzureProvider", "MockProvider", "TranslatingProvider", "build_providers"]
