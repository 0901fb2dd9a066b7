"""The proxies ours is compared with, LiteLLM and Portkey's gateway: child processes pinned to core 0.

Each is installed apart by `make bench` (LiteLLM into its own venv, Portkey into its own
node_modules), pinned to a version, and run with its defaults against the fake upstream.
What they share lives in `ReferenceProxy`: a missing install becomes a stated reason to
skip it, the start on core 0, the wait for its health check, its idle CPU once up, and how
the results describe it. Neither keeps a log of the calls here (ours writes every call to SQLite).
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from procs import PINNING, PROXY_CPU, ROOT, Process, clean_env, cpu_seconds, free_port, pinned, wait_http
from servers import Upstream
from targets import STREAM_CHUNKS, STREAM_GAP_MS, Target

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"


class ReferenceProxy:
    """One reference proxy: installed by make bench into `install_dir`, run pinned to core 0."""

    name = ""  # its target name (targets.TARGET_NAMES)
    label = ""
    pin = ""  # the version make bench installs
    install_dir = BENCH
    health_path = "/"
    startup_timeout = 60.0

    def __init__(self, upstream: Upstream, tmp: Path) -> None:
        self.ensure_installed()
        self.version = self.installed_version()
        self.port = free_port()
        self.cmd, env = self.command(upstream.base, tmp)
        self.proc = Process(self.label, [*pinned(PROXY_CPU), *self.cmd], tmp / f"{self.name}.log", env=env, cwd=tmp)
        self.startup_s = wait_http(self.port, self.health_path, self.proc, timeout=self.startup_timeout)
        self.target = self.make_target(upstream.base)
        time.sleep(1.0)
        before = cpu_seconds(self.proc.pid)
        time.sleep(2.0)
        self.idle_cpu_percent = round((cpu_seconds(self.proc.pid) - before) / 2.0 * 100, 1)

    # what each proxy says for itself

    def entry(self) -> Path:
        """The file whose presence means the install worked."""
        raise NotImplementedError

    def installed_version(self) -> str:
        raise NotImplementedError

    def command(self, upstream: str, tmp: Path) -> tuple[list[str], dict[str, str]]:
        """Its command line (before taskset) and environment."""
        raise NotImplementedError

    def make_target(self, upstream: str) -> Target:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """How results.md states the run: version, command, environment, configuration, start-up."""
        raise NotImplementedError

    # shared

    def ensure_installed(self) -> None:
        """Raise, with the reason, when the install is missing or failed (the run skips this proxy)."""
        entry = self.entry()
        if entry.exists():
            return
        install_log = RESULTS / f"{self.name}-install.log"
        why = (f"{entry.relative_to(ROOT)} is missing: run `make bench` (it installs {self.label} {self.pin} "
               f"into {self.install_dir.relative_to(ROOT)})")
        if install_log.exists() and not (self.install_dir / ".installed").exists():  # the install failed: say why
            lines = install_log.read_text(errors="replace").strip().splitlines()
            errors = [line for line in lines if "error" in line.lower()] or lines
            why += f"; the last install attempt ended with: {' | '.join(line.strip() for line in errors[-3:])}"
        raise RuntimeError(why)

    def base_description(self, command: str) -> dict[str, Any]:
        return {
            "version": self.version,
            "command": ("taskset -c 0 " if PINNING else "") + command,
            "startup_s": round(self.startup_s, 1),
            "idle_cpu_percent": self.idle_cpu_percent,
        }


class LiteLLM(ReferenceProxy):
    """LiteLLM's proxy, one worker, no database, from its own venv."""

    name, label, pin = "litellm", "LiteLLM", "1.106.12"
    install_dir = BENCH / ".venv-litellm"
    health_path = "/health/liveliness"
    startup_timeout = 180.0
    config = BENCH / "litellm" / "config.yaml"

    def entry(self) -> Path:
        return self.install_dir / "bin" / "litellm"

    def installed_version(self) -> str:
        return subprocess.run(
            [str(self.install_dir / "bin" / "python"), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()

    def command(self, upstream: str, tmp: Path) -> tuple[list[str], dict[str, str]]:
        config = tmp / "litellm.yaml"
        config.write_text(self.config.read_text().replace("UPSTREAM", upstream))
        self.key = "sk-bench-" + secrets.token_hex(16)  # generated per run, never written to disk
        # LITELLM_LOCAL_MODEL_COST_MAP: this machine has no internet; without it LiteLLM retries
        # fetching its price list from GitHub for ~10 s at start-up, then uses the same local copy.
        env = clean_env(LITELLM_MASTER_KEY=self.key, LITELLM_LOCAL_MODEL_COST_MAP="True")
        cmd = [str(self.entry()), "--config", str(config), "--host", "127.0.0.1", "--port", str(self.port), "--num_workers", "1"]
        return cmd, env

    def make_target(self, upstream: str) -> Target:
        models = {"lat0": "bench-model", "lat50": "bench-model-lat50", "stream": "bench-stream"}
        return Target(self.name, self.port, dict.fromkeys(models, "/v1"), models, auth=self.key)

    def describe(self) -> dict[str, Any]:
        return self.base_description(
            "bench/.venv-litellm/bin/litellm --config <bench/litellm/config.yaml rendered> --host 127.0.0.1 "
            "--port <free port> --num_workers 1"
        ) | {
            "environment": "LITELLM_MASTER_KEY=sk-bench-<random per run>, LITELLM_LOCAL_MODEL_COST_MAP=True",
            "config": "bench/litellm/config.yaml (UPSTREAM replaced by the fake upstream's address)",
            "settings": "no database, cache or callbacks, its default settings otherwise (one worker, uvicorn)",
        }


class Portkey(ReferenceProxy):
    """Portkey's open-source AI gateway on Node.js, from its own node_modules; routed by request headers."""

    name, label, pin = "portkey", "Portkey", "1.15.2"
    install_dir = BENCH / ".portkey"
    health_path = "/"  # "AI Gateway says hey!"
    #: Any key: the gateway passes it upstream as the OpenAI key, and the fake upstream ignores it.
    key = "sk-bench-upstream"

    def entry(self) -> Path:
        return self.install_dir / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"

    def installed_version(self) -> str:
        return str(json.loads(self.entry().parent.parent.joinpath("package.json").read_text())["version"])

    def command(self, upstream: str, tmp: Path) -> tuple[list[str], dict[str, str]]:
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node is not on the PATH: Portkey's gateway needs Node.js")
        # --headless: no web UI and no log stream for it (as ours runs with --no-ui). It has no
        # host option and listens on every interface; the clients call 127.0.0.1.
        return [node, str(self.entry()), f"--port={self.port}", "--headless"], clean_env()

    def make_target(self, upstream: str) -> Target:
        bases = {"lat0": "/t-portkey/v1", "lat50": "/t-portkey/lat-50/v1",
                 "stream": f"/t-portkey/chunks-{STREAM_CHUNKS}/gap-{STREAM_GAP_MS}/v1"}
        headers = {kind: {"x-portkey-provider": "openai", "x-portkey-custom-host": f"{upstream}{base}"}
                   for kind, base in bases.items()}
        return Target(self.name, self.port, dict.fromkeys(bases, "/v1"), dict.fromkeys(bases, "bench-model"),
                      auth=self.key, headers=headers)

    def describe(self) -> dict[str, Any]:
        return self.base_description(
            "node bench/.portkey/node_modules/@portkey-ai/gateway/build/start-server.js --port=<free port> --headless"
        ) | {
            "environment": "without variables of its own",
            "config": ("no configuration file: each request names its upstream in headers (x-portkey-provider: openai, "
                       "x-portkey-custom-host: the fake upstream's /t-portkey/…/v1, Authorization: Bearer <any key>)"),
            "settings": ("no cache, retries or hooks, its default settings otherwise (one Node.js process, "
                         "@hono/node-server pinned to 1.14.1 by bench/portkey/package.json: later versions break its streams)"),
        }


#: The reference proxies by target name.
REFERENCE_PROXIES: dict[str, type[ReferenceProxy]] = {cls.name: cls for cls in (LiteLLM, Portkey)}
