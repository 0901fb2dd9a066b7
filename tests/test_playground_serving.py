"""The playground as files: served under /playground/ with its security headers, nothing fetched
from elsewhere, every file shipped as package data, off with `--no-ui`; and the conversation view
of a session in Datasette, from rows written the way the proxy writes them."""

from __future__ import annotations

import asyncio
import fnmatch
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest

from analytics.datasette import DATABASE_NAME, create_datasette
from conftest import REPO_ROOT
from proxy.playground import STATIC_DIR
from proxy.store import Store
from proxy.store.schema import inference_runs

pytestmark = pytest.mark.timeout(60)

STATIC_FILES = sorted(p.relative_to(STATIC_DIR).as_posix() for p in STATIC_DIR.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def proxy(module_proxy_factory):
    return module_proxy_factory(ui=True)


def test_the_page_and_its_files_are_served(proxy):
    assert f"Playground:            {proxy.url}/playground/" in proxy.output()
    page = httpx.get(proxy.url + "/playground/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "script-src 'self'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    redirect = httpx.get(proxy.url + "/playground", follow_redirects=False)
    assert redirect.status_code in (307, 308) and redirect.headers["location"].endswith("/playground/")
    for name in STATIC_FILES:
        response = httpx.get(f"{proxy.url}/playground/{name}")
        assert response.status_code == 200, name
        if name.endswith(".js"):
            assert response.headers["content-type"].split(";")[0] in ("text/javascript", "application/javascript")


def test_every_file_the_page_loads_is_there():
    referenced = set()
    for name in STATIC_FILES:
        text = (STATIC_DIR / name).read_text()
        base = Path(name).parent
        for target in re.findall(r'(?:src|href)="([^"#:]+)"', text) + re.findall(r'from "\./([^"]+)"', text):
            if not target.startswith(".."):  # ../v1 and ../ui are the proxy's, not files
                referenced.add((base / target).as_posix() if name.endswith(".js") else target)
    assert referenced and referenced <= set(STATIC_FILES), referenced - set(STATIC_FILES)


def test_nothing_is_fetched_from_elsewhere():
    for name in STATIC_FILES:
        text = (STATIC_DIR / name).read_text()
        assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), name


def test_every_file_ships_as_package_data():
    patterns = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["proxy"]
    for name in STATIC_FILES:
        assert any(fnmatch.fnmatch(f"playground/static/{name}", p) for p in patterns), name


def test_no_ui_turns_the_playground_off_too(proxy_factory):
    server = proxy_factory()  # --no-ui
    assert httpx.get(server.url + "/playground/").status_code == 404
    assert httpx.get(server.url + "/ui/").status_code == 404


def _row(n: int, model: str, turn: int | None, asked: str, **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {c.name: None for c in inference_runs.columns if c.name != "id"}
    body = {"model": model, "messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": asked}]}
    row |= {
        "request_id": f"req-{n:04d}", "created_at": f"2026-12-01T10:00:{n:02d}.000Z", "endpoint": "chat/completions",
        "provider": "mock", "model": model, "status_code": 200, "stream": 1, "session_id": "conv-1",
        "request_json": json.dumps(body), "response": f"{model} says {asked}", "latency_ms": 5.0, "attempts": 1,
        "metadata": json.dumps({"turn": turn}) if turn else None, "tags": '["playground"]',
    }
    return row | extra


def test_the_conversation_view(tmp_path):
    path = tmp_path / "log.db"
    rows = [
        _row(1, "mock/a", 1, "hello"), _row(2, "mock/b", 1, "hello"),
        _row(3, "mock/b", 2, "and then?", status_code=400, error="upstream said no", response=None),
        _row(4, "mock/a", 2, "and then?"),
        _row(5, "mock/a", None, "unnumbered", session_id="conv-2"),
        _row(6, "mock/a", None, "unnumbered too", session_id="conv-2"),
    ]

    async def check() -> None:
        store = Store(str(path))
        await store.migrate()
        await store.write(rows, [])
        await store.dispose()
        ds = create_datasette(path)
        await ds.invoke_startup()
        try:
            data = (await ds.client.get("/log/conversation.json?session=conv-1&_shape=array")).json()
            assert [(r["turn"], r["model"], r["asked"], r["system"]) for r in data] == [
                (1, "mock/a", "hello", "Be kind."), (1, "mock/b", "hello", "Be kind."),
                (2, "mock/b", "and then?", "Be kind."), (2, "mock/a", "and then?", "Be kind."),
            ]
            other = (await ds.client.get("/log/conversation.json?session=conv-2&_shape=array")).json()
            assert [r["turn"] for r in other] == [1, 2]  # numbered by each model's calls in order
            page = (await ds.client.get("/log/conversation?session=conv-1")).text
            assert "Session conv-1: 2 turns, 2 models" in page
            assert re.search(r'<th data-model="mock/a">mock/a</th><th data-model="mock/b">mock/b</th>', page)
            assert "mock/a says hello" in page and "upstream said no" in page and "error 400" in page
            choose = (await ds.client.get("/log/conversation")).text
            assert "Choose a session" in choose and "conversation?session=conv-1" in choose
            assert "from the playground" in choose
        finally:
            ds.get_database(DATABASE_NAME).close()

    asyncio.run(check())
