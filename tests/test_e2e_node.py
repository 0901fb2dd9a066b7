"""The proxy through OpenAI's JavaScript SDK (openai-node), the other SDK most clients use.

Each test runs one script of tests/node/ (`node NAME.mjs '<JSON request>'`, which prints one
JSON object) against a real proxy whose `openai` provider is the fake upstream; `mock/…`
models are answered by the built-in mock. openai-node, pinned in tests/node/package-lock.json,
is installed once per session with `npm ci`; without node and npm, or when npm cannot reach
its registry, these tests skip and say why. A new client call is one more script and one
more test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import pytest

from conftest import REPO_ROOT, fake_key, loads, minimal_env, provider_env
from fake_answers import chat_answer
from fake_endpoints import embedding_vector

pytestmark = pytest.mark.timeout(120)

NODE_DIR = REPO_ROOT / "tests" / "node"
OPENAI_KEY = fake_key("sk-test-openai")
NPM_CI_TIMEOUT = 300
#: Fewer and shorter retries than npm's default (which take 70 s to give up when offline).
NPM_RETRIES = ("--fetch-retries=2", "--fetch-retry-mintimeout=1000", "--fetch-retry-maxtimeout=5000")
SCRIPT_TIMEOUT = 60
#: The oldest Node whose built-in fetch and streams openai-node relies on.
NODE_MAJOR_MIN = 18


@pytest.fixture(scope="session")
def node() -> str:
    """The `node` executable, with openai-node installed under tests/node/node_modules."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed for the openai-node tests (apt-get install nodejs npm)")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < NODE_MAJOR_MIN:
        pytest.skip(f"openai-node needs Node {NODE_MAJOR_MIN} or newer, this is {version}")
    try:
        installed = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error", *NPM_RETRIES],
            cwd=NODE_DIR, capture_output=True, text=True, timeout=NPM_CI_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        pytest.skip(f"npm ci did not finish within {NPM_CI_TIMEOUT}s (is the npm registry reachable?)")
    if installed.returncode != 0:
        lines = installed.stderr.strip().splitlines() or ["no output"]
        why = next((line for line in lines if "Error" in line), lines[0])
        pytest.skip(f"npm ci failed (offline?), openai-node is not installed: {why}")
    return node


@pytest.fixture(scope="module")
def proxy(module_proxy_factory, fake_upstream_server):
    return module_proxy_factory(env=provider_env(fake_upstream_server, openai=OPENAI_KEY))


def run(node: str, proxy, script: str, request: dict[str, Any]) -> dict[str, Any]:
    """What `tests/node/<script>.mjs` printed for `request`; its stderr on failure."""
    env = minimal_env({"PROXY_V1": proxy.v1})
    done = subprocess.run([node, f"{script}.mjs", json.dumps(request)], cwd=NODE_DIR, env=env,
                          capture_output=True, text=True, timeout=SCRIPT_TIMEOUT)
    assert done.returncode == 0, f"node {script}.mjs exited {done.returncode}:\n{done.stderr}"
    return json.loads(done.stdout)


def test_chat(node, proxy, upstream):
    messages = [{"role": "user", "content": "Hello from Node"}]
    result = run(node, proxy, "chat", {"model": "gpt-4o-mini", "messages": messages})
    assert result["text"] == chat_answer("Hello from Node")
    assert result["usage"]["total_tokens"] == 18
    row = proxy.log.wait_row(result["requestId"])
    assert loads(row["request_headers"])["x-stainless-lang"] == "js"  # it was openai-node that called
    assert (row["endpoint"], row["status_code"], row["stream"]) == ("chat/completions", 200, 0)
    assert row["prompt"] == "user: Hello from Node"
    assert row["response"] == result["text"]


def test_chat_stream(node, proxy, upstream):
    messages = [{"role": "user", "content": "Stream to Node"}]
    result = run(node, proxy, "chat", {"model": "gpt-4o-mini", "messages": messages, "stream": True})
    assert result["text"] == chat_answer("Stream to Node")
    assert result["chunks"] > 3
    row = proxy.log.wait_row(result["requestId"])
    assert (row["status_code"], row["stream"], row["error"]) == (200, 1, None)
    assert row["response"] == result["text"]
    assert row["total_tokens"] == 18  # usage asked of upstream by the proxy, for the log


def test_embeddings_in_openai_nodes_default_base64(node, proxy, upstream):
    result = run(node, proxy, "embeddings", {"model": "text-embedding-3-small", "input": ["a", "b"], "dimensions": 16})
    assert upstream.only().json["encoding_format"] == "base64"  # what openai-node asks for by default
    assert result["vectors"] == [embedding_vector(0, 16), embedding_vector(1, 16)]  # decoded by the SDK
    row = proxy.log.wait_row(result["requestId"])
    assert row["response"] == "[2 embedding(s) of 16 dimensions]"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_responses(node, proxy, stream):
    result = run(node, proxy, "responses", {"model": "mock/echo", "input": "Hello Responses", "stream": stream})
    assert result["text"] == "Mock answer to: Hello Responses"
    if stream:
        assert result["types"][-1] == "response.completed"
    row = proxy.log.wait_row(result["requestId"])
    assert (row["endpoint"], row["status_code"], row["stream"]) == ("responses", 200, int(stream))
    assert row["response"] == result["text"]


def test_responses_compact_and_input_tokens(node, proxy):
    items = [{"role": "user", "content": "Keep me"}, {"role": "assistant", "content": "Fold me away"}]
    result = run(node, proxy, "compact", {"model": "mock/echo", "input": items})
    assert result["types"] == ["message", "compaction"]
    assert result["inputTokens"] == 2  # the kept user message; the compaction item is read as said
    rows = [proxy.log.wait_row(result[key]) for key in ("compactId", "countId")]
    assert [(r["endpoint"], r["status_code"]) for r in rows] == [("responses/compact", 200), ("responses/input_tokens", 200)]
    assert rows[0]["prompt"] == "user: Keep me\n\nassistant: Fold me away"
