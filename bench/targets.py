"""What the bench calls: a target (direct, ours, LiteLLM, Portkey), an API on it, and a leg of a measurement.

A `Target` knows its port, a base path per upstream kind ("lat0", "lat50", "stream", …)
and the model name that reaches that kind through it, and any request headers a kind needs
(Portkey routes by headers: which provider, and the upstream's base URL). An `Api` adds the endpoint, the
request body and how its stream is read, so one measurement loop serves chat/completions
and the Responses API alike. A `Leg` is one named (target, kind, API) in interleaved rounds.
"""

from __future__ import annotations

import itertools
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

import clients

#: The four targets, in the order tables and logs list them, and their names there.
TARGET_NAMES = ("direct", "ours", "litellm", "portkey")
LABEL = {"direct": "direct", "ours": "ours", "litellm": "LiteLLM", "portkey": "Portkey"}
#: The proxies we compare ours with (bench/references.py), each installed apart and skippable.
REFERENCES = ("litellm", "portkey")
STREAM_CHUNKS, STREAM_GAP_MS = 50, 2
#: "#N#" is replaced per request (wrk: bench/wrk/post.lua; Python clients: Target.request), so that
#: every request is unique: no cache or merging of identical concurrent requests can answer it.
PROMPT = "Hello, this is benchmark request #N#. Please answer briefly."
RUN_ID = secrets.token_hex(4)
_serial = itertools.count(1)


def unique() -> int:
    """A number never handed out before in this run."""
    return next(_serial)


@dataclass(frozen=True)
class Api:
    endpoint: str  # the path after /v1/
    fields: dict[str, Any]  # the request body beside `model` (and `stream`)
    sse: clients.SSEFormat


CHAT = Api("chat/completions", {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 16}, clients.CHAT_SSE)
RESPONSES = Api("responses", {"input": PROMPT, "max_output_tokens": 16}, clients.RESPONSES_SSE)


@dataclass
class Target:
    name: str
    port: int
    bases: dict[str, str]  # kind ("lat0", "lat50", "stream", …) -> path up to and including /v1
    models: dict[str, str]
    auth: str | None = None
    headers: dict[str, dict[str, str]] = field(default_factory=dict)  # kind -> extra request headers

    def headers_for(self, kind: str) -> dict[str, str]:
        return self.headers.get(kind, {})

    def path(self, kind: str, api: Api = CHAT) -> str:
        return f"{self.bases[kind]}/{api.endpoint}"

    def body(self, kind: str, stream: bool = False, api: Api = CHAT) -> bytes:
        payload: dict[str, Any] = {"model": self.models[kind], **api.fields}
        if stream:
            payload["stream"] = True
        return json.dumps(payload, separators=(",", ":")).encode()

    def url(self, kind: str, api: Api = CHAT) -> str:
        return f"http://127.0.0.1:{self.port}{self.path(kind, api)}"

    def request(self, kind: str, stream: bool = False, api: Api = CHAT) -> bytes:
        """One request, its body made unique."""
        body = self.body(kind, stream, api).replace(b"#N#", f"{RUN_ID}-py-{unique()}".encode())
        return clients.build_request("127.0.0.1", self.port, self.path(kind, api), body, self.auth, self.headers_for(kind))

    def requests(self, kind: str, count: int, stream: bool = False, api: Api = CHAT) -> list[bytes]:
        return [self.request(kind, stream, api) for _ in range(count)]


def direct_target(port: int) -> Target:
    """The fake upstream itself, its calls tagged `direct`."""
    return Target(
        "direct", port,
        {"lat0": "/t-direct/v1", "lat50": "/t-direct/lat-50/v1", "stream": f"/t-direct/chunks-{STREAM_CHUNKS}/gap-{STREAM_GAP_MS}/v1"},
        {"lat0": "bench-model", "lat50": "bench-model", "stream": "bench-model"},
    )


@dataclass(frozen=True)
class Leg:
    """One named thing measured in interleaved rounds: an API of a target, at one upstream kind."""

    name: str
    target: Target
    kind: str
    api: Api = CHAT

    @property
    def on_ours(self) -> bool:
        """Its answers are rows in our log (the harness counts them)."""
        return self.target.name == "ours"

    def url(self) -> str:
        return self.target.url(self.kind, self.api)

    def body(self) -> bytes:
        return self.target.body(self.kind, api=self.api)

    def headers(self) -> dict[str, str]:
        return self.target.headers_for(self.kind)

    def requests(self, count: int, stream: bool = False) -> list[bytes]:
        return self.target.requests(self.kind, count, stream, self.api)


def legs(targets: list[Target], kind: str, api: Api = CHAT) -> list[Leg]:
    """One leg per target, named after it: the plain side-by-side of scenarios a–c."""
    return [Leg(t.name, t, kind, api) for t in targets]
