"""The dashboard in a real browser: headless Chromium loads /ui/-/dashboards/overview from a real
server (uvicorn, Datasette mounted under /ui as the proxy mounts it) over a generated log of a few
hundred calls, runs the charts' JavaScript (Vega, served by the plugin itself: no network here),
and we check the rendered DOM (an SVG with marks in every chart, numbers in the metrics) and a
screenshot. Skipped where no Chromium is installed (Debian: `apt-get install chromium`; the
Makefile's test target installs it when it can).
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from analytics.datasette import load_metadata
from analytics.datasette.demo import chromium, find_chromium, serve_under_ui, write_demo_log

pytestmark = pytest.mark.skipif(
    find_chromium() is None, reason="no chromium on PATH (Debian: apt-get install chromium); `make test` installs it"
)

CHARTS = load_metadata()["plugins"]["datasette-dashboards"]["overview"]["charts"]
SIZE = (1400, 1750)


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = write_demo_log(tmp_path_factory.mktemp("browser") / "log.db", rows=300, days=3)
    with serve_under_ui(path) as base:
        yield base


def chart_parts(dom: str) -> dict[str, str]:
    """Each chart's slice of the rendered DOM, from its <div id="chart-…"> to the next one."""
    starts = [(m.start(), m.group(1)) for m in re.finditer(r'<div id="chart-([^"]+)"', dom)]
    return {
        slug: dom[pos : starts[i + 1][0] if i + 1 < len(starts) else len(dom)] for i, (pos, slug) in enumerate(starts)
    }


def test_every_chart_of_the_dashboard_renders(ui: str) -> None:
    dom = chromium(ui + "-/dashboards/overview", dump_dom=True, size=SIZE)
    parts = chart_parts(dom)
    assert set(parts) == set(CHARTS)
    marks = {"line": "mark-line", "bar": "mark-rect"}
    for slug, chart in CHARTS.items():
        part = parts[slug]
        if chart["library"] == "metric":
            shown = re.findall(r"<p[^>]*>([^<]+)</p>", part)
            assert shown and re.search(r"\d", shown[0]), (slug, part[:500])
            continue
        assert chart["library"] == "vega-lite"
        assert 'class="marks"' in part, f"{slug}: no chart drawn: {part[:500]}"
        mark = chart["display"].get("mark") or chart["display"]["layer"][0]["mark"]
        kind = mark["type"] if isinstance(mark, dict) else mark
        assert part.count(marks[kind]) >= 1, (slug, kind)
        # a drawn mark per data point: paths for bars and line points, far more than axes alone
        assert part.count("<path") >= 8, (slug, part.count("<path"))
    # the three charts the issue asks for, with their data in them
    latency = parts["latency-over-time"]
    for provider in ("openai", "azure", "hyperbolic", "mock"):
        assert f">{provider}</text>" in latency, provider  # the legend
    assert "mark-symbol" in latency  # a point per (hour, provider)
    assert latency.count('aria-roledescription="bar"') == 0
    assert parts["cost-per-day"].count('aria-roledescription="bar"') >= 3 * 3  # 3-4 days x models
    assert ">azure</text>" in parts["error-rate-by-provider"]


def test_one_chart_alone_renders(ui: str) -> None:
    dom = chromium(ui + "-/dashboards/overview/error-rate-by-provider?since=7d", dump_dom=True)
    part = chart_parts(dom)["overview"]  # a chart's own page names its container after the dashboard
    assert 'class="marks"' in part and part.count('aria-roledescription="bar"') >= 4  # 4 providers


def read_png(path: Path) -> tuple[int, int, list[bytes], int]:
    """Width, height, rows of pixels and bytes per pixel of an 8-bit RGB(A) PNG (what Chromium writes)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert header is not None
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    bpp = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    rows, prev, i = [], bytearray(stride), 0
    for _ in range(height):
        kind, line = raw[i], bytearray(raw[i + 1 : i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if kind == 1:
                line[x] = (line[x] + a) & 255
            elif kind == 2:
                line[x] = (line[x] + b) & 255
            elif kind == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, rows, bpp


def colourful_share(rows: list[bytes], bpp: int, skip_top: int = 60) -> float:
    """The share of (every other) pixel below the header that is strongly coloured: the charts'
    lines and bars. The dashboard's text, cards and links alone give ~1%."""
    seen = coloured = 0
    for row in rows[skip_top:]:
        for x in range(0, len(row), bpp * 2):
            r, g, b = row[x], row[x + 1], row[x + 2]
            seen += 1
            coloured += max(r, g, b) - min(r, g, b) > 80
    return coloured / seen


def test_screenshot_of_the_dashboard_shows_charts(ui: str, tmp_path: Path) -> None:
    png = tmp_path / "dashboard.png"
    chromium(ui + "-/dashboards/overview", screenshot=png, size=SIZE)
    width, height, rows, bpp = read_png(png)
    assert (width, height) == SIZE
    assert png.stat().st_size > 60_000  # a blank or error page compresses to a few KB
    assert colourful_share(rows, bpp) > 0.03  # ~7% with the charts drawn
