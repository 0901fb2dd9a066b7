"""Where a model name goes and what it costs: providers, aliases, templates, preprocess steps, prices.

The built-in providers come from the environment; `[providers.NAME]` tables add or replace
them; `[aliases]`, `[templates]` and `[prices]` are keyed by the names clients send.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .config_sections import ConfigError, ProviderConfig
from .preprocess.steps import USER_INPUT, PreprocessError, Steps, parse_steps
from .pricing import Price

DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_HYPERBOLIC_ENDPOINT = "https://api.hyperbolic.xyz/v1"
DEFAULT_AZURE_API_VERSION = "2024-10-21"


def builtin_providers(env: Mapping[str, str]) -> dict[str, ProviderConfig]:
    """openai, azure, hyperbolic and mock, as the environment configures them."""
    providers = {
        "openai": ProviderConfig(
            name="openai",
            kind="openai",
            base_url=env.get("OPENAI_BASE_URL") or DEFAULT_OPENAI_BASE_URL,
            api_key=env.get("OPENAI_API_KEY") or None,
            default_model=env.get("OPENAI_MODEL") or None,
        ),
        "azure": ProviderConfig(
            name="azure",
            kind="azure",
            base_url=(env.get("AZURE_OPENAI_ENDPOINT") or "").rstrip("/"),
            api_key=env.get("AZURE_OPENAI_API_KEY") or None,
            api_version=env.get("AZURE_OPENAI_API_VERSION") or DEFAULT_AZURE_API_VERSION,
            default_model=env.get("AZURE_OPENAI_DEPLOYMENT") or None,
        ),
        "hyperbolic": ProviderConfig(
            name="hyperbolic",
            kind="openai",
            base_url=env.get("HYPERBOLIC_ENDPOINT") or DEFAULT_HYPERBOLIC_ENDPOINT,
            api_key=env.get("HYPERBOLIC_API_KEY") or None,
            responses=False,  # Hyperbolic serves chat/completions and completions only
        ),
        "mock": ProviderConfig(name="mock", kind="mock", base_url="mock:///", default_model="echo"),
    }
    if providers["azure"].api_key and not providers["azure"].base_url:
        raise ConfigError("AZURE_OPENAI_API_KEY is set but AZURE_OPENAI_ENDPOINT is not")
    return providers


def configured_provider(
    name: str, table: Mapping[str, Any], env: Mapping[str, str], responses: bool = True
) -> ProviderConfig:
    """`responses` is the default of the `responses` key: a table replacing a built-in keeps the built-in's."""
    if "/" in name:
        raise ConfigError(f"provider name {name!r} may not contain '/'")
    kind = table.get("kind", "openai")
    if kind not in ("openai", "azure"):
        raise ConfigError(f"provider {name!r}: kind must be 'openai' or 'azure', not {kind!r}")
    base_url = table.get("base_url")
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"provider {name!r}: base_url must be an http(s) URL")
    key_env = table.get("api_key_env")
    api_key = env.get(key_env) if key_env else table.get("api_key")
    if not api_key and not table.get("no_key", False):
        raise ConfigError(
            f"provider {name!r}: its key is missing: set api_key_env to a variable holding "
            "the key, or no_key = true for a server that needs none"
        )
    responses = table.get("responses", responses)
    if not isinstance(responses, bool):
        raise ConfigError(f"provider {name!r}: responses must be true or false")
    return ProviderConfig(
        name=name,
        kind=kind,
        base_url=base_url.rstrip("/"),
        api_key=api_key or "",
        api_version=table.get("api_version", DEFAULT_AZURE_API_VERSION if kind == "azure" else None),
        default_model=table.get("default_model"),
        price_provider=table.get("price_provider"),
        responses=responses,
    )


def providers(tables: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, ProviderConfig]:
    """The built-in providers, with `[providers.NAME]` tables added over them."""
    found = builtin_providers(env)
    for name, table in tables.items():
        builtin = found.get(name)
        found[name] = configured_provider(name, table, env, builtin.responses if builtin else True)
    return found


def aliases(table: Mapping[str, Any]) -> tuple[dict[str, tuple[str, ...]], frozenset[str]]:
    """`name = "model"`, `name = [models…]` or `[aliases.name]` with `routes` and `cache`."""
    found, cached = {}, set()
    for alias, spec in table.items():
        routes = spec.get("routes") if isinstance(spec, Mapping) else spec
        if isinstance(routes, str):
            routes = [routes]
        if not routes or not isinstance(routes, list) or not all(isinstance(r, str) and r for r in routes):
            raise ConfigError(f"alias {alias!r} must name a model or a list of models")
        found[alias] = tuple(routes)
        if isinstance(spec, Mapping) and spec.get("cache"):
            cached.add(alias)
    return found, frozenset(cached)


def templates(table: Mapping[str, Any]) -> dict[str, str]:
    """`[templates.NAME] text = "... {user_input} ..."`: what `template=NAME` puts around the user's input."""
    found = {}
    for name, spec in table.items():
        text = spec.get("text") if isinstance(spec, Mapping) else None
        if not isinstance(text, str) or USER_INPUT not in text:
            raise ConfigError(f"[templates.{name}] needs a `text` string holding {USER_INPUT}")
        found[name] = text
    return found


def alias_preprocess(table: Mapping[str, Any], known_templates: Mapping[str, str]) -> dict[str, Steps]:
    """`[aliases.NAME] preprocess = ["pii", "truncate=2000", …]`: steps every call to the alias gets."""
    steps = {}
    for alias, spec in table.items():
        items = spec.get("preprocess") if isinstance(spec, Mapping) else None
        if items is None:
            continue
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise ConfigError(f"alias {alias!r}: preprocess must be a list of steps, e.g. [\"pii\", \"truncate=2000\"]")
        try:
            steps[alias] = parse_steps(items, known_templates)
        except PreprocessError as exc:
            raise ConfigError(f"alias {alias!r}: preprocess: {exc}") from None
    return steps


def prices(table: Mapping[str, Any]) -> dict[str, Price]:
    """`[prices."provider/model"]` (or a bare model) with USD per million `input`, `output`, `cached_input`."""
    found = {}
    for model, spec in table.items():
        try:
            found[model] = Price(
                input=float(spec["input"]),
                output=float(spec["output"]),
                cached_input=float(spec["cached_input"]) if "cached_input" in spec else None,
            )
        except (KeyError, TypeError, ValueError):
            raise ConfigError(
                f"[prices.{model!r}] needs numbers `input` and `output` (USD per million tokens), "
                "and optionally `cached_input`"
            ) from None
    return found
