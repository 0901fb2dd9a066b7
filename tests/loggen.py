"""A large, realistic and reproducible log for the analytics tests, generated on the spot.

Why generated rather than checked in: a log of 100,000 rows is tens of megabytes, and the
tests need its size (to time the study functions) more than any particular content. Every
value except the timestamps comes from a seeded generator, so counts, shares and sums are
the same on every run; the timestamps end at the moment of generation so that windows such
as `since="24h"` find rows.

The mix: five provider/model routes with log-normal latencies of their own, streams with a
time to first token, errors as the proxy records them (429, 5xx, a stream broken midway, a
client gone, a request refused before routing), cache hits and de-duplicated calls whose
`cost_usd` is what they would have cost, unpriced models (NULL cost), tags, sessions, users,
and at the end a block of rows written by a study run (`tags = [name]`, `metadata.item`,
`metadata.repeat`). Rows are inserted with the stdlib driver in one transaction and indexed
for full-text search in one statement, as `proxy.store.Store.write` does per batch.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from proxy.store import Store


@dataclass(frozen=True)
class Route:
    """One provider/model as the log sees it, with the numbers that make its rows."""

    provider: str
    model: str  # as the client asked for it
    upstream_model: str
    share: float  # of all calls
    median_ms: float  # of a successful call's latency
    sigma: float  # of log(latency)
    error_rate: float
    price_in: float | None  # USD per million prompt tokens; None: no price known
    price_out: float | None


ROUTES = (
    Route("openai", "openai/gpt-4o-mini", "gpt-4o-mini", 0.35, 700.0, 0.45, 0.02, 0.15, 0.60),
    Route("openai", "openai/gpt-4o", "gpt-4o", 0.20, 1600.0, 0.50, 0.03, 2.50, 10.00),
    Route("azure", "azure/gpt-4o-dep", "gpt-4o-dep", 0.18, 1400.0, 0.40, 0.04, 2.50, 10.00),
    Route("hyperbolic", "hyperbolic/meta-llama/Meta-Llama-3.1-70B-Instruct", "meta-llama/Meta-Llama-3.1-70B-Instruct",
          0.17, 2300.0, 0.60, 0.08, None, None),
    Route("mock", "mock/echo", "echo", 0.10, 4.0, 0.30, 0.0, None, None),
)

COUNTRIES = (
    ("France", "Paris"), ("Japan", "Tokyo"), ("Peru", "Lima"), ("Kenya", "Nairobi"), ("Canada", "Ottawa"),
    ("Norway", "Oslo"), ("Chile", "Santiago"), ("Egypt", "Cairo"), ("India", "New Delhi"), ("Spain", "Madrid"),
    ("Brazil", "Brasilia"), ("Ghana", "Accra"), ("Vietnam", "Hanoi"), ("Poland", "Warsaw"), ("Mexico", "Mexico City"),
    ("Italy", "Rome"), ("Nepal", "Kathmandu"), ("Ireland", "Dublin"), ("Morocco", "Rabat"), ("Australia", "Canberra"),
)
TASKS = (
    ("What is the capital of {c}?", "The capital of {c} is {k}."),
    ("Name three rivers in {c}.", "Three rivers of {c} are listed in most atlases; the longest flows near {k}."),
    ("Summarize the history of {c} in one sentence.", "{c} grew around {k} over many centuries of trade and politics."),
    ("Translate 'good morning' into the main language of {c}.", "In {c}, around {k}, people say good morning like this."),
    ("Write a haiku about {k}.", "Morning over {k} / quiet streets of {c} wake up / rain on old rooftops"),
)
USERS = ("alice", "bob", "carol", "dan", "erin", "frank", "grace", "heidi")
TAG_SETS = (None, None, None, '["pilot"]', '["pilot","french"]', '["eval"]', '["eval","long"]', '["prod"]')
FAILURES = (  # (status_code, error, share of a route's errors)
    (429, "Rate limit reached for requests. Please try again in 20s.", 0.45),
    (500, "upstream answered HTTP 500", 0.20),
    (502, "upstream unreachable: connection refused", 0.10),
    (504, "upstream did not answer within 600.0 s", 0.05),
    (200, "upstream stream broke after 120 characters: connection reset", 0.10),
    (200, "client_disconnected", 0.10),
)
#: Share of all rows refused before routing (bad JSON): provider NULL, no tokens, no latency to speak of.
REFUSED_SHARE = 0.005
STUDY_NAME = "capitals"
STUDY_MODELS = tuple(r.model for r in ROUTES[:4])
STUDY_REPEATS = 2

COLUMNS = (
    "request_id", "created_at", "endpoint", "provider", "model", "upstream_model", "prompt", "response",
    "request_json", "response_json", "status_code", "error", "stream", "prompt_tokens", "completion_tokens",
    "total_tokens", "latency_ms", "ttft_ms", "attempts", "cache", "cost_usd", "session_id", "tags", "user",
    "client", "metadata", "request_headers",
)


def study_item_count(n: int) -> int:
    """How many prompt items the study block has in a log of `n` rows (a few hundred rows at most)."""
    return max(1, min(len(COUNTRIES), n // 2000))


def generate(n: int, seed: int = 20261124, end: datetime | None = None,
             span: timedelta = timedelta(days=7)) -> list[tuple[Any, ...]]:
    """`n` rows (tuples in `COLUMNS` order), in time order over `span` up to `end` (default: now, UTC)."""
    rng = np.random.default_rng(seed)
    end = end or datetime.now(timezone.utc)
    study_rows = study_item_count(n) * len(STUDY_MODELS) * STUDY_REPEATS if n >= 1000 else 0
    plain = n - study_rows
    created = _timestamps(rng, plain + study_rows, end, span)
    rows = _plain_rows(rng, plain, created[:plain])
    rows += _study_rows(rng, study_rows, created[plain:], plain)
    return rows


def _timestamps(rng: np.random.Generator, n: int, end: datetime, span: timedelta) -> list[str]:
    """Sorted UTC ISO-8601 millisecond stamps with a `Z`, as the proxy writes them."""
    end_ms = int(end.timestamp() * 1000)
    offsets = np.sort(rng.integers(0, int(span.total_seconds() * 1000), size=n))
    stamps = (np.int64(end_ms) - int(span.total_seconds() * 1000) + offsets).astype("datetime64[ms]")
    return [s + "Z" for s in np.datetime_as_string(stamps, unit="ms").tolist()]


def _plain_rows(rng: np.random.Generator, n: int, created: list[str]) -> list[tuple[Any, ...]]:
    """Everyday traffic: the routes in their shares, each with its latency, errors, cache and price."""
    route_index = rng.choice(len(ROUTES), size=n, p=[r.share for r in ROUTES])
    medians = np.array([r.median_ms for r in ROUTES])[route_index]
    sigmas = np.array([r.sigma for r in ROUTES])[route_index]
    latency = np.round(medians * np.exp(rng.normal(0.0, 1.0, n) * sigmas), 3)
    failed = rng.random(n) < np.array([r.error_rate for r in ROUTES])[route_index]
    failure = rng.choice(len(FAILURES), size=n, p=[f[2] for f in FAILURES])
    refused = rng.random(n) < REFUSED_SHARE
    stream = rng.random(n) < 0.45
    ttft_share = rng.uniform(0.08, 0.35, n)
    cache_draw = rng.random(n)
    prompt_tokens = rng.integers(12, 900, n)
    completion_tokens = rng.integers(5, 700, n)
    task, country = rng.integers(0, len(TASKS), n), rng.integers(0, len(COUNTRIES), n)
    user, session = rng.integers(0, len(USERS), n), rng.integers(0, 2500, n)
    has_session, tag_set = rng.random(n) < 0.4, rng.integers(0, len(TAG_SETS), n)
    retries = rng.integers(1, 4, n)
    rows = []
    for i in range(n):
        route = ROUTES[route_index[i]]
        c, k = COUNTRIES[country[i]]
        question, answer = (t.format(c=c, k=k) for t in TASKS[task[i]])
        row = {
            "request_id": f"{i:032x}", "created_at": created[i], "endpoint": "chat/completions",
            "provider": route.provider, "model": route.model, "upstream_model": route.upstream_model,
            "prompt": f"user: {question}", "response": None, "request_json": None, "response_json": None,
            "status_code": 200, "error": None, "stream": int(stream[i]), "prompt_tokens": None,
            "completion_tokens": None, "total_tokens": None, "latency_ms": float(latency[i]), "ttft_ms": None,
            "attempts": 1, "cache": None, "cost_usd": None,
            "session_id": f"session-{session[i]:04d}" if has_session[i] else None, "tags": TAG_SETS[tag_set[i]],
            "user": USERS[user[i]], "client": None, "metadata": None, "request_headers": None,
        }
        if refused[i]:
            row.update(provider=None, model=None, upstream_model=None, prompt=None, status_code=400, attempts=0,
                       error="Invalid JSON in the request body.", latency_ms=round(float(latency[i]) / 2000, 3))
        elif failed[i]:
            _fail(row, FAILURES[failure[i]], int(retries[i]), answer)
        else:
            _succeed(row, route, answer, int(prompt_tokens[i]), int(completion_tokens[i]),
                     float(ttft_share[i]), float(cache_draw[i]))
        rows.append(tuple(row[c] for c in COLUMNS))
    return rows


def _fail(row: dict[str, Any], failure: tuple[int, str, float], retries: int, answer: str) -> None:
    status, error, _ = failure
    row.update(status_code=status, error=error, attempts=retries if status in (429, 500, 502, 504) else 1)
    if status == 429:
        row["latency_ms"] = round(row["latency_ms"] / 8, 3)
    if status == 200:  # a stream that broke or lost its client: partial text, no usage
        row.update(stream=1, response=answer[: len(answer) // 2], ttft_ms=round(row["latency_ms"] * 0.2, 3))


def _succeed(row: dict[str, Any], route: Route, answer: str, prompt_tokens: int, completion_tokens: int,
             ttft_share: float, cache_draw: float) -> None:
    row.update(response=answer, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
               total_tokens=prompt_tokens + completion_tokens)
    if route.price_in is not None and route.price_out is not None:
        row["cost_usd"] = round((prompt_tokens * route.price_in + completion_tokens * route.price_out) / 1e6, 8)
    if row["stream"]:
        row["ttft_ms"] = round(row["latency_ms"] * ttft_share, 3)
        return
    if cache_draw < 0.10:  # answered from the cache: about a millisecond, the cost saved
        row.update(cache="hit", latency_ms=round(0.4 + cache_draw * 10, 3))
    elif cache_draw < 0.14:
        row["cache"] = "dedup"
    elif cache_draw < 0.40:
        row["cache"] = "miss"


def _study_rows(rng: np.random.Generator, n: int, created: list[str], first: int) -> list[tuple[Any, ...]]:
    """What `study-query-llm study capitals.jsonl --models … --repeats 2` leaves in the log."""
    if n == 0:
        return []
    routes = {r.model: r for r in ROUTES}
    rows, i = [], 0
    for item in range(study_item_count(first + n)):
        c, k = COUNTRIES[item]
        for model in STUDY_MODELS:
            route = routes[model]
            for repeat in range(STUDY_REPEATS):
                latency = round(route.median_ms * float(np.exp(rng.normal(0.0, route.sigma))), 3)
                metadata = {"study": STUDY_NAME, "run": "run-1", "item": item, "repeat": repeat, "input_hash": f"h{item}"}
                row = {
                    "request_id": f"{first + i:032x}", "created_at": created[i], "endpoint": "chat/completions",
                    "provider": route.provider, "model": model, "upstream_model": route.upstream_model,
                    "prompt": f"user: What is the capital of {c}?", "response": study_answer(model, item, repeat),
                    "request_json": None, "response_json": None, "status_code": 200, "error": None, "stream": 0,
                    "prompt_tokens": 14, "completion_tokens": 9, "total_tokens": 23, "latency_ms": latency,
                    "ttft_ms": None, "attempts": 1, "cache": None, "cost_usd": None, "session_id": STUDY_NAME,
                    "tags": json.dumps([STUDY_NAME]), "user": "runner", "client": None,
                    "metadata": json.dumps(metadata), "request_headers": None,
                }
                rows.append(tuple(row[c] for c in COLUMNS))
                i += 1
    return rows


def study_answer(model: str, item: int, repeat: int) -> str:
    """The study block's answer of `model` to item `item`, repeat `repeat` (what the tests expect)."""
    country, capital = COUNTRIES[item]
    return f"[{model.split('/')[-1]} #{repeat}] The capital of {country} is {capital}."


# --------------------------------------------------------------------------------------
# A small log whose every number is known, for exact checks
# --------------------------------------------------------------------------------------


def hour_start(moment: datetime | None = None) -> datetime:
    """The start of the current UTC hour: the small log's rows sit 10 minutes past whole hours
    before it, so their hourly buckets are known and `since="24h"` never cuts through them."""
    moment = moment or datetime.now(timezone.utc)
    return moment.replace(minute=0, second=0, microsecond=0)


def small_rows(base: datetime) -> list[dict[str, Any]]:
    """Twenty rows: everyday calls, errors, cache hits, a refused request, and a study `quiz`
    of 2 items × 2 models × 2 repeats (one failed) plus one row tagged with it by hand.
    `tests/test_study.py` spells out what each function must find in them."""

    def row(hours_ago: int, provider: str | None, model: str | None, **fields: Any) -> dict[str, Any]:
        moment = base - timedelta(hours=hours_ago) + timedelta(minutes=10)
        values: dict[str, Any] = dict.fromkeys(COLUMNS)
        values.update(
            request_id=f"small-{len(rows) + 1:03d}", created_at=moment.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            endpoint="chat/completions", provider=provider, model=model,
            upstream_model=model.split("/", 1)[-1] if model else None, status_code=200, stream=0, attempts=1,
        )
        values.update(fields)
        if isinstance(values["tags"], list):
            values["tags"] = json.dumps(values["tags"])
        if isinstance(values["metadata"], dict):
            values["metadata"] = json.dumps(values["metadata"])
        return values

    mini, echo = ("openai", "openai/gpt-4o-mini"), ("mock", "mock/echo")
    rows: list[dict[str, Any]] = []
    for spec in (
        (1, *mini, dict(latency_ms=100.0, prompt_tokens=10, completion_tokens=20, total_tokens=30, cost_usd=0.001,
                        tags=["pilot"], session_id="s1", user="alice", prompt="user: What is the capital of France?",
                        response="Paris is the capital of France.")),
        (2, *mini, dict(latency_ms=200.0, stream=1, ttft_ms=50.0, prompt_tokens=10, completion_tokens=30, total_tokens=40,
                        cost_usd=0.002, cache="miss", tags=["pilot", "fr"], session_id="s1", user="alice",
                        prompt="user: Bonjour, ça va ?", response="Oui, ça va bien, merci.")),
        (3, *mini, dict(latency_ms=300.0, stream=1, ttft_ms=70.0, prompt_tokens=5, completion_tokens=5, total_tokens=10,
                        cost_usd=0.003, user="bob", prompt="user: Name a language.", response="C++ is one.")),
        (30, *mini, dict(latency_ms=400.0, prompt_tokens=5, completion_tokens=5, total_tokens=10, cost_usd=0.004)),
        (1, *mini, dict(latency_ms=10.0, status_code=429, error="Rate limit reached", attempts=3)),
        (1, *mini, dict(latency_ms=1.0, prompt_tokens=10, completion_tokens=20, total_tokens=30, cost_usd=0.001,
                        cache="hit", tags=["pilot"])),
        (2, *echo, dict(latency_ms=5.0, prompt_tokens=1, completion_tokens=1, total_tokens=2)),
        (2, *echo, dict(latency_ms=7.0, prompt_tokens=1, completion_tokens=1, total_tokens=2)),
        (2, *echo, dict(latency_ms=6.0, prompt_tokens=1, completion_tokens=1, total_tokens=2, cache="dedup")),
        (3, *echo, dict(latency_ms=50.0, stream=1, ttft_ms=5.0, error="client_disconnected", response="Mock ans")),
        (1, None, None, dict(latency_ms=0.2, status_code=400, error="Invalid JSON in the request body.", attempts=0)),
    ):
        rows.append(row(spec[0], spec[1], spec[2], **spec[3]))
    quiz = {("openai/gpt-4o", 0): 1000.0, ("openai/gpt-4o", 1): 1200.0, ("azure/gpt-4o-dep", 0): 800.0,
            ("azure/gpt-4o-dep", 1): 900.0}
    for item in (0, 1):
        for model, provider in (("openai/gpt-4o", "openai"), ("azure/gpt-4o-dep", "azure")):
            for repeat in (0, 1):
                fields: dict[str, Any] = dict(
                    latency_ms=quiz[(model, repeat)] + 100.0 * item, prompt=f"user: Question {item}?",
                    response=f"{model} answer {item}.{repeat}", tags=["quiz"], session_id="quiz",
                    metadata={"study": "quiz", "run": "r1", "item": item, "repeat": repeat},
                )
                if (item, model, repeat) == (1, "azure/gpt-4o-dep", 0):
                    fields.update(status_code=500, error="upstream answered HTTP 500", response=None, latency_ms=50.0)
                rows.append(row(5, provider, model, **fields))
    rows.append(row(5, "openai", "openai/gpt-4o", latency_ms=900.0, prompt="user: Free question",
                    response="free answer", tags=["quiz"]))
    return rows


def write_rows(url: str, rows: list[dict[str, Any]]) -> None:
    """Rows written the proxy's way (`Store.write`), on SQLite or PostgreSQL, migrating first."""

    async def write() -> None:
        store = Store(url)
        await store.migrate()
        await store.write(rows, [])
        await store.dispose()

    asyncio.run(write())


def write_log(path: Path, n: int, seed: int = 20261124, end: datetime | None = None) -> Path:
    """A migrated SQLite log at `path` holding `n` generated rows, full-text indexed."""
    store = Store(str(path))

    async def migrate() -> None:
        await store.migrate()
        await store.dispose()

    asyncio.run(migrate())
    rows = generate(n, seed, end)
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA synchronous=OFF")
        db.execute("BEGIN")
        db.executemany(
            f"INSERT INTO inference_runs ({', '.join(map(_quote, COLUMNS))}) VALUES ({', '.join('?' * len(COLUMNS))})",
            rows,
        )
        db.execute("INSERT INTO inference_runs_fts(rowid, prompt, response) SELECT id, prompt, response FROM inference_runs")
        db.execute("COMMIT")
    finally:
        db.close()
    return path


def _quote(name: str) -> str:
    return f'"{name}"'


if __name__ == "__main__":  # python tests/loggen.py OUT.db N: a log to try the analytics on by hand
    import sys
    import time

    started = time.perf_counter()
    write_log(Path(sys.argv[1]), int(sys.argv[2]))
    print(f"{sys.argv[2]} rows in {time.perf_counter() - started:.1f} s -> {sys.argv[1]}")
