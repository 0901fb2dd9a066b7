"""LiteLLM's SDK against the proxy's mock, in the venv of tests/client_venv.py (LiteLLM is too
heavy for the dev extra): `litellm.completion`, and `litellm.responses` whole, streamed, with a
tool, and continued by `previous_response_id` through LiteLLM's own wrapped ids."""

from __future__ import annotations

import json

import pytest

from client_venv import run_check
from conftest import fake_key

pytestmark = [pytest.mark.client_venv, pytest.mark.timeout(600)]


def test_litellm_chat_and_responses_through_the_proxy(module_proxy_factory):
    proxy = module_proxy_factory()
    # no network here: LiteLLM must not try to fetch its price list
    results = run_check("litellm_check.py", proxy.v1, fake_key("sk-test-client"),
                        env={"LITELLM_LOCAL_MODEL_COST_MAP": "True"})
    assert results["chat"] == "Mock answer to: Say hi"
    assert results["responses"]["text"] == "Mock answer to: Hello there"
    assert results["responses"]["input_tokens"] == 4  # "Be brief." and "Hello there"
    assert results["follow_up"] == "Mock answer to: And then?"
    assert results["stream"] == {"text": "Mock answer to: Stream this please",
                                 "first": "response.created", "last": "response.completed"}
    assert results["tool"] == {"name": "get_weather", "arguments": {"city": "Weather in Rome?"}}

    rows = proxy.log.wait_count(5)
    assert [row["endpoint"] for row in rows] == ["chat/completions"] + ["responses"] * 4
    assert all(row["status_code"] == 200 and row["model"] == "mock/echo" for row in rows)
    first, streamed, follow_up = rows[1], rows[2], rows[3]
    # LiteLLM wraps the response id for its own routing and unwraps it before it asks again:
    # the proxy sees its own id, and rebuilds the turn from its log
    first_id = json.loads(first["metadata"])["response_id"]
    assert json.loads(follow_up["request_json"])["previous_response_id"] == first_id
    # the mock was asked the whole conversation: "Hello there", its answer, "And then?"
    assert follow_up["prompt_tokens"] == 2 + 5 + 2
    assert streamed["stream"] == 1 and streamed["response"] == "Mock answer to: Stream this please"
    assert rows[4]["response"].startswith("[tool call] get_weather(")
