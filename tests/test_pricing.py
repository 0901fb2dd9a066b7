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
