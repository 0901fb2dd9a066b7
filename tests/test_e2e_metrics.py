"""`GET /metrics` scraped from a running proxy and read with prometheus-client's own parser."""

from __future__ import annotations

import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import assert_error_shape, fake_key, provider_env, unique

pytestmark = pytest.mark.timeout(60)

OPENAI_KEY = fake_key("sk-test-openai")
ALICE_KEY = fake_key("sk-test-alice")
PREFIX = "study_query_llm_"


def scrape(server, key: str | None = None) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """{sample name: {sorted labels: value}} of one scrape."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = httpx.get(server.url + "/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    """The sum of `name` over every series whose labels include `labels`."""
    return sum(v for key, v in samples.get(PREFIX + name, {}).items() if set(labels.items()) <= set(key))


def chat(server, model: str, text: str, key: str | None = None, **extra) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key or OPENAI_KEY}", **extra.pop("headers", {})}
    return httpx.post(server.v1 + "/chat/completions", json={"model": model, "messages": [{"role": "user", "content": text}], **extra},
                      headers=headers, timeout=15)


def test_a_scrape_counts_what_the_proxy_did(proxy_factory, fake_upstream_server, upstream):
    server = proxy_factory(env=provider_env(fake_upstream_server, openai=OPENAI_KEY),
                           config="[retry]\nbackoff_base = 0.01\nbackoff_max = 0.02\n")
    model, failing, retried = unique("plain"), unique("fail-400"), unique("fail-503-twice")
    assert chat(server, model, "one").status_code == 200
    assert chat(server, model, "two", headers={"X-Study-Cache": "on"}).status_code == 200
    assert chat(server, model, "two", headers={"X-Study-Cache": "on"}).headers["x-study-cache"] == "hit"
    assert chat(server, failing, "bad").status_code == 400
    assert chat(server, retried, "again").status_code == 200
    with httpx.stream("POST", server.v1 + "/chat/completions", headers={"Authorization": f"Bearer {OPENAI_KEY}"}, timeout=15,
                      json={"model": model, "messages": [{"role": "user", "content": "stream"}], "stream": True}) as stream:
        assert stream.status_code == 200 and stream.read()
    assert httpx.post(server.v1 + "/chat/completions", content=b"{not json", timeout=15,
                      headers={"content-type": "application/json"}).status_code == 400
    server.log.wait_count(7)

    deadline = time.monotonic() + 5
    while value(samples := scrape(server), "recorder_rows_total", outcome="written") < 7 and time.monotonic() < deadline:
        time.sleep(0.05)
    chat_labels = {"endpoint": "chat/completions", "provider": "openai"}
    assert value(samples, "requests_total", model=model, status="200", **chat_labels) == 4
    assert value(samples, "requests_total", model=failing, status="400", **chat_labels) == 1
    assert value(samples, "requests_total", model=retried, status="200") == 1
    assert value(samples, "requests_total", status="400", model="") == 1  # the bad JSON: no model
    assert value(samples, "request_duration_seconds_count", model=model) == 4
    assert value(samples, "request_duration_seconds_bucket", model=model, le="+Inf") == 4
    assert value(samples, "time_to_first_token_seconds_count", model=model) == 1
    assert value(samples, "upstream_attempts_total", provider="openai", status="503") == 2
    assert value(samples, "upstream_attempts_total", provider="openai", status="200") == 4
    assert value(samples, "upstream_retries_total", provider="openai") == 2
    assert value(samples, "cache_outcomes_total", outcome="miss") == 1
    assert value(samples, "cache_outcomes_total", outcome="hit") == 1
    # The fake answers with usage; the hit made no upstream call, so its tokens are not counted.
    tokens = value(samples, "tokens_total", model=model, kind="prompt")
    assert tokens > 0 and value(samples, "tokens_total", model=model, kind="completion") > 0
    rows = server.log.rows("model = ? AND cache IS NOT 'hit'", (model,))
    assert tokens == sum(r["prompt_tokens"] for r in rows)
    assert value(samples, "recorder_rows_total", outcome="written") >= 7
    assert PREFIX + "recorder_pending_rows" in samples and PREFIX + "recorder_lag_seconds" in samples
    assert value(samples, "recorder_degraded") == 0


def test_metrics_sit_behind_the_proxy_keys(proxy_factory, fake_upstream_server, upstream):
    config = '[clients]\nalice = { key_env = "ALICE_PROXY_KEY" }\n'
    server = proxy_factory(env=provider_env(fake_upstream_server, openai=OPENAI_KEY, ALICE_PROXY_KEY=ALICE_KEY), config=config)
    for headers in ({}, {"Authorization": "Bearer sk-wrong"}):
        refused = httpx.get(server.url + "/metrics", headers=headers, timeout=10)
        assert refused.status_code == 401
        assert assert_error_shape(refused.json())["code"] == "invalid_api_key"
    assert chat(server, unique("plain"), "hello", key=ALICE_KEY).status_code == 200
    text = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {ALICE_KEY}"}, timeout=10).text
    assert "study_query_llm_requests_total" in text
    for secret in (ALICE_KEY, OPENAI_KEY):
        assert secret not in text


def test_two_processes_sharing_a_multiprocess_directory_are_summed(proxy_factory, fake_upstream_server, upstream, tmp_path):
    directory = tmp_path / "metrics"
    directory.mkdir()
    env = provider_env(fake_upstream_server, openai=OPENAI_KEY, PROMETHEUS_MULTIPROC_DIR=str(directory))
    a, b = proxy_factory(env=env), proxy_factory(env=env)
    model = unique("plain")
    for server, n in ((a, 3), (b, 2)):
        for i in range(n):
            assert chat(server, model, f"question {i}").status_code == 200
    a.log.wait_count(3)
    b.log.wait_count(2)
    deadline = time.monotonic() + 5
    while value(samples := scrape(b), "recorder_rows_total", outcome="written") < 5 and time.monotonic() < deadline:
        time.sleep(0.1)  # each process writes its recorder's counts every second
    for scraped in (samples, scrape(a)):
        assert value(scraped, "requests_total", model=model, status="200") == 5
        assert value(scraped, "request_duration_seconds_count", model=model) == 5
    assert value(samples, "recorder_rows_total", outcome="written") == 5
    a.stop_ok()
    after = scrape(b)
    assert value(after, "requests_total", model=model, status="200") == 5  # a's counts outlive it
