"""Docker for the container tests: is there an engine, a base image made with no registry, and
the project's image built from wheels made on the host, so that the build needs no network.

Kept between runs (a later run on the same machine is fast): the base image in Docker, its root
file system as a tarball and the dependencies' wheels, all under `CACHE`.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import tomllib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import fake_key

REPO_ROOT = Path(__file__).resolve().parent.parent
BASE_IMAGE = "study-query-llm-base:bookworm"
#: Variables that docker-compose.yml reads (and compose's own).
COMPOSE_VARIABLES = ("COMPOSE_", "DATABASE_URL", "REDIS_URL", "PUBLISH_", "POSTGRES_", "PROXY_IMAGE", "REDIS_IMAGE")
#: Files that a working tree may hold and that must never reach the build context.
KEPT_OUT = (
    ".env", ".git/HEAD", ".venv/bin/python", "log.db", "log.db-wal", "log.db-shm", "log.db.journal/1.000001.jsonl",
    "log.spool.jsonl", "proxy/stray.db", "proxy/__pycache__/api.cpython-311.pyc", "bench/results/results.json",
    "bench/.venv-litellm/bin/python", "tests/node/node_modules/openai/index.js", "node_modules/x/index.js",
)
_BUILDING = threading.Lock()  # tests/prewarm.py builds the images in a thread while the suite runs
_built: tuple[str, str] | None = None


def cache_dir() -> Path:
    """`/var/cache/study-query-llm` where this user may write there (root, as in CI), else ~/.cache."""
    for candidate in (Path("/var/cache/study-query-llm"), Path.home() / ".cache" / "study-query-llm"):
        try:
            candidate.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(candidate, os.W_OK):
            return candidate
    raise RuntimeError("no writable cache directory for the container tests")


def docker(*args: str, timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def engine_missing() -> str | None:
    """Why no container can run here, or None when an engine answers."""
    if shutil.which("docker") is None:
        return "no docker command (apt-get install docker.io; .ci/run does)"
    try:
        info = docker("info", "--format", "{{.ServerVersion}}", timeout=20, check=False)
    except subprocess.TimeoutExpired:
        return "docker info did not answer within 20 s"
    if info.returncode != 0:
        return f"dockerd not reachable (start it: .ci/run does): {info.stderr.strip()[-300:]}"
    return None


def compose_command() -> list[str] | None:
    """`docker compose` (the plugin) or `docker-compose` (Debian's package), whichever runs."""
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        try:
            if subprocess.run([*command, "version"], capture_output=True, timeout=20).returncode == 0:
                return command
        except subprocess.TimeoutExpired:
            continue
    return None


def compose_env(**extra: str) -> dict[str, str]:
    """This environment without what would change the compose file's meaning (the developer's
    own COMPOSE_PROFILES, DATABASE_URL, …), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(COMPOSE_VARIABLES)}
    return env | extra


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """One test run at a time makes the shared base image and wheels on this machine."""
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def base_image() -> str:
    """The local bookworm base (docker/base-image.sh), made once and kept."""
    cache = cache_dir()
    with locked(cache / "base.lock"):
        if docker("image", "inspect", BASE_IMAGE, check=False).returncode == 0:
            return BASE_IMAGE
        tarball = cache / "base-bookworm.tar"
        if not tarball.exists() and shutil.which("debootstrap") is None:
            pytest.fail("no base image and no debootstrap to make one: apt-get install debootstrap")
        made = subprocess.run(["sh", str(REPO_ROOT / "docker" / "base-image.sh"), BASE_IMAGE, str(tarball)],
                              capture_output=True, text=True, timeout=900)
        assert made.returncode == 0, f"docker/base-image.sh failed:\n{made.stdout[-3000:]}\n{made.stderr[-3000:]}"
    return BASE_IMAGE


def stage_context(destination: Path) -> Path:
    """The files a clone with the working tree's changes holds (tracked, and new ones not
    ignored), copied to `destination`, so that wheels/ and test files go there, not into the tree."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO_ROOT, capture_output=True, check=True, timeout=60).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = REPO_ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree is not
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def python_of(base: str) -> str:
    """The full version of the base image's python3, e.g. `3.11.2`."""
    return docker("run", "--rm", "--entrypoint", "python3", base, "-c",
                  "import platform; print(platform.python_version())").stdout.strip()


def wheel_maker(version: str) -> str:
    """A Python of this machine with pip whose version is exactly `version`. Down to the micro
    version: dependencies' markers differ there (redis needs async-timeout below 3.11.3)."""
    candidates = dict.fromkeys(filter(None, (sys.executable, shutil.which("python3.11"), "/usr/bin/python3",
                                             shutil.which("python3"))))
    probe = "import platform, pip; print(platform.python_version())"
    for python in candidates:
        found = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=60)
        if found.returncode == 0 and found.stdout.strip() == version:
            return python
    pytest.fail(f"no Python {version} with pip on this machine (tried {', '.join(candidates)}) to make wheels "
                "that the base image's Python installs")


def make_wheels(context: Path, base: str) -> None:
    """`pip wheel . -w wheels` in the context, by the base's Python version: from the cached
    wheels when they have everything (no network), else from the package index, whose new wheels
    then join the cache. The build system's own requirements are made into wheels too, so that
    the project builds offline next time."""
    cache = cache_dir() / "wheels"
    wheels = context / "wheels"
    build_requires = tomllib.loads((context / "pyproject.toml").read_text())["build-system"]["requires"]
    pip = [wheel_maker(python_of(base)), "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(wheels), str(context),
           *build_requires]
    with locked(cache_dir() / "wheels.lock"):
        cache.mkdir(exist_ok=True)
        offline = subprocess.run([*pip, "--no-index", "--find-links", str(cache)], capture_output=True, text=True,
                                 timeout=300)
        if offline.returncode != 0:
            online = subprocess.run(pip, capture_output=True, text=True, timeout=600)
            assert online.returncode == 0, f"pip wheel failed:\n{online.stdout[-3000:]}\n{online.stderr[-3000:]}"
            for wheel in wheels.glob("*.whl"):
                if not wheel.name.startswith("study_query_llm-"):
                    shutil.copy2(wheel, cache / wheel.name)


def project_images() -> tuple[str, str]:
    """The project's image and its build stage, built once a session on the local base from a
    staged context: the tree's files, wheels/, and the `KEPT_OUT` files that .dockerignore must
    keep out. The caller removes them (`docker rmi`)."""
    global _built
    with _BUILDING:
        if _built is None:
            base = base_image()
            with tempfile.TemporaryDirectory() as scratch:
                context = stage_context(Path(scratch))
                make_wheels(context, base)
                for name in KEPT_OUT:
                    path = context / name
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(f"OPENAI_API_KEY={fake_key()}\n" if name == ".env" else "kept out\n")
                _built = build_image(context, base)
        return _built


def build_image(context: Path, base: str) -> tuple[str, str]:
    """Build the context's Dockerfile on `base`; returns tags unique to this run for the image
    and for its build stage. The build stage is tagged (and built first) so that removing both
    tags leaves no untagged image of this run behind."""
    tag = f"study-query-llm:test-{uuid.uuid4().hex[:12]}"
    build = ["build", "--force-rm", "--quiet", "--build-arg", f"PYTHON_IMAGE={base}"]
    docker(*build, "--target", "build", "--tag", f"{tag}-build", str(context), timeout=900)
    docker(*build, "--tag", tag, str(context), timeout=900)
    return tag, f"{tag}-build"
