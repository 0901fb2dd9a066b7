"""Environment, `.env` and the TOML config file folded into one frozen `Settings`.

Everything the server needs to know is decided here, once, at start-up: the rest
of the code reads `Settings` and never looks at `os.environ` itself.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from .hosts import HostError, allowed_names
from .limits import LIMIT_KEYS, ClientLimits
from .preprocess.steps import USER_INPUT, PreprocessError, Steps, parse_steps
from .pricing import Price

DEFAULT_DATABASE_URL = "sqlite:///study_query_llm.db"
DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_HYPERBOLIC_ENDPOINT = "https://api.hyperbolic.xyz/v1"
DEFAULT_AZURE_API_VERSION = "2024-10-21"
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
#: A browser origin as a page sends it: scheme://host[:port], no path (checked after lower-casing).
ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://[^/?#\s]+")
DURABILITY_MODES = ("process", "power", "none")


class ConfigError(ValueError):
    """The operator's configuration cannot be used; the message says which part."""


@dataclass(frozen=True)
class ProviderConfig:
    """One upstream the operator configured. `kind` picks the adapter."""

    name: str
    kind: str  # "openai" (any OpenAI-compatible server), "azure" or "mock"
    base_url: str
    api_key: str | None = field(default=None, repr=False)
    api_version: str | None = None
    default_model: str | None = None
    price_provider: str | None = None  # the genai-prices provider id that prices this upstream
    responses: bool = True  # serves the Responses API; else the proxy translates it to chat completions


@dataclass(frozen=True)
class RetryPolicy:
    """How hard the proxy tries one route before it falls back or gives up."""

    max_attempts: int = 3  # per route, the first attempt included
    backoff_base: float = 0.5  # seconds; full jitter: uniform(0, min(backoff_max, base * 2**n))
    backoff_max: float = 8.0
    retry_after_cap: float = 60.0  # the longest Retry-After the proxy will wait for
    deadline: float = 900.0  # the whole request: every route, attempt and wait


@dataclass(frozen=True)
class Timeouts:
    connect: float = 10.0
    first_byte: float = 600.0  # until upstream's response headers: slow first tokens are normal
    stream_idle: float = 120.0  # the longest silence between two chunks of a stream


@dataclass(frozen=True)
class CachePolicy:
    enabled: bool = False  # for every request; `X-Study-Cache` and aliases override it
    ttl: float = 3600.0
    max_entries: int = 10_000


@dataclass(frozen=True)
class RedisPolicy:
    """How the processes on one `REDIS_URL` share single-flight and the cache (docs/deployment.md)."""

    prefix: str = "study-query-llm:"  # of every key and channel: several deployments can share a Redis
    lease: float = 5.0  # seconds a flight's lease lasts unless its leader renews it (every third of it)
    poll: float = 0.25  # how often a follower looks for the answer, should a notice go missing
    timeout: float = 0.5  # per command (and to connect): longer, and the call goes on without Redis
    retry_interval: float = 5.0  # while Redis is away, how often it is tried again
    max_entry_bytes: int = 1024 * 1024  # larger answers are not cached, nor passed through Redis


@dataclass(frozen=True)
class UICopyPolicy:
    """The SQLite copy of a PostgreSQL log that `/ui/` serves (analytics/export.py)."""

    copy_path: str = ""  # default: ./study_query_llm.ui-copy.db
    refresh: float = 60.0  # seconds between two refreshes of the copy


@dataclass(frozen=True)
class LogPolicy:
    """How the log keeps rows the database does not have yet (README: "Durability: what survives a crash")."""

    durability: str = "process"  # "process", "power" or "none"; env STUDY_DURABILITY wins
    memory_bytes: int = 64 * 1024 * 1024  # rows waiting in memory; past it, on disk only
    serve_unlogged: bool = False  # when no row can be kept: serve anyway (rows lost) instead of 503
    journal_dir: str = ""  # default: next to the SQLite file (`<db>.journal`), or ./study_query_llm.journal


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
    providers = _builtin_providers(env)
    for name, table in config.get("providers", {}).items():
        builtin = providers.get(name)
        providers[name] = _configured_provider(name, table, env, builtin.responses if builtin else True)
    server = config.get("server", {})
    unknown = set(server) - {"max_body_bytes", "cors_allow_origins", "allowed_hosts", *LIMIT_KEYS}
    if unknown:
        raise ConfigError(
            f"[server] has no setting {', '.join(sorted(unknown))} "
            "(timeouts live in [timeouts]: connect, first_byte, stream_idle)"
        )
    aliases, cached_aliases = _aliases(config.get("aliases", {}))
    templates = _templates(config.get("templates", {}))
    values: dict[str, Any] = {
        "providers": providers,
        "aliases": aliases,
        "cached_aliases": cached_aliases,
        "templates": templates,
        "alias_preprocess": _alias_preprocess(config.get("aliases", {}), templates),
        "prices": _prices(config.get("prices", {})),
        "client_keys": _client_keys(config.get("clients", {}), env),
        "database_url": env.get("DATABASE_URL") or DEFAULT_DATABASE_URL,
        "host": env.get("PANEL_ADDRESS") or "127.0.0.1",
        "port": int(env.get("PANEL_PORT") or 8000),
        "max_body_bytes": int(server.get("max_body_bytes", DEFAULT_MAX_BODY_BYTES)),
        "cors_allow_origins": _cors_origins(env.get("CORS_ALLOW_ORIGINS"), server.get("cors_allow_origins", [])),
        "allowed_hosts": _allowed_hosts(env.get("ALLOWED_HOSTS"), server.get("allowed_hosts", [])),
        "allow_open": _flag(env.get("STUDY_ALLOW_OPEN"), "STUDY_ALLOW_OPEN"),
        "limits": _limits(server),
        "retry": _section(RetryPolicy, config.get("retry", {}), "retry"),
        "timeouts": _section(Timeouts, config.get("timeouts", {}), "timeouts"),
        "cache": _section(CachePolicy, config.get("cache", {}), "cache"),
        "redis_url": env.get("REDIS_URL") or None,
        "redis": _section(RedisPolicy, config.get("redis", {}), "redis"),
        "ui_copy": _section(UICopyPolicy, config.get("ui", {}), "ui"),
        "metrics_dir": env.get("PROMETHEUS_MULTIPROC_DIR") or None,
        "log": _log_policy(config.get("log", {}), env),
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values)


def _builtin_providers(env: Mapping[str, str]) -> dict[str, ProviderConfig]:
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


def _configured_provider(
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


def _aliases(table: Mapping[str, Any]) -> tuple[dict[str, tuple[str, ...]], frozenset[str]]:
    """`name = "model"`, `name = [models…]` or `[aliases.name]` with `routes` and `cache`."""
    aliases, cached = {}, set()
    for alias, spec in table.items():
        routes = spec.get("routes") if isinstance(spec, Mapping) else spec
        if isinstance(routes, str):
            routes = [routes]
        if not routes or not isinstance(routes, list) or not all(isinstance(r, str) and r for r in routes):
            raise ConfigError(f"alias {alias!r} must name a model or a list of models")
        aliases[alias] = tuple(routes)
        if isinstance(spec, Mapping) and spec.get("cache"):
            cached.add(alias)
    return aliases, frozenset(cached)


def _templates(table: Mapping[str, Any]) -> dict[str, str]:
    """`[templates.NAME] text = "... {user_input} ..."`: what `template=NAME` puts around the user's input."""
    templates = {}
    for name, spec in table.items():
        text = spec.get("text") if isinstance(spec, Mapping) else None
        if not isinstance(text, str) or USER_INPUT not in text:
            raise ConfigError(f"[templates.{name}] needs a `text` string holding {USER_INPUT}")
        templates[name] = text
    return templates


def _alias_preprocess(table: Mapping[str, Any], templates: Mapping[str, str]) -> dict[str, Steps]:
    """`[aliases.NAME] preprocess = ["pii", "truncate=2000", …]`: steps every call to the alias gets."""
    steps = {}
    for alias, spec in table.items():
        items = spec.get("preprocess") if isinstance(spec, Mapping) else None
        if items is None:
            continue
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise ConfigError(f"alias {alias!r}: preprocess must be a list of steps, e.g. [\"pii\", \"truncate=2000\"]")
        try:
            steps[alias] = parse_steps(items, templates)
        except PreprocessError as exc:
            raise ConfigError(f"alias {alias!r}: preprocess: {exc}") from None
    return steps


def _prices(table: Mapping[str, Any]) -> dict[str, Price]:
    """`[prices."provider/model"]` (or a bare model) with USD per million `input`, `output`, `cached_input`."""
    prices = {}
    for model, spec in table.items():
        try:
            prices[model] = Price(
                input=float(spec["input"]),
                output=float(spec["output"]),
                cached_input=float(spec["cached_input"]) if "cached_input" in spec else None,
            )
        except (KeyError, TypeError, ValueError):
            raise ConfigError(
                f"[prices.{model!r}] needs numbers `input` and `output` (USD per million tokens), "
                "and optionally `cached_input`"
            ) from None
    return prices


def _section(kind: type, table: Mapping[str, Any], name: str) -> Any:
    """A policy dataclass from its TOML table, refusing unknown keys and wrong types."""
    defaults = kind()
    values = {}
    for key, value in table.items():
        if not hasattr(defaults, key):
            raise ConfigError(f"[{name}] has no setting {key!r}")
        expected = type(getattr(defaults, key))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
            raise ConfigError(f"[{name}] {key} must be a {expected.__name__}")
        values[key] = value
    return kind(**values)


def _cors_origins(from_env: str | None, from_file: Any) -> tuple[str, ...]:
    """`CORS_ALLOW_ORIGINS` (a comma list) when it is set, else `[server] cors_allow_origins`
    (a list): the environment replaces the file's list rather than adding to it, so one
    variable can narrow a shared config file without editing it."""
    if not isinstance(from_file, list) or not all(isinstance(o, str) for o in from_file):
        raise ConfigError("[server] cors_allow_origins must be a list of strings")
    if from_env:
        source, origins = "CORS_ALLOW_ORIGINS", from_env.split(",")
    else:
        source, origins = "[server] cors_allow_origins", from_file
    origins = [o.strip().lower() for o in origins if o.strip()]
    for origin in origins:
        if origin != "*" and not ORIGIN.fullmatch(origin):
            raise ConfigError(
                f"{source}: {origin!r} is not an origin: write scheme://host[:port] "
                "(no path, no trailing slash), or * for any origin"
            )
    return tuple(dict.fromkeys(origins))


def _log_policy(table: Mapping[str, Any], env: Mapping[str, str]) -> LogPolicy:
    """`[log]`, with `STUDY_DURABILITY` over its `durability`."""
    policy = _section(LogPolicy, table, "log")
    durability = env.get("STUDY_DURABILITY") or policy.durability
    if durability not in DURABILITY_MODES:
        raise ConfigError(f"durability must be one of {', '.join(DURABILITY_MODES)}, not {durability!r}")
    if policy.memory_bytes <= 0:
        raise ConfigError("[log] memory_bytes must be positive")
    return replace(policy, durability=durability)


def _allowed_hosts(from_env: str | None, from_file: Any) -> tuple[str, ...]:
    """`ALLOWED_HOSTS` (a comma list) when set, else `[server] allowed_hosts`; the defaults
    (loopback names and the bound address) are filled in by the app, which knows the address."""
    if not isinstance(from_file, list) or not all(isinstance(h, str) for h in from_file):
        raise ConfigError("[server] allowed_hosts must be a list of strings")
    source, entries = ("ALLOWED_HOSTS", from_env.split(",")) if from_env else ("[server] allowed_hosts", from_file)
    try:
        return allowed_names(entries, "") if any(e.strip() for e in entries) else ()
    except HostError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _flag(value: str | None, name: str) -> bool:
    if not value:
        return False
    if value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if value.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be 1/true/yes/on or 0/false/no/off, not {value!r}")


def _limits(server: Mapping[str, Any]) -> ClientLimits:
    limits = _section(ClientLimits, {k: v for k, v in server.items() if k in LIMIT_KEYS}, "server")
    problem = limits.check()
    if problem:
        raise ConfigError(problem)
    return limits


def _client_keys(table: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    """Proxy keys → the client alias recorded in the log (the key itself never is)."""
    keys = {}
    for alias, spec in table.items():
        key = env.get(spec.get("key_env", "")) if isinstance(spec, Mapping) else spec
        if not isinstance(key, str) or not key:
            raise ConfigError(f"client {alias!r}: its key is empty or its key_env variable is unset")
        keys[key] = alias
    return keys


def _read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
