"""The plan of a study: items × repeats × models, each call keyed and hashed for `--resume`.

A call's key is (item, input_hash, model, repeat). The `input_hash` covers what the item
asks (its messages and the `--param` values, not the model), so an edited or reordered
prompt file, or changed parameters, count as new work rather than being skipped by mistake.
Each call's `X-Study-Metadata` header (built here) carries that key into its row.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .prompts import Item, StudyError

#: `X-Study-Metadata` is a header: HTTP servers refuse header blocks past a few tens of KiB
#: (h11's default is 64 KiB in all), so an item's own fields are kept only up to this size.
METADATA_HEADER_LIMIT = 8000
#: The body fields the runner sets itself, from `--models` and the prompt file.
RESERVED_PARAMS = frozenset({"model", "messages"})


def parse_params(specs: Iterable[str]) -> dict[str, Any]:
    """`--param key=value`: the value as JSON when it parses (numbers, booleans, null, lists,
    objects, "quoted strings"), otherwise as plain text."""
    params: dict[str, Any] = {}
    for spec in specs:
        key, eq, raw = spec.partition("=")
        key = key.strip()
        if not eq or not key:
            raise StudyError(f"--param {spec!r}: expected KEY=VALUE, e.g. temperature=0.2")
        if key in RESERVED_PARAMS:
            raise StudyError(f"--param {key}: set by the runner itself (use --models, and the prompt file)")
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    return params


def parse_models(spec: str) -> list[str]:
    """`--models a,b,c`: each model once, in the order given (the order the calls take)."""
    models = list(dict.fromkeys(m.strip() for m in spec.split(",") if m.strip()))
    if not models:
        raise StudyError("--models: give at least one model, e.g. --models openai/gpt-4o-mini,mock/echo")
    return models


Key = tuple[int, str, str, int]  # (item, input_hash, model, repeat)


@dataclass(frozen=True)
class Call:
    """One call of the plan: an item sent to a model for its `repeat`-th time."""

    item: Item
    model: str
    repeat: int
    input_hash: str

    @property
    def key(self) -> Key:
        return (self.item.index, self.input_hash, self.model, self.repeat)


def input_hash(messages: list[dict[str, Any]], params: dict[str, Any]) -> str:
    """What an item asks (messages and parameters, not the model): 16 hex digits of SHA-256."""
    canonical = json.dumps({"messages": messages, "params": params}, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def plan_calls(items: Sequence[Item], models: Sequence[str], repeats: int, params: dict[str, Any]) -> list[Call]:
    """Item by item, each model in turn: an interrupted study has every model on the same items."""
    calls = []
    for item in items:
        digest = input_hash(item.messages, params)
        for repeat in range(repeats):
            for model in models:
                calls.append(Call(item, model, repeat, digest))
    return calls


def metadata_header(name: str, run_id: str, call: Call) -> tuple[str, list[str]]:
    """The `X-Study-Metadata` value (ASCII JSON) and the item fields left out for size."""
    metadata: dict[str, Any] = {
        "study": name,
        "run": run_id,
        "item": call.item.index,
        "repeat": call.repeat,
        "input_hash": call.input_hash,
    }
    omitted = []
    size = len(_ascii_json(metadata))
    for key, value in call.item.extras.items():
        if key in metadata:
            omitted.append(key)
            continue
        piece = len(_ascii_json({key: value}))
        if size + piece > METADATA_HEADER_LIMIT:
            omitted.append(key)
            continue
        metadata[key] = value
        size += piece
    if omitted:
        metadata["omitted_fields"] = omitted
    return _ascii_json(metadata), omitted


def _ascii_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"), default=str)
