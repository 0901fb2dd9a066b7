"""The log's tables, described once with SQLAlchemy Core so SQLite and PostgreSQL get the same schema."""

from __future__ import annotations

from sqlalchemy import Column, Float, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()

#: A row's Responses API response id, as SQLite indexes it (migration 5) and queries it; a
#: `metadata` that is not JSON (a hand-made row) gives NULL instead of failing the insert.
SQLITE_RESPONSE_ID = "json_extract(CASE WHEN json_valid(metadata) THEN metadata END, '$.response_id')"

inference_runs = Table(
    "inference_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(64), nullable=False, unique=True),
    Column("created_at", String(32), nullable=False),
    Column("endpoint", String(64), nullable=False),
    Column("provider", String(64)),
    Column("model", Text),
    Column("upstream_model", Text),
    Column("prompt", Text),
    Column("response", Text),
    Column("request_json", Text),
    Column("response_json", Text),
    Column("status_code", Integer),
    Column("error", Text),
    Column("stream", Integer, nullable=False, default=0),
    Column("prompt_tokens", Integer),
    Column("completion_tokens", Integer),
    Column("total_tokens", Integer),
    Column("latency_ms", Float),
    Column("ttft_ms", Float),
    Column("attempts", Integer, nullable=False, default=0),
    Column("cache", String(16)),
    Column("cost_usd", Float),
    Column("session_id", Text),
    Column("tags", Text),
    Column("user", Text),
    Column("client", Text),
    Column("metadata", Text),
    Column("request_headers", Text),
    Index("ix_inference_runs_created_at", "created_at"),
    Index("ix_inference_runs_provider_model", "provider", "model"),
    Index("ix_inference_runs_session_id", "session_id"),
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(64), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("provider", String(64)),
    Column("url_path", Text),
    Column("status_code", Integer),
    Column("error", Text),
    Column("latency_ms", Float),
    Column("started_at", String(32), nullable=False),
    # One row per (request, attempt): what makes writing the same attempts twice (a spool
    # replayed after a partial commit) a no-op; it also serves lookups by request_id. Added to
    # older logs by migration 3, which drops their former index on request_id alone.
    Index("ux_attempts_request_id_attempt", "request_id", "attempt", unique=True),
)
