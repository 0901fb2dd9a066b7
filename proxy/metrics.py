"""`GET /metrics`: what the proxy did, in Prometheus' text format (prometheus-client).

Every finished request passes `ProxyAPI.submit`, which hands its `CallRecord` to
`Metrics.observe`: the latency histogram is observed at once, and the counts are added up in
a plain dict (a tenth of the cost of prometheus-client's locked increments) that goes into
the counters at each scrape, and every `PUBLISH_INTERVAL` seconds with several processes. Labels stay bounded: providers are configured ones, statuses are
HTTP codes, and models (as the client named them) and endpoints are capped, every value
past the first `MAX_MODELS` / `MAX_ENDPOINTS` seen being counted as `other`. No label
carries a key, a prompt or a header.

The recorder's state (`Recorder.stats()`) is read at scrape time; its cumulative counts
become counters (`recorder_rows_total{outcome}`), the rest gauges, whatever keys it has.

Several processes: with `PROMETHEUS_MULTIPROC_DIR` set (before the process starts),
prometheus-client writes every value to files in that directory and a scrape of any one
process sums them all (`MultiProcessCollector`); each process then also writes its
recorder's state there every `PUBLISH_INTERVAL` seconds. The directory must be empty when
the first process starts (docs/deployment.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess, values
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from .errors import ProxyError
from .endpoints import METERED_ENDPOINTS
from .record import CallRecord
from .request_headers import authenticate, plain_headers
from .responses.rows import usage_columns

NAMESPACE = "study_query_llm"
MAX_MODELS = 200
MAX_ENDPOINTS = 50
OTHER = "other"
#: Seconds: from a cache hit (~1 ms) to a long generation (10 min).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
#: Answers up to this size are parsed whole for their usage; beyond, only their `usage` object is.
PARSE_WHOLE_BYTES = 64 * 1024
#: Recorder counts that only grow (the rest of `stats()` are levels: gauges).
CUMULATIVE = frozenset({"written", "spooled", "replayed", "refused", "lost", "journaled", "torn"})
#: In multiprocess mode, how often each process writes its recorder's state to the shared files.
PUBLISH_INTERVAL = 1.0
#: Metric names for the recorder's levels, where the key alone would not say what is counted.
LEVEL_NAMES = {"pending": "recorder_pending_rows", "held_in_memory": "recorder_held_rows"}
_NAME = re.compile(r"[^a-zA-Z0-9_]")
log = logging.getLogger("proxy.metrics")
_DECODER = json.JSONDecoder()


class LabelCap:
    """The first `limit` distinct values pass as they are; later ones become `other`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen: set[str] = set()

    def __call__(self, value: str | None) -> str:
        value = value or ""
        if value in self.seen:
            return value
        if len(self.seen) >= self.limit:
            return OTHER
        self.seen.add(value)
        return value


class Metrics:
    """The proxy's metrics, in a registry of their own (or the multiprocess files)."""

    def __init__(self, client_keys: Mapping[str, str], stats: Callable[[], dict[str, Any]], multiproc_dir: str | None = None) -> None:
        self.client_keys = client_keys
        self.stats = stats
        if multiproc_dir and values.ValueClass is values.MutexValue:
            # prometheus-client chose its mode when it was imported, from the process environment
            log.warning(
                "PROMETHEUS_MULTIPROC_DIR is set, but not in the environment this process started with "
                "(a .env file?): /metrics counts this process only"
            )
            multiproc_dir = None
        self.multiproc_dir = multiproc_dir or None
        self.registry = CollectorRegistry()
        self.models = LabelCap(MAX_MODELS)
        self.endpoints = LabelCap(MAX_ENDPOINTS)
        self._children: dict[tuple[Any, ...], Any] = {}
        self._counts: dict[tuple[Any, ...], float] = {}  # (metric, *labels) → not yet in the metric
        self._recorder_metrics: dict[str, Any] = {}
        self._published: dict[str, float] = {}
        self._submitted: deque[float] = deque(maxlen=200_000)  # when recent records were handed to the recorder
        self._publisher: asyncio.Task[None] | None = None

        def make(kind: type, name: str, doc: str, labels: tuple[str, ...], **extra: Any) -> Any:
            return kind(name, doc, labels, namespace=NAMESPACE, registry=self.registry, **extra)

        request_labels = ("endpoint", "provider", "model")
        self.requests = make(Counter, "requests", "Client requests, by the status the proxy answered.", request_labels + ("status",))
        self.latency = make(Histogram, "request_duration_seconds", "From the request's arrival to its last byte.",
                            request_labels, buckets=LATENCY_BUCKETS)
        self.ttft = make(Histogram, "time_to_first_token_seconds", "Streams: from the request's arrival to the first token.",
                         request_labels, buckets=TTFT_BUCKETS)
        self.attempts = make(Counter, "upstream_attempts", "Upstream calls, by their HTTP status (`error`: no answer).",
                             ("provider", "status"))
        self.retries = make(Counter, "upstream_retries", "Upstream calls beyond a request's first (retries and fallbacks).",
                            ("provider",))
        self.tokens = make(Counter, "tokens", "Tokens of the calls that went upstream, as upstream reported them.",
                           ("provider", "model", "kind"))
        self.cost = make(Counter, "cost_usd", "What the calls that went upstream cost, in USD (where a price is known).",
                         ("provider", "model"))
        self.cache = make(Counter, "cache_outcomes", "Answers by origin: hit (cache), miss, dedup (joined another call).",
                          ("endpoint", "outcome"))

    # -- per request -----------------------------------------------------------------------

    def observe(self, record: CallRecord) -> None:
        """Count one finished request (called once per record, as the recorder gets it)."""
        self._submitted.append(time.monotonic())
        provider = record.provider or ""
        model = self.models(record.model)
        endpoint = self.endpoints(record.endpoint)
        counts = self._counts
        key: tuple[Any, ...] = (self.requests, endpoint, provider, model, str(record.status_code or 0))
        counts[key] = counts.get(key, 0.0) + 1
        if record.latency_ms is not None:
            self._child(self.latency, endpoint, provider, model).observe(record.latency_ms / 1000)
        if record.ttft_ms is not None:
            self._child(self.ttft, endpoint, provider, model).observe(record.ttft_ms / 1000)
        if record.cache:
            key = (self.cache, endpoint, record.cache)
            counts[key] = counts.get(key, 0.0) + 1
        if not record.attempts:
            return
        for attempt in record.attempts:
            key = (self.attempts, attempt.provider, str(attempt.status_code) if attempt.status_code else "error")
            counts[key] = counts.get(key, 0.0) + 1
        if len(record.attempts) > 1:
            key = (self.retries, provider)
            counts[key] = counts.get(key, 0.0) + len(record.attempts) - 1
        if record.status_code == 200 and record.endpoint in METERED_ENDPOINTS:
            self._count_usage(record, provider, model)

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def flush(self) -> None:
        """The counts added up since the last flush, into their counters."""
        counts, self._counts = self._counts, {}
        for (metric, *labels), amount in counts.items():
            self._child(metric, *labels).inc(amount)

    def _count_usage(self, record: CallRecord, provider: str, model: str) -> None:
        usage, answer_model = _usage(record)
        if not isinstance(usage, dict):
            return
        usage = usage_columns(usage)
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        counts = self._counts
        for kind, count in (("prompt", prompt), ("completion", completion)):
            if isinstance(count, int) and not isinstance(count, bool) and count > 0:
                key = (self.tokens, provider, model, kind)
                counts[key] = counts.get(key, 0.0) + count
        if record.pricer is not None and record.provider and isinstance(prompt, int):
            cost, _ = record.price(usage, answer_model)
            if cost:
                key = (self.cost, provider, model)
                counts[key] = counts.get(key, 0.0) + cost

    # -- the recorder's state --------------------------------------------------------------

    def publish_recorder(self) -> None:
        """`Recorder.stats()` into the registry: counts as counters (by their growth), the rest as gauges."""
        stats = self.stats()
        for key, value in stats.items():
            if isinstance(value, bool):
                value = float(value)
            if not isinstance(value, (int, float)):
                continue
            if key in CUMULATIVE:
                grown = value - self._published.get(key, 0.0)
                if grown > 0:
                    self._recorder_metric(Counter, "recorder_rows", "Log rows by what became of them.", "outcome", key).inc(grown)
                self._published[key] = value
            else:
                name = LEVEL_NAMES.get(key) or f"recorder_{_NAME.sub('_', key)}"
                self._recorder_metric(Gauge, name, f"The recorder's `{key}` (Recorder.stats()).").set(value)
        if "lag" not in stats and "lag_seconds" not in stats:
            self._recorder_metric(Gauge, "recorder_lag_seconds", "How long the oldest row waiting for the writer has waited.",
                                  mode="livemax").set(self._lag(stats.get("pending")))

    def _recorder_metric(self, kind: type, name: str, doc: str, label: str | None = None, value: str = "", mode: str = "livesum") -> Any:
        key = f"{name}:{value}"
        metric = self._recorder_metrics.get(key)
        if metric is None:
            family = self._recorder_metrics.get(name)
            if family is None:
                extra = {"multiprocess_mode": mode} if kind is Gauge else {}
                family = kind(name, doc, (label,) if label else (), namespace=NAMESPACE, registry=self.registry, **extra)
                self._recorder_metrics[name] = family
            metric = family.labels(value) if label else family
            self._recorder_metrics[key] = metric
        return metric

    def _lag(self, pending: Any) -> float:
        """The recorder's queue is first in, first out: its oldest row is the `pending`-th latest submitted."""
        if not isinstance(pending, int) or pending <= 0 or not self._submitted:
            return 0.0
        oldest = self._submitted[-min(pending, len(self._submitted))]
        return max(0.0, time.monotonic() - oldest)

    # -- life cycle and the endpoint -------------------------------------------------------

    async def start(self) -> None:
        if self.multiproc_dir is not None and self._publisher is None:
            self._publisher = asyncio.get_running_loop().create_task(self._publish_forever(), name="metrics-publisher")

    async def _publish_forever(self) -> None:
        while True:
            self.flush()
            self.publish_recorder()
            await asyncio.sleep(PUBLISH_INTERVAL)

    async def aclose(self) -> None:
        if self._publisher is not None:
            self._publisher.cancel()
            await asyncio.gather(self._publisher, return_exceptions=True)
            self._publisher = None
            self.flush()
            self.publish_recorder()  # the final counts, then this process's live gauges go
            multiprocess.mark_process_dead(os.getpid(), self.multiproc_dir)

    def exposition(self) -> bytes:
        self.flush()
        self.publish_recorder()
        if self.multiproc_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, self.multiproc_dir)
        return generate_latest(registry)

    async def endpoint(self, request: Request) -> Response:
        """`GET /metrics`, behind the proxy keys when there are any."""
        try:
            authenticate(self.client_keys, plain_headers(request))
        except ProxyError as exc:
            return Response(exc.json(), exc.status_code, media_type="application/json")
        return Response(self.exposition(), media_type=CONTENT_TYPE_LATEST)


def _usage(record: CallRecord) -> tuple[Any, str | None]:
    """(the call's usage object, the model its answer names), read as cheaply as possible."""
    if record.usage is not None or record.answer is not None:
        answer = record.answer or {}
        usage = record.usage if record.usage is not None else answer.get("usage")
        return usage, answer.get("model") if isinstance(answer.get("model"), str) else None
    body = record.response_body
    if not body:
        return None, None
    if len(body) <= PARSE_WHOLE_BYTES:
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None, None
        if not isinstance(answer, dict):
            return None, None
        model = answer.get("model")
        return answer.get("usage"), model if isinstance(model, str) else None
    at = body.rfind(b'"usage"')  # a large answer (embeddings): its usage comes last
    start = body.find(b"{", at) if at >= 0 else -1
    if start < 0:
        return None, None
    try:
        usage, _ = _DECODER.raw_decode(body[start : start + 4096].decode("utf-8", "replace"))
    except ValueError:
        return None, None
    return usage, None
