"""The study's prompt file, read into items: JSONL or CSV, every fault named with its line.

JSONL: one object per line, `{"prompt": "…"}` (sent as one user message) or
`{"messages": […]}`; CSV: a `prompt` column. Any other field or column is the item's own
metadata, carried into its rows. Loading happens before anything is started, so a broken
file costs nothing but its message.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class StudyError(Exception):
    """A problem with the command line or the prompt file: printed as is, exit code 2."""


@dataclass(frozen=True)
class Item:
    """One prompt of the set: its position, its messages and its other fields."""

    index: int
    messages: list[dict[str, Any]]
    extras: dict[str, Any]
    where: str  # "file.jsonl:3", for messages


def load_prompts(path: str | Path) -> list[Item]:
    """The items of a JSONL or CSV prompt file; `StudyError` says what is wrong and where."""
    path = Path(path)
    if not path.exists():
        raise StudyError(f"prompt file not found: {path}")
    if not path.is_file():
        raise StudyError(f"not a file: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise StudyError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise StudyError(f"cannot read {path}: {exc.strerror}") from None
    suffix = path.suffix.lower()
    if suffix == ".csv" or (suffix not in (".jsonl", ".ndjson", ".json") and not text.lstrip().startswith("{")):
        items = _load_csv(path, text)
    else:
        items = _load_jsonl(path, text)
    if not items:
        raise StudyError(f"{path}: no prompts in the file")
    return items


def _load_jsonl(path: Path, text: str) -> list[Item]:
    items: list[Item] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise StudyError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(value, dict):
            raise StudyError(f"{where}: expected a JSON object like {{\"prompt\": \"…\"}}, got {type(value).__name__}")
        items.append(_item(len(items), value, where))
    return items


def _load_csv(path: Path, text: str) -> list[Item]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = [c.strip() if c else c for c in (reader.fieldnames or [])]
    if "prompt" not in columns:
        found = ", ".join(repr(c) for c in columns) or "none"
        raise StudyError(f"{path}: a CSV prompt file needs a 'prompt' column (columns found: {found})")
    reader.fieldnames = columns
    items: list[Item] = []
    for row in reader:
        where = f"{path}:{reader.line_num}"
        if None in row:
            raise StudyError(f"{where}: this row has more fields than the header")
        if not any((v or "").strip() for v in row.values()):
            continue  # a blank line
        values = {k: v for k, v in row.items() if k}
        items.append(_item(len(items), values, where))
    return items


def _item(index: int, value: dict[str, Any], where: str) -> Item:
    extras = {k: v for k, v in value.items() if k not in ("prompt", "messages")}
    has_prompt, has_messages = "prompt" in value, "messages" in value
    if has_prompt and has_messages:
        raise StudyError(f"{where}: give either \"prompt\" or \"messages\", not both")
    if has_messages:
        messages = value["messages"]
        if not isinstance(messages, list) or not messages:
            raise StudyError(f"{where}: \"messages\" must be a non-empty list of {{\"role\": …, \"content\": …}} objects")
        for n, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise StudyError(f"{where}: messages[{n}] must be an object with a \"role\" (and its \"content\")")
        return Item(index, messages, extras, where)
    if not has_prompt:
        raise StudyError(f"{where}: no \"prompt\" or \"messages\" field")
    prompt = value["prompt"]
    if not isinstance(prompt, str) or not prompt.strip():
        raise StudyError(f"{where}: \"prompt\" must be non-empty text")
    return Item(index, [{"role": "user", "content": prompt}], extras, where)
