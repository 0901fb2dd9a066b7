"""The image and the compose file, built and run as an operator would where no image registry
is reachable: the base made locally (docker/base-image.sh), the dependencies from wheels built on
the host, every published port on 127.0.0.1.

Slow (an image build, several containers): marked `container`, so `pytest -m "not container"`
leaves it out. It skips only where no Docker engine can run; the first run on a machine also
makes the base image (about a minute and a half), later runs reuse it.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import free_port
from docker_cli import KEPT_OUT, REPO_ROOT, compose_command, compose_env, docker, engine_missing, project_images

WHY_NOT = engine_missing()
pytestmark = [
    pytest.mark.container,
    pytest.mark.timeout(1200),  # the first run on a machine makes the base image
    pytest.mark.skipif(WHY_NOT is not None, reason=f"no Docker engine: {WHY_NOT}"),
]

HEALTHY_WITHIN = 60.0
#: What `docker stop` waits for by default before SIGKILL: an idle proxy must be out well before.
DOCKER_STOP_TIMEOUT = 10.0


@pytest.fixture(scope="module")
def images() -> Iterator[tuple[str, str]]:
    """The image and its build stage (made ahead by tests/prewarm.py)."""
    tags = project_images()
    yield tags
    docker("rmi", *tags, check=False)


@pytest.fixture(scope="module")
def image(images: tuple[str, str]) -> str:
    return images[0]


@pytest.fixture
def cleanup() -> Iterator[list[str]]:
    """Containers and volumes (`volume:NAME`) to remove after the test, whatever happened."""
    names: list[str] = []
    yield names
    for name in reversed(names):
        if name.startswith("volume:"):
            docker("volume", "rm", "-f", name.removeprefix("volume:"), check=False)
        else:
            docker("rm", "-f", "-v", name, check=False)


def run_proxy(image: str, volume: str, cleanup: list[str], *env: str) -> tuple[str, str]:
    """A detached container on `volume` with `env` (NAME=value), published on 127.0.0.1 only;
    returns (id, base URL)."""
    port = free_port()
    options = [arg for item in env for arg in ("--env", item)]
    container = docker("run", "--detach", "--health-interval", "1s", "--publish", f"127.0.0.1:{port}:8000",
                       "--volume", f"{volume}:/data", *options, image).stdout.strip()
    cleanup.append(container)
    wait_healthy(container)
    return container, f"http://127.0.0.1:{port}"


def wait_healthy(container: str) -> None:
    deadline = time.monotonic() + HEALTHY_WITHIN
    while True:
        state = docker("inspect", "--format", "{{.State.Status}} {{.State.Health.Status}}", container).stdout.split()
        if state == ["running", "healthy"]:
            return
        if state[0] != "running" or time.monotonic() > deadline:
            logs = docker("logs", container, check=False)
            raise AssertionError(f"container {state} after {HEALTHY_WITHIN}s:\n{logs.stdout}\n{logs.stderr}")
        time.sleep(0.5)


def chat(base: str, text: str) -> str:
    """One call to the built-in mock (no key anywhere); returns its request id."""
    response = httpx.post(f"{base}/v1/chat/completions", timeout=20,
                          json={"model": "mock/echo", "messages": [{"role": "user", "content": text}]})
    assert response.status_code == 200, response.text
    assert text in response.json()["choices"][0]["message"]["content"]
    return response.headers["x-study-request-id"]


def stop(container: str) -> tuple[float, dict[str, str]]:
    """`docker stop` with Docker's default timeout; returns the seconds it took and the final state."""
    began = time.monotonic()
    docker("stop", container, timeout=DOCKER_STOP_TIMEOUT + 30)
    took = time.monotonic() - began
    fields = docker("inspect", "--format", "{{.State.ExitCode}} {{.State.OOMKilled}}", container).stdout.split()
    return took, dict(zip(("exit_code", "oom_killed"), fields))


def stop_cleanly(container: str) -> None:
    """`docker stop`, which must end the container with exit code 0, in time, without a traceback.

    Exit 0 is the clean end: uvicorn drains, then re-raises SIGTERM at itself, which PID 1 in a
    container ignores, so the process returns normally. 137 would be Docker's SIGKILL."""
    took, state = stop(container)
    logs = docker("logs", container)
    assert state == {"exit_code": "0", "oom_killed": "false"}, (state, logs.stdout, logs.stderr)
    assert took < DOCKER_STOP_TIMEOUT, f"docker stop took {took:.1f}s"
    assert "Traceback" not in logs.stdout + logs.stderr, logs.stderr
    print(f"docker stop: {took:.2f}s, exit code {state['exit_code']}")


def logged_request_ids(base: str) -> set[str]:
    """Every request id in the log of the proxy at `base`, read through its Datasette."""
    rows = httpx.get(f"{base}/ui/log/inference_runs.json", timeout=20,
                     params={"_shape": "array", "_col": ["request_id"], "_size": "max"}).json()
    return {row["request_id"] for row in rows}


def test_image_is_configured_as_documented(image: str) -> None:
    config = json.loads(docker("image", "inspect", "--format", "{{json .Config}}", image).stdout)
    env = dict(item.split("=", 1) for item in config["Env"])
    assert config["User"] == "10001:10001"
    assert set(config["ExposedPorts"]) == {"8000/tcp"}
    assert set(config["Volumes"]) == {"/data"}
    assert config["StopSignal"] == "SIGTERM"
    assert "/healthz" in " ".join(config["Healthcheck"]["Test"])
    assert env["DATABASE_URL"] == "sqlite:////data/study_query_llm.db"
    assert (env["PANEL_ADDRESS"], env["PANEL_PORT"], env["STUDY_ALLOW_OPEN"]) == ("0.0.0.0", "8000", "1")
    assert not [name for name in env if name.endswith("_KEY")], env


def test_build_context_keeps_out_logs_secrets_and_virtual_environments(images: tuple[str, str]) -> None:
    image, build_stage = images
    listed = docker("run", "--rm", build_stage, "find", "/src", "-path", "/src/wheels", "-prune", "-o", "-print")
    files = {line.removeprefix("/src/") for line in listed.stdout.splitlines()}
    assert "proxy/app.py" in files and "pyproject.toml" in files, sorted(files)
    assert not files & set(KEPT_OUT), sorted(files & set(KEPT_OUT))
    assert not [f for f in files if f.startswith((".git", ".venv", "bench", "tests", "node_modules"))], sorted(files)
    runtime = docker("run", "--rm", "--entrypoint", "python3", image, "-c", "import os; print(os.path.exists('/src'))")
    assert runtime.stdout.strip() == "False"


def test_container_serves_unprivileged_stops_cleanly_and_keeps_its_log_in_the_volume(
    image: str, cleanup: list[str]
) -> None:
    volume = f"study-query-llm-test-{uuid.uuid4().hex[:12]}"
    cleanup.append(f"volume:{volume}")
    first, base = run_proxy(image, volume, cleanup)
    request_ids = [chat(base, f"before the restart {i}") for i in range(3)]
    assert httpx.get(f"{base}/ui/", timeout=20).status_code == 200
    assert docker("exec", first, "id", "-u").stdout.strip() == "10001"

    stop_cleanly(first)
    second, base = run_proxy(image, volume, cleanup)
    assert logged_request_ids(base) >= set(request_ids)
    owner = docker("exec", second, "stat", "-c", "%u", "/data/study_query_llm.db").stdout.strip()
    assert owner == "10001"


def test_workers_in_a_container_share_the_port_and_stop_cleanly(image: str, cleanup: list[str]) -> None:
    """`WORKERS=2` with the supervisor as PID 1: both workers answer, `docker stop` drains them
    within Docker's default timeout, and every answered call is in the log."""
    volume = f"study-query-llm-test-{uuid.uuid4().hex[:12]}"
    cleanup.append(f"volume:{volume}")
    container, base = run_proxy(image, volume, cleanup, "WORKERS=2")
    request_ids = [chat(base, f"worker call {i}") for i in range(20)]
    pids = {httpx.get(f"{base}/healthz", timeout=20).json()["pid"] for _ in range(40)}  # a new connection each
    assert len(pids) == 2, pids

    stop_cleanly(container)
    _, base = run_proxy(image, volume, cleanup)
    assert logged_request_ids(base) >= set(request_ids)


def test_compose_runs_the_proxy_on_loopback_with_its_volume(image: str, tmp_path: Path) -> None:
    compose = compose_command()
    if compose is None:
        pytest.skip("no docker compose plugin and no docker-compose (apt-get install docker-compose)")
    (tmp_path / "docker-compose.yml").write_text((REPO_ROOT / "docker-compose.yml").read_text())
    (tmp_path / ".env").write_text("# no keys: the mock answers\n")
    # Compose reads an override file beside the compose file by itself (docs/deployment.md uses
    # one for the config file): here, to ask /healthz every second rather than every 10.
    (tmp_path / "docker-compose.override.yml").write_text("services:\n  proxy:\n    healthcheck:\n      interval: 1s\n")
    project = f"sqltest{uuid.uuid4().hex[:10]}"
    port = free_port()
    env = compose_env(PROXY_IMAGE=image, PUBLISH_PORT=str(port))

    def run(*args: str, timeout: float = 120) -> str:
        result = subprocess.run([*compose, "--project-name", project, *args], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    try:
        run("up", "--detach", "--no-build")
        container = run("ps", "--quiet", "proxy").strip()
        assert container, "compose started no proxy"
        wait_healthy(container)
        bindings = docker("inspect", "--format", "{{json .HostConfig.PortBindings}}", container).stdout
        assert f'"HostIp":"127.0.0.1","HostPort":"{port}"' in bindings, bindings
        chat(f"http://127.0.0.1:{port}", "through compose")
        began = time.monotonic()
        run("stop")
        took = time.monotonic() - began
        assert docker("inspect", "--format", "{{.State.ExitCode}}", container).stdout.strip() == "0"
        assert took < DOCKER_STOP_TIMEOUT, f"compose stop took {took:.1f}s"
    finally:
        run("down", "--volumes", "--remove-orphans")
