"""The frozen dataclass of each part of `Settings`, and the check that a TOML table fits one.

Each dataclass carries its own defaults, so a missing table means the defaults and the
TOML file only ever names what it changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

DURABILITY_MODES = ("process", "power", "none")

T = TypeVar("T")


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
    max_bytes: int = 256 * 1024 * 1024  # in memory: answers' bytes (not with Redis, which has its own bound)


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
    """How the log keeps rows the database does not have yet (docs/durability.md, "Durability: what survives a crash")."""

    durability: str = "process"  # "process", "power" or "none"; env STUDY_DURABILITY wins
    memory_bytes: int = 64 * 1024 * 1024  # rows waiting in memory; past it, on disk only
    serve_unlogged: bool = False  # when no row can be kept: serve anyway (rows lost) instead of 503
    journal_dir: str = ""  # default: next to the SQLite file (`<db>.journal`), or ./study_query_llm.journal


def section(kind: type[T], table: Mapping[str, Any], name: str) -> T:
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


def log_policy(table: Mapping[str, Any], env: Mapping[str, str]) -> LogPolicy:
    """`[log]`, with `STUDY_DURABILITY` over its `durability`."""
    policy = section(LogPolicy, table, "log")
    durability = env.get("STUDY_DURABILITY") or policy.durability
    if durability not in DURABILITY_MODES:
        raise ConfigError(f"durability must be one of {', '.join(DURABILITY_MODES)}, not {durability!r}")
    if policy.memory_bytes <= 0:
        raise ConfigError("[log] memory_bytes must be positive")
    return replace(policy, durability=durability)
