"""A venv of its own for clients that cannot share the test venv: instructor pins an older
openai than the project's dev environment, and LiteLLM's SDK is too heavy for the dev extra.

Both go into one venv, made once and kept at tests/.venv-clients (gitignored), so that pip
resolves them together and CI installs them once. A test that needs it skips, saying why,
when the venv cannot be made or the packages cannot be installed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from conftest import minimal_env

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-clients"
PYTHON = VENV / "bin" / "python"
PACKAGES = ("instructor", "litellm")
READY = VENV / ".installed"  # written once pip succeeded, so a half-made venv is made again
_MAKING = threading.Lock()  # tests/prewarm.py makes it in a thread while the suite runs


def client_python() -> Path:
    """The venv's interpreter, made on first use (a few minutes at most)."""
    with _MAKING:
        return _made()


def _made() -> Path:
    if READY.exists() and READY.read_text().split() == list(PACKAGES):
        return PYTHON
    made = subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot make a venv for {', '.join(PACKAGES)}: {made.stderr.strip()[-500:]}")
    pip = subprocess.run(
        [str(PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *PACKAGES],
        capture_output=True, text=True, timeout=540,
    )
    if pip.returncode != 0:
        tail = "\n".join((pip.stdout + pip.stderr).strip().splitlines()[-10:])
        pytest.skip(f"cannot install {', '.join(PACKAGES)} (pip exited {pip.returncode}):\n{tail}")
    READY.write_text("\n".join(PACKAGES) + "\n")
    return PYTHON


def run_check(script: str, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run tests/<script> in the venv; its last line of output is a JSON object of results."""
    run = subprocess.run(
        [str(client_python()), str(HERE / script), *args],
        capture_output=True, text=True, timeout=180, env=minimal_env({"PYTHONPATH": "", **(env or {})}),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])
