"""Metrics without a server: bounded labels, usage read from an answer, the recorder's counts."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from proxy.metrics import MAX_MODELS, OTHER, LabelCap, Metrics
from proxy.pricing import Pricer
from proxy.record import CallRecord


def record(model: str, body: bytes = b'{"model": "m", "usage": {"prompt_tokens": 3, "completion_tokens": 2}}') -> CallRecord:
    rec = CallRecord("chat/completions", model=model, provider="mock", upstream_model="m", pricer=Pricer())
    rec.begin_attempt("mock", "/chat/completions").finish(200)
    rec.response_body = body
    rec.finish(200)
    return rec


def series(metrics: Metrics, name: str) -> list[dict[str, str]]:
    families = text_string_to_metric_families(metrics.exposition().decode())
    return [s.labels for f in families for s in f.samples if s.name == name]


def test_label_cap_folds_the_rest_into_other():
    cap = LabelCap(2)
    assert [cap("a"), cap("b"), cap("c"), cap("a"), cap(None)] == ["a", "b", OTHER, "a", OTHER]


def test_model_labels_are_bounded():
    metrics = Metrics({}, lambda: {})
    for n in range(MAX_MODELS + 50):
        metrics.observe(record(f"model-{n}"))
    models = {labels["model"] for labels in series(metrics, "study_query_llm_requests_total")}
    assert len(models) == MAX_MODELS + 1 and OTHER in models


def test_usage_of_a_large_answer_is_read_from_its_end():
    vector = ",".join(["0.125"] * 20_000)
    body = ('{"data": [{"embedding": [' + vector + ']}], "usage": {"prompt_tokens": 7, "total_tokens": 7}}').encode()
    metrics = Metrics({}, lambda: {})
    metrics.observe(record("big", body))
    text = metrics.exposition().decode()
    assert 'study_query_llm_tokens_total{kind="prompt",model="big",provider="mock"} 7.0' in text


def test_recorder_counts_become_counters_and_levels_gauges():
    stats = {"pending": 0, "written": 5, "degraded": False, "spool": "/x.jsonl", "lost": 0, "journal_bytes": 10}
    metrics = Metrics({}, lambda: stats)
    metrics.exposition()
    stats["written"] = 8
    text = metrics.exposition().decode()
    assert 'study_query_llm_recorder_rows_total{outcome="written"} 8.0' in text
    assert "study_query_llm_recorder_pending_rows 0.0" in text
    assert "study_query_llm_recorder_journal_bytes 10.0" in text  # a key the recorder may grow
    assert "study_query_llm_recorder_spool " not in text  # not a number: left out


def test_a_call_is_priced_once_for_its_metrics_and_its_row():
    """The metrics and the row both need the cost: the record prices it once, the same for both."""
    from proxy.pricing import Price

    calls: list[str] = []

    class CountingPricer(Pricer):
        def cost(self, provider, models, usage):
            calls.append(provider)
            return super().cost(provider, models, usage)

    rec = CallRecord("chat/completions", model="local/m", provider="local", upstream_model="m",
                     pricer=CountingPricer({"local/m": Price(input=1.0, output=2.0)}))
    rec.response_body = b'{"model": "m", "usage": {"prompt_tokens": 3, "completion_tokens": 2}}'
    rec.begin_attempt("local", "/chat/completions").finish(200)
    rec.finish(200)
    metrics = Metrics({}, lambda: {})
    metrics.observe(rec)
    run, _ = rec.rows()
    assert calls == ["local"]
    assert run["cost_usd"] == (3 * 1.0 + 2 * 2.0) / 1_000_000
    metrics.flush()
    cost = [s for f in text_string_to_metric_families(metrics.exposition().decode())
            if f.name == "study_query_llm_cost_usd" for s in f.samples if s.name.endswith("_total")]
    assert cost and cost[0].value == run["cost_usd"]
