"""End to end through the real openai SDK: `X-Study-Preprocess` on chat (whole and streamed) and
the Responses API, the per-alias `preprocess` of the config with its templates, what goes
upstream, what the log keeps (never a removed value), the 400 of a bad header, and the cache
keyed on the preprocessed body. Plus the config keys themselves.
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from openai import OpenAI

from conftest import assert_error_shape, fake_key, loads, provider_env
from fake_answers import chat_answer
from proxy.config import ConfigError, load_settings
from proxy.preprocess.steps import Steps

pytestmark = pytest.mark.timeout(60)

OPENAI_KEY = fake_key("sk-test-openai")
SECRET_MAIL = "jane.doe@example.com"
SECRET_PHONE = "+44 20 7946 0958"
CONFIG = """
[templates.brief]
text = "Answer in one sentence: {user_input}"

[aliases.safe]
routes = ["openai/fake-model"]
preprocess = ["pii", "template=brief"]

[aliases.short]
routes = ["mock/echo"]
preprocess = ["truncate=10"]
"""


@pytest.fixture(scope="module")
def proxy(module_proxy_factory, fake_upstream_server):
    return module_proxy_factory(env=provider_env(fake_upstream_server, openai=OPENAI_KEY), config=CONFIG)


@pytest.fixture
def client(proxy) -> OpenAI:
    return OpenAI(base_url=proxy.v1, api_key="sk-client", max_retries=0, timeout=10)


def assert_no_secret(*texts: str | None) -> None:
    for text in texts:
        assert text is not None
        assert SECRET_MAIL not in text and "7946" not in text, text


def test_chat_with_the_header(proxy, client, upstream):
    raw = client.chat.completions.with_raw_response.create(
        model="openai/fake-model",
        messages=[
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": f"  Mail   {SECRET_MAIL}\n\n\n\nor call {SECRET_PHONE}  "},
        ],
        extra_headers={"X-Study-Preprocess": "whitespace, pii"},
    )
    sent = "Mail [EMAIL]\n\nor call [PHONE]"
    assert raw.parse().choices[0].message.content == chat_answer(sent)
    recorded = upstream.only()
    assert recorded.json["messages"] == [
        {"role": "system", "content": "You are helpful."}, {"role": "user", "content": sent},
    ]
    assert_no_secret(recorded.raw_body.decode())
    row = proxy.log.wait_row(raw.headers["x-study-request-id"])
    assert_no_secret(row["prompt"], row["request_json"])
    assert row["prompt"] == f"system: You are helpful.\n\nuser: {sent}"
    assert loads(row["request_json"])["messages"][1]["content"] == sent
    assert loads(row["metadata"])["preprocess"] == {"whitespace": 1, "pii": {"EMAIL": 1, "PHONE": 1}}
    assert loads(row["request_headers"])["x-study-preprocess"] == "whitespace, pii"


def test_streamed_chat_with_the_header(proxy, client, upstream):
    stream = client.chat.completions.with_raw_response.create(
        model="openai/fake-model", stream=True,
        messages=[{"role": "user", "content": f"reach me at {SECRET_MAIL}"}],
        extra_headers={"X-Study-Preprocess": "pii,truncate=15"},
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream.parse() if chunk.choices)
    assert text == chat_answer("reach me at [EM")
    assert upstream.only().json["messages"][0]["content"] == "reach me at [EM"
    row = proxy.log.wait_row(stream.headers["x-study-request-id"])
    assert_no_secret(row["prompt"], row["request_json"])
    assert loads(row["metadata"])["preprocess"] == {"pii": {"EMAIL": 1}, "truncate": 1}


def test_responses_with_the_header(proxy, client, upstream):
    raw = client.responses.with_raw_response.create(
        model="openai/fake-model", input=f"My card is 4111 1111 1111 1111 and my mail {SECRET_MAIL}",
        extra_headers={"X-Study-Preprocess": "pii"},
    )
    raw.parse()
    assert upstream.only().json["input"] == "My card is [CARD] and my mail [EMAIL]"
    row = proxy.log.wait_row(raw.headers["x-study-request-id"])
    assert_no_secret(row["prompt"], row["request_json"])
    assert "4111" not in row["request_json"]
    assert loads(row["metadata"])["preprocess"] == {"pii": {"CARD": 1, "EMAIL": 1}}


def test_responses_input_items_on_the_mock(proxy, client):
    raw = client.responses.with_raw_response.create(
        model="mock/echo",
        input=[{"role": "user", "content": [{"type": "input_text", "text": f"call {SECRET_PHONE}"}]}],
        extra_headers={"X-Study-Preprocess": "pii"},
    )
    assert raw.parse().output_text == "Mock answer to: call [PHONE]"
    row = proxy.log.wait_row(raw.headers["x-study-request-id"])
    assert_no_secret(row["prompt"], row["request_json"], row["response"])


def test_the_alias_preprocesses_every_call(proxy, client, upstream):
    raw = client.chat.completions.with_raw_response.create(
        model="safe", messages=[{"role": "user", "content": f"who owns {SECRET_MAIL}?"}],
    )
    expected = "Answer in one sentence: who owns [EMAIL]?"
    assert raw.parse().choices[0].message.content == chat_answer(expected)
    assert upstream.only().json["messages"][0]["content"] == expected
    row = proxy.log.wait_row(raw.headers["x-study-request-id"])
    assert row["model"] == "safe"
    assert_no_secret(row["prompt"], row["request_json"])
    assert loads(row["metadata"])["preprocess"] == {"pii": {"EMAIL": 1}, "template": 1}


def test_the_header_adds_to_the_alias(proxy, client):
    answer = client.chat.completions.create(
        model="short", messages=[{"role": "user", "content": "  spaced    out text here  "}],
        extra_headers={"X-Study-Preprocess": "whitespace"},
    )
    assert answer.choices[0].message.content == "Mock answer to: spaced out"


@pytest.mark.parametrize(
    ("header", "words"),
    [("pii,shout", "unknown step 'shout'"), ("truncate=0", "truncate needs a whole number"),
     ("template=none-such", "no template named 'none-such' (templates: brief)")],
)
def test_a_bad_header_is_a_400_with_a_row(proxy, client, upstream, header, words):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="openai/fake-model", messages=[{"role": "user", "content": f"mail {SECRET_MAIL}"}],
            extra_headers={"X-Study-Preprocess": header},
        )
    error = assert_error_shape(caught.value.response.json())
    assert error["param"] == "X-Study-Preprocess" and error["code"] == "invalid_header"
    assert words in error["message"]
    assert upstream.count() == 0
    row = proxy.log.wait_row(caught.value.response.headers["x-study-request-id"])
    assert row["status_code"] == 400 and words in row["error"]
    assert row["request_json"] is None and row["prompt"] is None  # nothing preprocessed: nothing kept


def test_a_bad_body_with_the_header_keeps_no_body(proxy):
    response = httpx.post(
        proxy.v1 + "/chat/completions", content=f'{{"model": "mock/echo", "messages": [{{"content": "{SECRET_MAIL}"'.encode(),
        headers={"content-type": "application/json", "X-Study-Preprocess": "pii"},
    )
    assert response.status_code == 400
    row = proxy.log.wait_row(response.headers["x-study-request-id"])
    assert row["request_json"] is None


def test_the_cache_keys_on_the_preprocessed_body(proxy, client, upstream):
    headers = {"X-Study-Preprocess": "whitespace", "X-Study-Cache": "on"}
    model = "openai/cache-preprocess-x"
    first = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "same  question"}], extra_headers=headers)
    second = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "  same question \n"}], extra_headers=headers)
    assert first.headers["x-study-cache"] == "miss" and second.headers["x-study-cache"] == "hit"
    assert upstream.count(model="cache-preprocess-x") == 1


def test_config_keys(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(CONFIG)
    settings = load_settings(env={}, config_file=path)
    assert settings.templates == {"brief": "Answer in one sentence: {user_input}"}
    assert settings.alias_preprocess == {"safe": Steps(pii=True, template="brief"), "short": Steps(truncate=10)}
    assert settings.aliases["safe"] == ("openai/fake-model",)


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ('[templates.x]\ntext = "no placeholder"\n', "[templates.x] needs a `text` string holding {user_input}"),
        ("[templates]\nx = 3\n", "[templates.x] needs a `text`"),
        ('[aliases.a]\nroutes = ["mock/echo"]\npreprocess = "pii"\n', "alias 'a': preprocess must be a list"),
        ('[aliases.a]\nroutes = ["mock/echo"]\npreprocess = ["template=x"]\n', "alias 'a': preprocess: no template named 'x'"),
        ('[aliases.a]\nroutes = ["mock/echo"]\npreprocess = ["loud"]\n', "alias 'a': preprocess: unknown step 'loud'"),
    ],
)
def test_config_errors(tmp_path, config, words):
    path = tmp_path / "c.toml"
    path.write_text(config)
    with pytest.raises(ConfigError) as caught:
        load_settings(env={}, config_file=path)
    assert words in str(caught.value)


def test_no_header_no_change(proxy, client, upstream):
    body = {"model": "openai/fake-model", "messages": [{"role": "user", "content": f"  {SECRET_MAIL}  "}]}
    response = httpx.post(proxy.v1 + "/chat/completions", content=json.dumps(body), headers={"content-type": "application/json"})
    assert response.status_code == 200
    assert upstream.only().json["messages"][0]["content"] == f"  {SECRET_MAIL}  "
    row = proxy.log.wait_row(response.headers["x-study-request-id"])
    assert row["request_json"] == json.dumps(body)  # the client's own bytes, as before
    assert "preprocess" not in loads(row["metadata"] or "{}")
