import orjson
import pytest
from genai_prices import Usage, calc_price

from proxy.config import ConfigError, load_settings
from proxy.pricing import Price, Pricer
from proxy.record import CallRecord


def library(model, provider, **tokens):
    return float(calc_price(Usage(**tokens), model_ref=model, provider_id=provider).total_price)


def test_known_models_cost_what_genai_prices_says():
    pricer = Pricer()
    usage = {"prompt_tokens": 1000, "completion_tokens": 500}
    assert pricer.cost("openai", ["gpt-4o-mini"], usage) == (library("gpt-4o-mini", "openai", input_tokens=1000, output_tokens=500), None)
    assert pricer.cost("openai", ["gpt-4o-mini"], usage)[0] == pytest.approx(0.00045)
    assert pricer.cost("azure", ["gpt-4o-mini"], usage)[0] == pytest.approx(0.00045)


def test_the_answered_model_name_is_tried_before_the_deployment_name():
    cost, why = Pricer().cost("azure", ["gpt-4o-mini-2024-07-18", "my-deployment"], {"prompt_tokens": 10, "completion_tokens": 1})
    assert why is None and cost == library("gpt-4o-mini", "azure", input_tokens=10, output_tokens=1)


def test_hyperbolic_is_priced_as_its_hugging_face_listing():
    model = "meta-llama/Llama-3.3-70B-Instruct"
    cost, why = Pricer().cost("hyperbolic", [model], {"prompt_tokens": 1000, "completion_tokens": 500})
    assert why is None
    assert cost == library(model, "huggingface_hyperbolic", input_tokens=1000, output_tokens=500)


def test_cached_prompt_tokens_are_cheaper():
    usage = {"prompt_tokens": 1000, "completion_tokens": 500, "prompt_tokens_details": {"cached_tokens": 800}}
    cost, _ = Pricer().cost("openai", ["gpt-4o-mini"], usage)
    assert cost == library("gpt-4o-mini", "openai", input_tokens=1000, cache_read_tokens=800, output_tokens=500)
    assert cost < 0.00045


@pytest.mark.parametrize(("provider", "model"), [
    ("openai", "gpt-4o-mini"), ("openai", "gpt-4.1"), ("azure", "gpt-4o"),
    ("google", "gemini-2.5-pro"),  # tiered: a dearer rate past 200k input tokens
])
def test_any_token_counts_cost_exactly_what_genai_prices_says(provider, model):
    pricer = Pricer(provider_ids={"google": "google"})
    for prompt, cached, completion in [(0, 0, 1), (1, 0, 0), (1234, 0, 567), (150_000, 100_000, 9_999),
                                       (250_000, 0, 1_000), (250_001, 250_001, 3), (1_999_999, 7, 123_457)]:
        usage = {"prompt_tokens": prompt, "completion_tokens": completion,
                 "prompt_tokens_details": {"cached_tokens": cached}}
        expected = library(model, provider, input_tokens=prompt, cache_read_tokens=cached, output_tokens=completion)
        assert pricer.cost(provider, [model], usage) == (expected, None), (prompt, cached, completion)


def test_new_token_counts_do_not_ask_genai_prices_again_for_a_price_without_tiers(monkeypatch):
    """Its arithmetic costs ~200 µs a call: the rates are read once a day per model instead."""
    from proxy import pricing

    calls = []
    real = pricing.calc_price
    monkeypatch.setattr(pricing, "calc_price", lambda *a, **k: calls.append(1) or real(*a, **k))
    pricing._rates.cache_clear()
    pricer = Pricer()
    costs = {pricer.cost("openai", ["gpt-4o-mini"], {"prompt_tokens": n, "completion_tokens": n // 2})[0] for n in range(1, 501)}
    assert len(costs) == 500
    assert len(calls) <= 6  # the rates and their checks, once


def test_warm_loads_genai_prices_data_before_the_first_call(monkeypatch):
    from proxy import pricing

    pricing._rates.cache_clear()
    Pricer().warm()
    calls = []
    real = pricing.calc_price
    monkeypatch.setattr(pricing, "calc_price", lambda *a, **k: calls.append(1) or real(*a, **k))
    Pricer().cost("openai", ["gpt-4o-mini"], {"prompt_tokens": 12, "completion_tokens": 34})
    assert calls == []


def test_unknown_model_is_null_with_a_reason_and_overrides_price_it():
    cost, why = Pricer().cost("local", ["my-finetune"], {"prompt_tokens": 10, "completion_tokens": 10})
    assert cost is None and "local/my-finetune" in why and "[prices]" in why
    pricer = Pricer({"local/my-finetune": Price(input=1.0, output=2.0, cached_input=0.5)})
    usage = {"prompt_tokens": 1_000_000, "completion_tokens": 1_000_000, "prompt_tokens_details": {"cached_tokens": 500_000}}
    assert pricer.cost("local", ["my-finetune"], usage) == (0.5 + 0.25 + 2.0, None)


def test_mock_is_free_and_missing_usage_has_no_cost():
    assert Pricer().cost("mock", ["echo"], {"prompt_tokens": 3}) == (0.0, None)
    assert Pricer().cost("openai", ["gpt-4o-mini"], {})[0] is None


def test_config_prices_section(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[prices."local/llama"]\ninput = 0.1\noutput = 0.2\n')
    assert load_settings(env={}, config_file=config).prices == {"local/llama": Price(0.1, 0.2)}
    config.write_text('[prices."local/llama"]\ninput = "cheap"\n')
    with pytest.raises(ConfigError, match="input"):
        load_settings(env={}, config_file=config)


def test_rows_carry_the_cost_and_saved_cost_of_cache_hits():
    record = CallRecord("chat/completions", provider="openai", upstream_model="gpt-4o-mini", pricer=Pricer())
    record.payload = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}
    record.response_body = orjson.dumps({"model": "gpt-4o-mini", "choices": [], "usage": {"prompt_tokens": 1000, "completion_tokens": 500}})
    record.finish(200)
    run, _ = record.rows()
    assert run["cost_usd"] == pytest.approx(0.00045) and run["metadata"] is None
    record.cache = "hit"
    run, _ = record.rows()
    assert run["cost_usd"] == pytest.approx(0.00045)
    assert "saved" in orjson.loads(run["metadata"])["study_notes"][0]


def test_a_configured_provider_is_not_priced_by_guesswork():
    cost, why = Pricer().cost("local", ["gpt-4o-mini"], {"prompt_tokens": 1000, "completion_tokens": 500})
    assert cost is None and "local/gpt-4o-mini" in why
    cost, _ = Pricer(provider_ids={"local": "openai"}).cost("local", ["gpt-4o-mini"], {"prompt_tokens": 1000, "completion_tokens": 500})
    assert cost == pytest.approx(0.00045)
