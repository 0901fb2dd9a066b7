"""The playground page as the browser tests drive it: through its `data-testid` hooks only, as a
person automating the page would."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlencode

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

COLUMNS_JS = """
return Array.from(document.querySelectorAll('[data-testid=column]')).map((c) => ({
  model: c.dataset.model, state: c.dataset.state,
  asked: c.querySelector('[data-testid=asked]').textContent,
  answer: c.querySelector('[data-testid=answer]').textContent,
  error: c.querySelector('[data-testid=answer-error]').textContent,
}));
"""


class Playground:
    def __init__(self, driver: Any, base_url: str) -> None:
        self.driver = driver
        self.base_url = base_url

    def open(self, *, ready: bool = True, **params: str) -> None:
        """The page, prefilled by `params`; with `ready`, once its model list has loaded (or failed to)."""
        query = "?" + urlencode(params) if params else ""
        self.driver.get(f"{self.base_url}/playground/{query}")
        if ready:
            self.wait(lambda: not self.text("models-status").startswith("Loading"), "the model list")

    def key_asked(self) -> bool:
        return self.driver.execute_script("return document.getElementById('key-dialog').open")

    def wait(self, condition: Any, what: str, timeout: float = 15.0) -> Any:
        return WebDriverWait(self.driver, timeout, poll_frequency=0.02).until(
            lambda _: condition(), message=f"waiting for {what}"
        )

    def find(self, testid: str, model: str | None = None) -> Any:
        selector = f'[data-testid="{testid}"]' + (f'[data-model="{model}"]' if model else "")
        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def find_all(self, testid: str) -> list[Any]:
        return self.driver.find_elements(By.CSS_SELECTOR, f'[data-testid="{testid}"]')

    def text(self, testid: str, model: str | None = None) -> str:
        return self.find(testid, model).get_attribute("textContent")

    def columns(self) -> list[dict[str, str]]:
        return self.driver.execute_script(COLUMNS_JS)

    def ask(self, prompt: str, turn: int, *, keyboard: bool = False) -> None:
        """Type `prompt`, run it (the button, or Ctrl+Enter), and wait for turn `turn` to end."""
        box = self.find("prompt")
        box.send_keys(prompt)
        if keyboard:
            box.send_keys(Keys.CONTROL, Keys.ENTER)
        else:
            self.find("run").click()
        self.wait_turn(turn)

    def wait_turn(self, turn: int) -> str:
        """The status line once turn `turn` is over: every column answered or failed, rows fetched."""
        return self.wait(lambda: self.text("status").startswith(f"Turn {turn}:") and self.text("status"), f"turn {turn}")

    def meta(self, model: str) -> dict[str, str]:
        """A column's figures by name, and its request id and row id."""
        node = self.find("answer-meta", model)
        figures = {dd.get_attribute("data-figure"): dd.get_attribute("textContent")
                   for dd in node.find_elements(By.CSS_SELECTOR, "dd")}
        return {**figures, "request_id": node.get_attribute("data-request-id") or "",
                "row_id": node.get_attribute("data-row-id") or ""}

    def session(self) -> str:
        return self.text("session")

    def storage(self) -> dict[str, Any]:
        return self.driver.execute_script(
            "return {session: {...sessionStorage}, local: {...localStorage}, cookies: document.cookie};"
        )

    def sample(self, seconds: float) -> list[list[dict[str, str]]]:
        """The columns, read again and again for `seconds` (to see text arrive while it streams)."""
        samples, deadline = [], time.monotonic() + seconds
        while time.monotonic() < deadline:
            samples.append(self.columns())
            if all(c["state"] in ("done", "error") for c in samples[-1]):
                break
            time.sleep(0.01)
        return samples
