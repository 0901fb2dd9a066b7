"""Every relative link in the README, docs/*.md and bench/README.md resolves, #anchors included.

Anchors are GitHub's: a heading's text lower-cased, with everything but letters, digits,
spaces, `-` and `_` removed and spaces turned into `-`; a repeated heading gets `-1`, `-2`.
Headings inside fenced code blocks are not headings. Links inside code are not links.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md"]
#: [text](target) and [text](target "title"); images too. Reference-style links are not used.
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def slug(heading: str) -> str:
    text = re.sub(r"<[^>]+>", "", heading).strip().lower()  # inline HTML is not part of the text
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _outside_fences(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of the lines outside fenced code blocks."""
    fence = None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.lstrip()
        if fence is None and stripped.startswith(("```", "~~~")):
            fence = stripped[:3]
            continue
        if fence is not None:
            if stripped.startswith(fence):
                fence = None
            continue
        yield number, line


def _prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, with inline code spans blanked out."""
    return [(number, re.sub(r"`+[^`]*`+", lambda m: " " * len(m.group()), line)) for number, line in _outside_fences(text)]


def anchors(path: Path) -> set[str]:
    found, seen = set(), {}
    text = path.read_text(encoding="utf-8")
    for _, line in _outside_fences(text):  # headings keep their inline code: GitHub slugs its text
        if match := HEADING.match(line):
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    found |= set(re.findall(r'<a\s+(?:name|id)="([^"]+)"', text))
    return found


def links(path: Path) -> list[tuple[int, str]]:
    text = path.read_text(encoding="utf-8")
    return [(n, m.group(1)) for n, line in _prose_lines(text) for m in LINK.finditer(line)]


def broken_links(path: Path) -> list[str]:
    problems = []
    for number, target in links(path):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        destination = (path.parent / unquote(file_part)).resolve() if file_part else path
        where = f"{path.relative_to(ROOT)}:{number}: {target}"
        if not destination.exists():
            problems.append(f"{where}: no file {destination.relative_to(ROOT) if destination.is_relative_to(ROOT) else destination}")
        elif anchor and destination.suffix == ".md" and unquote(anchor) not in anchors(destination):
            problems.append(f"{where}: no heading with the anchor #{anchor} in {destination.relative_to(ROOT)}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    assert broken_links(page) == []


def test_the_slugs_are_githubs() -> None:
    assert slug("Retries, fallbacks, de-duplication, caching, and when things fail") == (
        "retries-fallbacks-de-duplication-caching-and-when-things-fail"
    )
    assert slug("`[providers.NAME]`") == "providersname"
    assert slug("Metrics: `GET /metrics`") == "metrics-get-metrics"
    assert slug("Every other `/v1/…` endpoint: forwarded") == "every-other-v1-endpoint-forwarded"
    assert slug("`inference_runs`: one row per client request") == "inference_runs-one-row-per-client-request"


def test_a_broken_anchor_is_found(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n## A section\n\n[ok](#a-section) [bad](#no-such) [gone](missing.md)\n"
                    "```\n[in code](#ignored)\n```\n", encoding="utf-8")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        problems = broken_links(page)
    finally:
        ROOT = saved
    assert [p.split(": ", 2)[1] for p in problems] == ["#no-such", "missing.md"]
