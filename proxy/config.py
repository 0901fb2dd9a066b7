"""Environment, `.env` and the TOML config file folded into one frozen `Settings`.

Everything the server needs to know is decided here, once, at start-up: the rest
of the code reads `Settings` and never looks at `os.environ` itself. The parts are read
by their own modules: `config_sections` (the dataclass of each part and the TOML table
check), `config_routes` (providers, aliases, templates, prices) and `config_server`
(`[server]`, `[clients]` and the variables that go with them).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from . import config_routes as routes
from . import config_server as server_config
from .config_sections import (
    CachePolicy, ConfigError, LogPolicy, ProviderConfig, RedisPolicy, RetryPolicy, Timeouts, UICopyPolicy, log_policy,
    section,
)
from .limits import ClientLimits
from .preprocess.steps import Steps
from .pricing import Price
from .upstream_answer import DEFAULT_MAX_ANSWER_BYTES

__all__ = ["DEFAULT_DATABASE_URL", "ConfigError", "Settings", "load_settings", "read_environment"]

DEFAULT_DATABASE_URL = "sqlite:///study_query_llm.db"
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """The whole configuration of one proxy process."""

    providers: Mapping[str, ProviderConfig]
    aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    cached_aliases: frozenset[str] = frozenset()
    templates: Mapping[str, str] = field(default_factory=dict)  # [templates.NAME] text, for template=NAME
    alias_preprocess: Mapping[str, Steps] = field(default_factory=dict)  # [aliases.NAME] preprocess
    prices: Mapping[str, Price] = field(default_factory=dict)
    client_keys: Mapping[str, str] = field(default_factory=dict, repr=False)
    database_url: str = DEFAULT_DATABASE_URL
    host: str = "127.0.0.1"
    port: int = 8000
    ui: bool = True
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES  # an upstream answer read whole or as events, decoded
    cors_allow_origins: tuple[str, ...] = ()  # browser origins granted cross-origin access; "*" for any
    allowed_hosts: tuple[str, ...] = ()  # Host header names served; () for the defaults, "*" for any
    allow_open: bool = False  # serve on a non-loopback address without proxy keys
    limits: ClientLimits = ClientLimits()
    retry: RetryPolicy = RetryPolicy()
    timeouts: Timeouts = Timeouts()
    cache: CachePolicy = CachePolicy()
    redis_url: str | None = field(default=None, repr=False)  # a URL may hold a password
    redis: RedisPolicy = RedisPolicy()
    ui_copy: UICopyPolicy = UICopyPolicy()
    metrics_dir: str | None = None  # PROMETHEUS_MULTIPROC_DIR: metrics summed across processes (proxy/metrics.py)
    log: LogPolicy = LogPolicy()

    @property
    def default_provider(self) -> str:
        """The first provider holding a key; `mock` when none does."""
        for provider in self.providers.values():
            if provider.kind != "mock" and provider.api_key:
                return provider.name
        return "mock"

    def secrets(self) -> list[str]:
        """Every key this process knows, so that tests and redaction can look for them."""
        keys = [p.api_key for p in self.providers.values() if p.api_key]
        return keys + list(self.client_keys)


def read_environment(env_file: str | os.PathLike[str] | None = ".env") -> dict[str, str]:
    """`os.environ` over the values of a `.env` file (the process environment wins)."""
    values: dict[str, str] = {}
    if env_file and Path(env_file).is_file():
        values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    values.update(os.environ)
    return values


def load_settings(
    env: Mapping[str, str] | None = None,
    config_file: str | os.PathLike[str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build `Settings` from environment variables, an optional TOML file and CLI overrides."""
    env = read_environment() if env is None else env
    config = _read_toml(config_file) if config_file else {}
    providers = routes.providers(config.get("providers", {}), env)
    server = config.get("server", {})
    server_config.check_server_keys(server)
    aliases, cached_aliases = routes.aliases(config.get("aliases", {}))
    templates = routes.templates(config.get("templates", {}))
    values: dict[str, Any] = {
        "providers": providers,
        "aliases": aliases,
        "cached_aliases": cached_aliases,
        "templates": templates,
        "alias_preprocess": routes.alias_preprocess(config.get("aliases", {}), templates),
        "prices": routes.prices(config.get("prices", {})),
        "client_keys": server_config.client_keys(config.get("clients", {}), env),
        "database_url": env.get("DATABASE_URL") or DEFAULT_DATABASE_URL,
        "host": env.get("PANEL_ADDRESS") or "127.0.0.1",
        "port": int(env.get("PANEL_PORT") or 8000),
        "max_body_bytes": int(server.get("max_body_bytes", DEFAULT_MAX_BODY_BYTES)),
        "max_answer_bytes": int(server.get("max_answer_bytes", DEFAULT_MAX_ANSWER_BYTES)),
        "cors_allow_origins": server_config.cors_origins(env.get("CORS_ALLOW_ORIGINS"), server.get("cors_allow_origins", [])),
        "allowed_hosts": server_config.allowed_hosts(env.get("ALLOWED_HOSTS"), server.get("allowed_hosts", [])),
        "allow_open": server_config.flag(env.get("STUDY_ALLOW_OPEN"), "STUDY_ALLOW_OPEN"),
        "limits": server_config.limits(server),
        "retry": section(RetryPolicy, config.get("retry", {}), "retry"),
        "timeouts": section(Timeouts, config.get("timeouts", {}), "timeouts"),
        "cache": section(CachePolicy, config.get("cache", {}), "cache"),
        "redis_url": env.get("REDIS_URL") or None,
        "redis": section(RedisPolicy, config.get("redis", {}), "redis"),
        "ui_copy": section(UICopyPolicy, config.get("ui", {}), "ui"),
        "metrics_dir": env.get("PROMETHEUS_MULTIPROC_DIR") or None,
        "log": log_policy(config.get("log", {}), env),
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values)


def _read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
