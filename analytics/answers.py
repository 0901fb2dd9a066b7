"""A study's answers side by side: one row per prompt, one column per model.

The rows of a study carry `metadata.item` and `metadata.repeat` (set by the study runner),
which say which prompt of the file a row answers and which repeat it was; rows tagged by
hand, without an item, are grouped by their prompt text instead.
"""

from __future__ import annotations

import pandas as pd

from .frames import json_cell


def _study_items(rows: pd.DataFrame) -> pd.DataFrame:
    """A study's rows with `item`, `repeat` (from `metadata`) and the key of the prompt they answer."""
    metadata = [json_cell(m, {}) for m in rows["metadata"].tolist()]
    item = [m.get("item") if isinstance(m.get("item"), int) else None for m in metadata]
    rows = rows.assign(
        item=pd.array(item, dtype="Int64"),
        repeat=[m.get("repeat") if isinstance(m.get("repeat"), int) else 0 for m in metadata],
        key=[f"item {i}" if i is not None else f"prompt {p}" for i, p in zip(item, rows["prompt"], strict=True)],
        latency_ms=rows["latency_ms"].astype("float64"),
    )
    return rows.sort_values(["item", "repeat", "id"], na_position="last", ignore_index=True)


def side_by_side(rows: pd.DataFrame, prompt: int | str | None, repeats: str) -> pd.DataFrame:
    """The wide frame of `compare_answers` from the study's successful rows (`id`, `model`,
    `prompt`, `response`, `latency_ms`, `metadata`)."""
    rows = _study_items(rows)
    if isinstance(prompt, int):
        rows = rows[(rows["item"] == prompt).fillna(False)]
    elif isinstance(prompt, str):
        rows = rows[rows["prompt"].fillna("").str.contains(prompt, case=False, regex=False)]
    if rows.empty:
        return pd.DataFrame(columns=["item", "prompt"])
    if repeats == "first":
        picked = rows.drop_duplicates(["key", "model"])[["key", "model", "response", "latency_ms"]]
    elif repeats == "all":
        picked = rows.groupby(["key", "model"], sort=False).agg(
            response=("response", lambda answers: "\n\n---\n\n".join(a for a in answers if a is not None)),
            latency_ms=("latency_ms", "median"),
        ).reset_index()
    else:
        raise ValueError(f"repeats must be 'first' or 'all', not {repeats!r}")
    keys = rows["key"].unique()
    models = rows.sort_values("id")["model"].unique()
    answers = picked.pivot(index="key", columns="model", values="response").reindex(index=keys, columns=models)
    latency = picked.pivot(index="key", columns="model", values="latency_ms").reindex(index=keys, columns=models)
    latency.columns = [f"{model} latency_ms" for model in models]
    first = rows.drop_duplicates("key").set_index("key")[["item", "prompt"]].reindex(keys)
    wide = pd.concat([first, answers, latency], axis=1).reset_index(drop=True)
    wide.columns.name = None
    return wide

