"""A real headless Chromium driven through selenium and Debian's chromedriver, for the page tests.

`chrome()` starts one browser; `skip_reason()` says why there can be none here (no selenium, no
chromium, no chromedriver), so the tests skip with that reason. Selenium is given the driver's
path, so its manager never tries to download one.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from analytics.datasette.demo import find_chromium


def skip_reason() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    if find_chromium() is None:
        return "no chromium on PATH (Debian: apt-get install chromium); `make test` installs it"
    if shutil.which("chromedriver") is None:
        return "no chromedriver on PATH (Debian: apt-get install chromium-driver); `make test` installs it"
    return None


@contextmanager
def chrome(size: tuple[int, int] = (1280, 1000)) -> Iterator[Any]:
    """A headless Chromium with its own throw-away profile, closed afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = find_chromium() or ""
        for argument in (
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--hide-scrollbars", f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
        ):
            options.add_argument(argument)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
        try:
            yield driver
        finally:
            driver.quit()
