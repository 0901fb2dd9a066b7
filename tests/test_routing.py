import pytest

from proxy.config import load_settings
from proxy.errors import ProxyError
from proxy.routing import Route, Router


def settings(env=None, **overrides):
    return load_settings(env=env or {}, **overrides)


def test_without_keys_everything_goes_to_mock():
    router = Router(settings())
    assert router.resolve("gpt-4o-mini") == [Route("mock", "gpt-4o-mini")]
    assert router.resolve("mock/anything/at/all") == [Route("mock", "anything/at/all")]


def test_prefix_picks_the_provider_and_the_rest_is_the_upstream_model():
    router = Router(settings({"OPENAI_API_KEY": "k1", "HYPERBOLIC_API_KEY": "k2"}))
    assert router.resolve("openai/gpt-4o-mini") == [Route("openai", "gpt-4o-mini")]
    assert router.resolve("hyperbolic/meta-llama/Llama-3.3-70B-Instruct") == [
        Route("hyperbolic", "meta-llama/Llama-3.3-70B-Instruct")
    ]


def test_bare_model_goes_to_the_first_provider_with_a_key():
    router = Router(settings({"HYPERBOLIC_API_KEY": "k2"}))
    assert router.resolve("meta-llama/Llama-3") == [Route("hyperbolic", "meta-llama/Llama-3")]
    router = Router(settings({"OPENAI_API_KEY": "k1", "HYPERBOLIC_API_KEY": "k2"}))
    assert router.resolve("gpt-4o") == [Route("openai", "gpt-4o")]


def test_bare_model_on_azure_uses_the_configured_deployment():
    env = {"AZURE_OPENAI_API_KEY": "k", "AZURE_OPENAI_ENDPOINT": "https://x.example", "AZURE_OPENAI_DEPLOYMENT": "dep1"}
    router = Router(settings(env))
    assert router.resolve("gpt-4o") == [Route("azure", "dep1")]
    assert router.resolve("azure/other") == [Route("azure", "other")]


def test_a_provider_without_a_key_cannot_be_asked_for():
    router = Router(settings())
    with pytest.raises(ProxyError) as info:
        router.resolve("openai/gpt-4o")
    assert info.value.status_code == 404
    assert info.value.code == "model_not_found"
    assert "openai" in info.value.message


def test_prefix_with_nothing_after_it_is_refused():
    with pytest.raises(ProxyError) as info:
        Router(settings()).resolve("mock/")
    assert info.value.code == "model_not_found"


def test_aliases_expand_to_their_routes_in_order(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[aliases]\nsmart = ["openai/gpt-4o", "mock/backup"]\nfast = "mock/quick"\n')
    router = Router(load_settings(env={"OPENAI_API_KEY": "k"}, config_file=config))
    assert router.resolve("smart") == [Route("openai", "gpt-4o"), Route("mock", "backup")]
    assert router.resolve("fast") == [Route("mock", "quick")]
    assert ("smart", "alias") in router.listed_models()


def test_alias_routes_without_a_key_are_skipped_not_fatal(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[aliases]\nsmart = ["openai/gpt-4o", "mock/backup"]\nnone = ["openai/x"]\n')
    router = Router(load_settings(env={}, config_file=config))
    assert router.resolve("smart") == [Route("mock", "backup")]
    with pytest.raises(ProxyError, match="no API key"):
        router.resolve("none")


def test_unknown_prefix_is_part_of_a_bare_model_name():
    router = Router(settings({"OPENAI_API_KEY": "k"}))
    assert router.resolve("ft:gpt-4o:org/custom") == [Route("openai", "ft:gpt-4o:org/custom")]


def test_listed_models_show_only_available_providers():
    router = Router(settings({"OPENAI_API_KEY": "k", "OPENAI_MODEL": "gpt-4o-mini"}))
    listed = dict(router.listed_models())
    assert listed == {"openai/gpt-4o-mini": "openai", "mock/echo": "mock"}
