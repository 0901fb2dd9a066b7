"""What a complete `inference_runs` row holds, whatever the request was: the check shared by
the hostile-input tests and the fuzz test."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from conftest import HEX32, ISO_UTC_MS, Log


def assert_row_complete(log: Log, row: sqlite3.Row, *, status: int, endpoint: str, request_id: str | None = None,
                        body_sent: bool = True) -> None:
    """Every column the row should have for a request answered `status` (499: the client left)."""
    where = f"row {dict(row)}"[:3000]
    if request_id is not None:
        assert row["request_id"] == request_id, where
    assert HEX32.match(row["request_id"]), where
    assert ISO_UTC_MS.match(row["created_at"]), where
    assert row["endpoint"] == endpoint, where
    assert row["status_code"] == status, where
    assert isinstance(row["latency_ms"], float | int) and row["latency_ms"] >= 0, where
    assert row["stream"] in (0, 1), where
    assert row["attempts"] == len(log.attempts(row["request_id"])), where
    assert "log row incomplete" not in (row["error"] or ""), where
    headers = _json(row["request_headers"], where)
    assert isinstance(headers, dict) and headers, where
    for column in ("metadata", "tags"):
        if row[column] is not None:
            _json(row[column], where)
    meta_only = str(headers.get("x-study-log", "")).strip().lower() == "meta"
    if body_sent and not meta_only:
        assert row["request_json"] is not None, where
    if status >= 400:
        assert row["error"], where
    else:
        assert row["error"] is None or row["stream"] == 1, where
        assert row["provider"] and row["model"], where
        if not meta_only:
            assert row["request_json"] is not None and row["response_json"] is not None, where


def _json(text: str | None, where: str) -> Any:
    assert text is not None, where
    try:
        return json.loads(text)
    except ValueError:
        raise AssertionError(f"not JSON: {text[:200]!r} in {where}") from None
