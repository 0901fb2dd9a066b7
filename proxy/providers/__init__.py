"""One adapter per upstream kind; `build_providers` instantiates those the operator configured."""

from __future__ import annotations

from ..config import Settings
from .azure import AzureProvider
from .base import ENDPOINTS, Provider
from .mock import MockProvider

_ADAPTERS: dict[str, type[Provider]] = {"openai": Provider, "azure": AzureProvider, "mock": MockProvider}


def build_providers(settings: Settings) -> dict[str, Provider]:
    return {name: _ADAPTERS[config.kind](config) for name, config in settings.providers.items()}


__all__ = ["ENDPOINTS", "Provider", "AzureProvider", "MockProvider", "build_providers"]
