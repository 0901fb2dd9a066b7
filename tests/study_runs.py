"""What the study runner tests share: the prompts, an environment clean of the developer's
variables, a prompt file, and the study's rows in the log by (item, model, repeat)."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from conftest import Log

PROMPTS = [
    {"prompt": "Name a river in France.", "lang": "en", "difficulty": 1},
    {"messages": [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Capital of Peru?"}],
     "lang": "en"},
    {"prompt": "Quelle est la capitale du Japon ?", "lang": "fr", "expected": "Tokyo"},
]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No provider, database or proxy-key variable from the developer's shell; cwd without `.env`."""
    for name in list(os.environ):
        if name.startswith(("OPENAI_", "AZURE_", "HYPERBOLIC_", "DATABASE_URL", "PANEL_", "STUDY_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_jsonl(path: Path, items: list[dict]) -> Path:
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return path


def study_rows(db: Path, name: str) -> list[dict]:
    rows = [dict(r) for r in Log(db).rows()]
    return [r for r in rows if r["tags"] and name in json.loads(r["tags"])]


def keys(rows: list[dict]) -> Counter:
    """(item, model, repeat) of the successful rows, with how many rows each has."""
    found = Counter()
    for row in rows:
        if row["status_code"] == 200 and row["error"] is None:
            meta = json.loads(row["metadata"])
            found[(meta["item"], row["model"], meta["repeat"])] += 1
    return found


def expected_keys(items: int, models: list[str], repeats: int) -> set:
    return {(i, m, r) for i in range(items) for m in models for r in range(repeats)}
