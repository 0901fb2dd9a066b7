"""What the end-to-end modules with several providers share: a fake key per provider, the
configuration of the `local` and `dead` providers and of proxy clients, the environment that
points the built-in providers at the fake upstream, an SDK client that does not retry, and the
search for secrets in what the proxy wrote."""

from __future__ import annotations

from collections.abc import Iterable

from openai import OpenAI

from conftest import ProxyServer, fake_key, free_port, provider_env
from fake_upstream import FakeUpstream

OPENAI_KEY = fake_key("sk-test-openai")
AZURE_KEY = fake_key("azure-test")
HYPERBOLIC_KEY = fake_key("hyp-test")
LOCAL_KEY = fake_key("local-test")
#: The proxy key of the client `alice` (see `clients`).
ALICE_KEY = fake_key("sk-proxy-alice")


def local_provider(upstream: FakeUpstream) -> str:
    """`local/…` models go to the fake upstream under `/local/v1`, with the key in `LOCAL_KEY`."""
    return f'\n[providers.local]\nbase_url = "{upstream.base_url}/local/v1"\napi_key_env = "LOCAL_KEY"\n'


def dead_provider() -> str:
    """`dead/…` models go to a port nothing listens on: every attempt fails to connect."""
    return f'\n[providers.dead]\nbase_url = "http://127.0.0.1:{free_port()}/v1"\nno_key = true\n'


def clients(*names: str) -> str:
    """`[clients]` with each name's proxy key in `<NAME>_PROXY_KEY`."""
    return "\n[clients]\n" + "".join(f'{name} = {{ key_env = "{name.upper()}_PROXY_KEY" }}\n' for name in names)


def every_provider_env(upstream: FakeUpstream, **extra: str) -> dict[str, str]:
    """OpenAI, Azure, Hyperbolic and `local` at the fake upstream, each with its key."""
    return provider_env(upstream, openai=OPENAI_KEY, azure=AZURE_KEY, hyperbolic=HYPERBOLIC_KEY, LOCAL_KEY=LOCAL_KEY,
                        **extra)


def sdk_client(server: ProxyServer, api_key: str) -> OpenAI:
    """The openai SDK at `server` with no retries of its own: what a test sees is what the proxy did."""
    return OpenAI(base_url=server.v1, api_key=api_key, max_retries=0, timeout=10)


def secrets_written(server: ProxyServer, secrets: Iterable[str]) -> list[str]:
    """Each secret found in a file the proxy wrote (the log with its WAL and journal, its output;
    not the config.toml the test gave it), as `<kind> in <file>`: the fake key's kind, not the key."""
    secrets = tuple(secrets)
    found = []
    for path in sorted(server.directory.rglob("*")):
        if path.is_file() and path.name != "config.toml":
            data = path.read_bytes()
            where = path.relative_to(server.directory)
            found += [f"{secret.rsplit('-', 1)[0]} in {where}" for secret in secrets if secret.encode() in data]
    return found
