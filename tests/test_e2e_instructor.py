"""instructor against the mock, in the venv of tests/client_venv.py: instructor pins an older
openai than the project's dev environment, so it cannot share the test venv."""

from __future__ import annotations

import json

import pytest

from client_venv import run_check
from conftest import fake_key

pytestmark = [pytest.mark.client_venv, pytest.mark.timeout(600)]


def test_instructor_modes_get_valid_models_from_the_mock(module_proxy_factory):
    proxy = module_proxy_factory()
    results = run_check("instructor_check.py", proxy.v1, fake_key("sk-test-client"))
    assert set(results) == {"TOOLS", "JSON", "JSON_SCHEMA"}
    # A tool's arguments carry the user's words; a JSON answer carries the mock's text.
    assert results["TOOLS"]["summary"] == "Review two classics"
    assert results["JSON"]["summary"] == results["JSON_SCHEMA"]["summary"] == "Mock answer to: Review two classics"
    for mode, review in results.items():
        assert review["works"] == [{"title": "", "kind": "book", "year": 1800}], mode
        assert review["rating"] is None, mode
    rows = proxy.log.wait_count(3)
    requests = [json.loads(row["request_json"]) for row in rows]
    assert requests[0]["tool_choice"]["function"]["name"] == "Review"  # TOOLS: a forced tool call
    assert requests[1]["response_format"] == {"type": "json_object"}  # JSON: the schema is in the prompt
    assert requests[2]["response_format"]["type"] == "json_schema"
