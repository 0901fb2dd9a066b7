"""`GET /v1/models` and `GET /v1/models/{id}` end to end, through the real openai SDK.

The proxy lists each configured provider's own list (fetched from the fake upstream with the
provider's key, prefixed, kept for minutes), leaves out a provider whose list fails
(Hyperbolic's, under the fake's FAILING_MODELS_PREFIX) or never comes (`hang`, under
HANGING_MODELS_PREFIX) with a warning, and adds the configured defaults and aliases. Azure's
inbound paths answer the same list; proxy keys apply.
"""

from __future__ import annotations

import time

import httpx
import openai
import pytest
from openai import AzureOpenAI, OpenAI

from conftest import assert_error_shape, fake_key
from fake_endpoints import HANGING_MODELS_PREFIX, MODELS
from provider_setup import ALICE_KEY, AZURE_KEY, HYPERBOLIC_KEY, LOCAL_KEY, OPENAI_KEY
from provider_setup import clients, every_provider_env, local_provider, sdk_client, secrets_written

from proxy.models import FETCH_TIMEOUT

pytestmark = pytest.mark.timeout(60)

HANG_KEY = fake_key("hang-test")
SECRETS = (OPENAI_KEY, AZURE_KEY, HYPERBOLIC_KEY, LOCAL_KEY, HANG_KEY, ALICE_KEY)

CONFIG = """
[providers.hang]
base_url = "{base}{hang}"
api_key_env = "HANG_KEY"

[providers.hang2]
base_url = "{base}{hang}"
api_key_env = "HANG_KEY"

[aliases]
fast = "openai/gpt-4o-mini"
smart = ["local/fake-model", "openai/gpt-4o"]
"""


@pytest.fixture(scope="module")
def proxy(module_proxy_factory, fake_upstream_server):
    env = every_provider_env(fake_upstream_server, HANG_KEY=HANG_KEY, ALICE_PROXY_KEY=ALICE_KEY)
    config = CONFIG.format(base=fake_upstream_server.base_url, hang=HANGING_MODELS_PREFIX)
    return module_proxy_factory(env=env, config=config + local_provider(fake_upstream_server) + clients("alice"))


@pytest.fixture
def client(proxy) -> OpenAI:
    return sdk_client(proxy, ALICE_KEY)


def list_paths(upstream) -> list[str]:
    """The model lists the fake was asked for, by path."""
    return sorted(r.path for r in upstream.requests if r.method == "GET" and r.path.endswith("/models"))


def test_list_has_each_upstream_list_prefixed_then_defaults_and_aliases(proxy, client, upstream):
    started = time.monotonic()
    models = list(client.models.list())
    took = time.monotonic() - started
    ids = [m.id for m in models]

    for provider in ("openai", "local"):
        assert {f"{provider}/{m}" for m in MODELS} <= set(ids), provider
    assert "azure/gpt-4o-dep" in ids  # Azure's configured deployment, not its catalogue
    assert "mock/echo" in ids
    assert {"fast", "smart"} <= set(ids)
    assert len(ids) == len(set(ids))  # openai/gpt-4o-mini is both listed upstream and OPENAI_MODEL
    assert not any(i.startswith(("hyperbolic/", "hang/", "hang2/")) for i in ids)
    by_id = {m.id: m for m in models}
    assert by_id["fast"].owned_by == "alias" and by_id["smart"].owned_by == "alias"
    assert by_id["openai/fake-model"].owned_by == "fake" and by_id["openai/fake-model"].object == "model"
    # The two hanging providers cost the fetch timeout once: the lists are fetched at once.
    assert took < FETCH_TIMEOUT + 1.5, took

    assert list_paths(upstream) == sorted(["/v1/models", "/local/v1/models", "/hyperbolic/v1/models",
                                           f"{HANGING_MODELS_PREFIX}/models", f"{HANGING_MODELS_PREFIX}/models"])
    keys = {"/v1/models": OPENAI_KEY, "/local/v1/models": LOCAL_KEY, "/hyperbolic/v1/models": HYPERBOLIC_KEY,
            f"{HANGING_MODELS_PREFIX}/models": HANG_KEY}
    for recorded in upstream.requests:
        assert recorded.headers["authorization"] == f"Bearer {keys[recorded.path]}"
        assert ALICE_KEY not in str(recorded.headers)
    assert not any(r.path.startswith("/openai/") for r in upstream.requests)

    output = proxy.output()
    assert "provider `hyperbolic` is left out: it answered HTTP 500" in output, output
    for name in ("hang", "hang2"):
        assert f"provider `{name}` is left out: it did not answer within {FETCH_TIMEOUT:g}s" in output, output


def test_second_list_is_served_from_the_cache(proxy, client, upstream):
    first = [m.id for m in client.models.list()]
    upstream.clear()
    second = [m.id for m in client.models.list()]
    assert second == first
    assert "/v1/models" not in list_paths(upstream)
    assert "/local/v1/models" not in list_paths(upstream)


def test_retrieve_by_id_with_slashes(proxy, client, upstream):
    model = client.models.retrieve("openai/gpt-4o-mini")
    assert (model.id, model.object) == ("openai/gpt-4o-mini", "model")
    assert client.models.retrieve("local/whisper-1").id == "local/whisper-1"
    assert client.models.retrieve("fast").owned_by == "alias"
    response = httpx.get(proxy.v1 + "/models/openai/fake-model", headers={"Authorization": f"Bearer {ALICE_KEY}"},
                         timeout=10)
    assert response.status_code == 200
    listed = httpx.get(proxy.v1 + "/models", headers={"Authorization": f"Bearer {ALICE_KEY}"}, timeout=10).json()
    assert [response.json()] == [m for m in listed["data"] if m["id"] == "openai/fake-model"]


@pytest.mark.parametrize("model_id", ["openai/no-such-model", "hyperbolic/meta-llama/Llama-3.3-70B-Instruct",
                                      "no-such-alias", "azure/other-deployment"])
def test_unknown_id_is_an_openai_shaped_404(proxy, client, model_id):
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve(model_id)
    assert caught.value.code == "model_not_found"
    error = assert_error_shape(caught.value.response.json())
    assert (error["type"], error["param"]) == ("invalid_request_error", "model")
    assert model_id in error["message"]


def test_azure_inbound_paths_list_the_same(proxy, client):
    listed = [m.id for m in client.models.list()]
    azure = AzureOpenAI(azure_endpoint=proxy.url, api_key=ALICE_KEY, api_version="2024-10-21", max_retries=0, timeout=10)
    assert [m.id for m in azure.models.list()] == listed
    assert azure.models.retrieve("openai/gpt-4o-mini").id == "openai/gpt-4o-mini"
    response = httpx.get(proxy.url + "/openai/v1/models", headers={"api-key": ALICE_KEY}, timeout=10)
    assert response.status_code == 200
    assert [m["id"] for m in response.json()["data"]] == listed


@pytest.mark.parametrize("path", ["/v1/models", "/v1/models/openai/gpt-4o-mini", "/openai/models?api-version=2024-10-21",
                                  "/openai/v1/models"])
@pytest.mark.parametrize("key", [None, fake_key("sk-proxy-wrong")])
def test_proxy_keys_apply(proxy, upstream, path, key):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = httpx.get(proxy.url + path, headers=headers, timeout=10)
    assert response.status_code == 401
    assert assert_error_shape(response.json())["code"] == "invalid_api_key"
    assert upstream.requests == []


def test_the_mock_alone_lists_echo(proxy_factory, upstream):
    mock_only = proxy_factory()
    client = sdk_client(mock_only, "unused")
    assert [m.id for m in client.models.list()] == ["mock/echo"]
    assert client.models.retrieve("mock/echo").owned_by == "mock"
    assert upstream.requests == []


def test_no_key_in_the_server_output_or_the_log(proxy, client):
    client.models.list()
    assert secrets_written(proxy, SECRETS) == []
