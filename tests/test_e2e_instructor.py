"""instructor against the mock, in a venv of its own: instructor pins an older openai than the
project's dev environment, so it cannot share the test venv.

The venv is made once and kept at tests/.venv-instructor (gitignored); the test skips, saying
why, when it cannot be made or instructor cannot be installed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import fake_key, minimal_env

pytestmark = pytest.mark.timeout(600)

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-instructor"
PYTHON = VENV / "bin" / "python"
READY = VENV / ".installed"  # written once pip succeeded, so a half-made venv is made again


def _instructor_python() -> Path:
    if READY.exists():
        return PYTHON
    made = subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot make a venv for instructor: {made.stderr.strip()[-500:]}")
    pip = subprocess.run(
        [str(PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "instructor"],
        capture_output=True, text=True, timeout=540,
    )
    if pip.returncode != 0:
        tail = "\n".join((pip.stdout + pip.stderr).strip().splitlines()[-10:])
        pytest.skip(f"cannot install instructor (pip exited {pip.returncode}):\n{tail}")
    READY.write_text("instructor\n")
    return PYTHON


def test_instructor_modes_get_valid_models_from_the_mock(module_proxy_factory):
    python = _instructor_python()
    proxy = module_proxy_factory()
    run = subprocess.run(
        [str(python), str(HERE / "instructor_check.py"), proxy.v1, fake_key("sk-test-client")],
        capture_output=True, text=True, timeout=120, env=minimal_env({"PYTHONPATH": ""}),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(run.stdout.strip().splitlines()[-1])
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
