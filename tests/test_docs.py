"""The reference docs name everything the code accepts, as Datasette's tests do for its settings.

Each list is taken from the code itself, never from a hand list that could drift:

- commands and flags: the argparse parser of `study-query-llm` (`proxy.cli.build_parser`);
- environment variables: every name the source reads (`os.environ.get`, `os.getenv`,
  `environ[...]`, `env.get(...)` and the like, found in `proxy/` and `analytics/`), and every
  name the config loader asks its environment for when it builds the settings;
- TOML tables and keys: what the config loader reads from a config file (recorded as it
  reads one), and the fields of the settings dataclasses its strict tables are made into;
- `X-Study-*` headers: every such name in the source of `proxy/` and `analytics/`.

A thing is documented when it appears under its own heading (a command, a TOML table) or in
its table row (a variable, a header) of docs/configuration.md or docs/endpoints.md. The
schema page has its own test (test_docs_schema.py), the links theirs (test_docs_links.py).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import re
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from proxy import config as config_module
from proxy.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SOURCES = [p for d in ("proxy", "analytics") for p in sorted((ROOT / d).rglob("*.py"))]
#: Variables the code reads that are not the user's to set. Keep this tiny and say why each is here.
INTERNAL_VARIABLES: frozenset[str] = frozenset()


def page(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def section(text: str, heading: re.Pattern[str]) -> str | None:
    """The text under the first heading that matches, up to the next heading of its level or above."""
    lines, inside, level, fence = [], False, 0, False
    for line in text.splitlines():
        if line.startswith("```"):
            fence = not fence
        match = None if fence else re.match(r"(#{1,6}) (.*)", line)
        if match and inside and len(match.group(1)) <= level:
            break
        if match and not inside and heading.search(match.group(2)):
            inside, level = True, len(match.group(1))
            continue
        if inside:
            lines.append(line)
    return "\n".join(lines) if inside else None


def code_spans(text: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", text)


def mentions(text: str, word: str) -> bool:
    """`word` appears, whole, inside a code span of `text`."""
    pattern = re.compile(rf"(?<![\w-]){re.escape(word)}(?![\w-])")
    return any(pattern.search(span) for span in code_spans(text))


# --- commands and flags ---------------------------------------------------------------------


def commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(subparsers.choices)


def options(parser: argparse.ArgumentParser) -> Iterator[str]:
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if action.option_strings:
            yield from action.option_strings
        else:
            yield action.metavar or action.dest.upper()


def test_the_parser_is_read() -> None:
    assert {"serve", "ui", "study", "report", "export"} <= set(commands())
    assert "--database-url" in set(options(commands()["serve"]))


@pytest.mark.parametrize("command", sorted(commands()))
def test_every_command_and_flag_is_documented(command: str) -> None:
    text = section(page("configuration.md"), re.compile(rf"^`study-query-llm {command}`$"))
    assert text is not None, f"docs/configuration.md has no heading ### `study-query-llm {command}`"
    missing = [o for o in options(commands()[command]) if not mentions(text, o)]
    assert missing == [], f"`study-query-llm {command}`: flags not described in docs/configuration.md: {missing}"


# --- environment variables ------------------------------------------------------------------


def _is_environment(node: ast.expr) -> bool:
    """`os.environ`, `environ`, `env`, `self.env`, `read_environment()`…: a mapping of variables."""
    text = ast.unparse(node)
    return bool(re.search(r"(^|\.)(environ|env|environment)$", text) or re.search(r"environ(ment)?\(\)$", text))


@cache
def variables_in_source() -> dict[str, str]:
    """Every environment variable the source reads with a literal name → where."""
    found: dict[str, str] = {}
    for path in SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            name = None
            if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
                func = node.func
                if isinstance(func, ast.Attribute) and func.attr == "get" and _is_environment(func.value):
                    name = node.args[0].value
                elif ast.unparse(func) in ("os.getenv", "getenv"):
                    name = node.args[0].value
            elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and _is_environment(node.value):
                if isinstance(node.slice, ast.Constant):
                    name = node.slice.value
            elif isinstance(node, ast.Compare) and isinstance(node.left, ast.Constant):
                if any(isinstance(op, ast.In | ast.NotIn) for op in node.ops) and any(map(_is_environment, node.comparators)):
                    name = node.left.value
            if isinstance(name, str) and re.fullmatch(r"[A-Z][A-Z0-9_]+", name):
                found.setdefault(name, f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


class RecordingEnv(dict[str, str]):
    """An environment that remembers every name asked for."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.asked.add(str(key))
        return super().__contains__(key)


def variables_the_loader_reads() -> set[str]:
    env = RecordingEnv()
    config_module.load_settings(env=env)
    return env.asked


def environment_variables() -> set[str]:
    return (set(variables_in_source()) | variables_the_loader_reads()) - INTERNAL_VARIABLES


def test_the_variables_are_found() -> None:
    names = environment_variables()
    assert {"DATABASE_URL", "OPENAI_API_KEY", "STUDY_DURABILITY", "STUDY_QUERY_LLM_API_KEY"} <= names


def test_every_environment_variable_is_documented() -> None:
    text = section(page("configuration.md"), re.compile(r"^Environment variables$"))
    assert text is not None, "docs/configuration.md has no heading ## Environment variables"
    rows = {m.group(1) for m in re.finditer(r"^\| `([A-Z][A-Z0-9_]+)` \|", text, re.M)}
    where = variables_in_source()
    missing = sorted(environment_variables() - rows)
    assert missing == [], (
        "environment variables the code reads but the table in docs/configuration.md "
        f"(## Environment variables) lacks: {[(n, where.get(n, 'proxy/config.py')) for n in missing]}"
    )


# --- the TOML config file ---------------------------------------------------------------------

#: One plausible entry for each table whose keys are names the user picks (a provider, an
#: alias…), so that the loader reads every key such an entry may have. Values only: the
#: keys the loader asks for are recorded, whatever they are.
SAMPLES: dict[str, Any] = {
    "providers": {"sample": {"base_url": "http://127.0.0.1:9/v1", "no_key": True}},
    "aliases": {"sample": {"routes": ["mock/a"], "cache": True, "preprocess": ["whitespace"]}, "plain": "mock/b"},
    "templates": {"sample": {"text": "Answer briefly.\n\n{user_input}"}},
    "prices": {"mock/a": {"input": 1.0, "output": 2.0, "cached_input": 0.5}},
    "clients": {"sample": {"key_env": "DOCS_SAMPLE_PROXY_KEY"}},
}
ANY = "NAME"  # the path element standing for a name the user picks


class RecordingTable(dict[str, Any]):
    """A TOML table that remembers which of its keys the loader asked for."""

    def __init__(self, data: dict[str, Any], path: tuple[str, ...], asked: set[tuple[tuple[str, ...], str]]) -> None:
        per_name = len(path) == 1 and path[0] in SAMPLES  # [providers.NAME], [aliases.NAME]…
        super().__init__({
            k: RecordingTable(v, path + ((ANY if per_name else k),), asked) if isinstance(v, dict) else v
            for k, v in data.items()
        })
        self.path, self.asked = path, asked

    def _note(self, key: object) -> None:
        if isinstance(key, str) and not (len(self.path) == 1 and self.path[0] in SAMPLES):
            self.asked.add((self.path, key))

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self._note(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        self._note(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self._note(key)
        return super().__contains__(key)


def _load(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, data: dict[str, Any], asked: set[Any]) -> Any:
    """`load_settings` over a config file whose parsed content is `data`, as recording tables."""
    file = tmp_path / "probe.toml"
    file.write_text("", encoding="utf-8")
    monkeypatch.setattr(tomllib, "load", lambda f: RecordingTable(data, (), asked))
    monkeypatch.setattr(tomllib, "loads", lambda s: RecordingTable(data, (), asked))
    return config_module.load_settings(env={"DOCS_SAMPLE_PROXY_KEY": "k"}, config_file=file)


def _altered(value: Any) -> Any:
    return value + 1 if isinstance(value, int | float) and not isinstance(value, bool) else None


def toml_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[set[str], set[tuple[str, str]]]:
    """The tables the loader reads, and (table, key) for every key it accepts in them."""
    asked: set[tuple[tuple[str, ...], str]] = set()
    _load(monkeypatch, tmp_path, SAMPLES, asked)
    tables = {key for path, key in asked if path == ()}
    # Again with every table the loader asked for present, so that it reads their keys too.
    _load(monkeypatch, tmp_path, {name: {} for name in tables} | SAMPLES, asked)
    tables = {key for path, key in asked if path == ()}
    keys = {(".".join(path), key) for path, key in asked if path}
    # Strict tables become settings dataclasses: a table's keys are its dataclass's fields.
    # Which table fills which field of Settings is found by setting one number in it.
    for field in dataclasses.fields(config_module.Settings):
        policy = field.default
        if not dataclasses.is_dataclass(policy):
            continue
        number = next(f.name for f in dataclasses.fields(policy) if _altered(getattr(policy, f.name)) is not None)
        value = _altered(getattr(policy, number))
        for table in sorted(tables - set(SAMPLES)):
            try:
                settings = _load(monkeypatch, tmp_path, {table: {number: value}}, set())
            except config_module.ConfigError:
                continue
            if getattr(getattr(settings, field.name), number) == value:
                keys |= {(table, f.name) for f in dataclasses.fields(policy)}
                break
        else:
            raise AssertionError(f"no TOML table sets Settings.{field.name}.{number}")
    return tables, keys


def table_heading(table: str) -> re.Pattern[str]:
    """### `[server]`, ### `[providers.NAME]`, ### `[prices."provider/model"]`…"""
    return re.compile(rf"^`\[{re.escape(table)}[\].]")


def test_the_toml_keys_are_found(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tables, keys = toml_keys(monkeypatch, tmp_path)
    assert {"server", "retry", "providers", "aliases", "prices", "clients", "log"} <= tables
    assert {("server", "max_body_bytes"), ("server", "header_timeout"), ("retry", "deadline"),
            ("providers.NAME", "base_url"), ("aliases.NAME", "routes"), ("prices.NAME", "cached_input"),
            ("clients.NAME", "key_env"), ("log", "durability")} <= keys


def test_every_toml_table_and_key_is_documented(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tables, keys = toml_keys(monkeypatch, tmp_path)
    text = section(page("configuration.md"), re.compile(r"^The TOML config file$"))
    assert text is not None, "docs/configuration.md has no heading ## The TOML config file"
    no_heading = sorted(t for t in tables if section(text, table_heading(t)) is None)
    assert no_heading == [], f"TOML tables without a heading ### `[table]` in docs/configuration.md: {no_heading}"
    missing = sorted(
        f"[{table}] {key}" for table, key in keys
        if not mentions(section(text, table_heading(table.split(".")[0])) or "", key)
    )
    assert missing == [], f"TOML keys not described under their table's heading in docs/configuration.md: {missing}"


# --- X-Study-* headers --------------------------------------------------------------------------


def study_headers() -> dict[str, str]:
    """Every `X-Study-…` name in the source (Python, the playground's JavaScript and HTML,
    Datasette's metadata and templates), lower-cased → where."""
    found: dict[str, str] = {}
    for directory in ("proxy", "analytics"):
        for path in sorted((ROOT / directory).rglob("*")):
            if path.suffix not in (".py", ".js", ".html", ".yml", ".yaml"):
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                for name in re.findall(r"(?i)\bx-study-[a-z][a-z0-9-]*[a-z0-9]", line):
                    found.setdefault(name.lower(), f"{path.relative_to(ROOT)}:{number}")
    return found


def test_the_headers_are_found() -> None:
    assert {"x-study-tags", "x-study-metadata", "x-study-request-id", "x-study-attempts"} <= set(study_headers())


def test_every_study_header_is_documented() -> None:
    text = page("endpoints.md")
    documented = set()
    for title in ("Request headers", "Response headers"):
        body = section(text, re.compile(rf"^{title}$"))
        assert body is not None, f"docs/endpoints.md has no heading ## {title}"
        documented |= {m.lower() for m in re.findall(r"(?im)^\| `(x-study-[a-z0-9-]*[a-z0-9])[`: ]", body)}
    missing = {name: where for name, where in study_headers().items() if name not in documented}
    assert missing == {}, f"X-Study-* headers without a row in docs/endpoints.md's header tables: {missing}"


# --- the front page -----------------------------------------------------------------------------


def test_the_readme_is_a_front_page() -> None:
    """The README stays short and sends readers to docs/; the reference lives there."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 400, "README.md is over 400 lines: move the detail into docs/"
    assert "(docs/README.md)" in readme
    for name in sorted(p.name for p in DOCS.glob("*.md") if p.name != "README.md"):
        assert f"({name})" in page("README.md"), f"docs/README.md does not list docs/{name}"


def test_the_layout_in_development_md_names_every_module() -> None:
    """A module that the map of the code leaves out is one a newcomer cannot find."""
    layout = section(page("development.md"), re.compile(r"^Layout$"))
    assert layout is not None, "docs/development.md has no heading ## Layout"
    named = set(re.findall(r"\b([a-z_]+\.py)\b", layout))
    missing = sorted(str(p.relative_to(ROOT)) for p in SOURCES
                     if p.name not in ("__init__.py", "__main__.py") and p.name not in named)
    assert missing == [], f"modules missing from the Layout of docs/development.md: {missing}"
