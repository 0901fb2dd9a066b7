"""docs/schema.md describes the schema the code creates: its column tables, indexes and
migrations are what tests/schema_doc.py generates from a log the migrations made, and every
row of them is described, so a new migration cannot leave the page stale."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import schema_doc


def test_the_schema_page_is_generated_from_the_code() -> None:
    current = schema_doc.PAGE.read_text(encoding="utf-8")
    fresh = schema_doc.generate(current)
    assert fresh == current, (
        "docs/schema.md is out of step with the schema the migrations create: "
        f"run `{schema_doc.REGENERATE}`, then describe any row marked {schema_doc.UNDESCRIBED}"
    )


def test_every_column_and_migration_is_described() -> None:
    text = schema_doc.PAGE.read_text(encoding="utf-8")
    assert schema_doc.UNDESCRIBED not in text, (
        f"docs/schema.md has rows marked {schema_doc.UNDESCRIBED}: say what they hold"
    )


def test_every_column_of_the_log_is_in_the_page(tmp_path: Path) -> None:
    """The plain check, beside the generated one: each column the migrations create has its row."""
    db = schema_doc.migrated_database(tmp_path / "log.db")
    try:
        columns = {t: [row[1] for row in db.execute(f"PRAGMA table_info({t})")] for t in schema_doc.TABLES}
    finally:
        db.close()
    assert "request_headers" in columns["inference_runs"] and "started_at" in columns["attempts"]
    blocks = {m["name"]: m["body"] for m in schema_doc.BLOCK.finditer(schema_doc.PAGE.read_text(encoding="utf-8"))}
    missing = [f"{t}.{c}" for t, cs in columns.items() for c in cs if f"| `{c}` |" not in blocks.get(t, "")]
    assert missing == [], f"columns without a row in docs/schema.md: {missing} (run `{schema_doc.REGENERATE}`)"


def test_a_new_column_makes_the_page_stale(monkeypatch) -> None:
    """What the test above guards against: a migration that adds a column."""
    real = schema_doc.migrated_database

    def with_a_new_column(path: Path) -> sqlite3.Connection:
        db = real(path)
        db.execute("ALTER TABLE attempts ADD COLUMN upstream_request_id TEXT")
        return db

    monkeypatch.setattr(schema_doc, "migrated_database", with_a_new_column)
    current = schema_doc.PAGE.read_text(encoding="utf-8")
    fresh = schema_doc.generate(current)
    assert fresh != current
    assert f"| `upstream_request_id` | TEXT | {schema_doc.UNDESCRIBED} |" in fresh
