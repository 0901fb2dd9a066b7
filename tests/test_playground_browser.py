"""The playground in a real headless Chromium (selenium, Debian's chromedriver) against a real proxy
serving the mock and a fake upstream: models streaming side by side, conversations, sessions,
PII removed before the call goes upstream, errors in their column, prefill by query parameters,
the key prompt, the layout, and the session as a conversation in Datasette.
Skipped where no Chromium or chromedriver is installed (`make test` installs both).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest

from browser import chrome, skip_reason
from conftest import fake_key, loads, provider_env
from fake_answers import chat_answer
from fake_failures import slow_answer

pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[dev]')")
pytestmark = [pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""), pytest.mark.timeout(120)]

from playground_page import Playground  # noqa: E402  (needs selenium)
from selenium.webdriver.common.by import By  # noqa: E402

OPENAI_KEY = fake_key("sk-test-openai")
CONFIG = """
[templates.brief]
text = "Briefly: {user_input}"

[prices."openai/slow-stream-a"]
input = 1.0
output = 2.0
"""


@pytest.fixture(scope="module")
def proxy(module_proxy_factory, fake_upstream_server):
    return module_proxy_factory(env=provider_env(fake_upstream_server, openai=OPENAI_KEY), config=CONFIG, ui=True)


@pytest.fixture(scope="module")
def driver():
    with chrome() as browser:
        yield browser


@pytest.fixture
def page(driver, proxy):
    driver.set_window_size(1280, 1000)
    return Playground(driver, proxy.url)


def test_two_models_stream_side_by_side(page, proxy, upstream):
    a, b = "openai/slow-stream-a", "openai/slow-stream-b"
    page.open(models=f"{a},{b},mock/echo", prompt="Count for me")
    page.find("run").click()
    samples = page.sample(10)
    both_growing = [
        s for s in samples
        if all(c["state"] == "streaming" and 0 < len(c["answer"]) < len(slow_answer()) for c in s[:2])
    ]
    assert both_growing, "never saw both columns part-way through their answers at once"
    lengths = {len(s[0]["answer"]) for s in samples}
    assert len(lengths) > 5, f"column A did not grow piece by piece: {sorted(lengths)}"
    page.wait_turn(1)
    assert [(c["model"], c["state"], c["answer"]) for c in page.columns()] == [
        (a, "done", slow_answer()), (b, "done", slow_answer()), ("mock/echo", "done", "Mock answer to: Count for me"),
    ]
    first, second = upstream.calls("slow-stream-a")[0], upstream.calls("slow-stream-b")[0]
    assert first.json["stream"] is True and second.json["stream"] is True
    assert abs(first.received_at - second.received_at) < 0.5  # asked at once, not one after the other
    figures = page.meta(a)
    row = proxy.log.wait_row(figures["request_id"])
    assert figures["tokens"] == "18 (11 in, 7 out)"
    assert figures["cost"] == "$0.000025" and row["cost_usd"] == pytest.approx(0.000025)
    assert figures["latency"] == f"{round(row['latency_ms']):,} ms"
    assert figures["ttft"] == f"{round(row['ttft_ms']):,} ms"
    link = page.find("answer-meta", a).find_element(By.CSS_SELECTOR, "a")
    assert link.get_attribute("href") == f"{proxy.url}/ui/log/inference_runs/{row['id']}"
    assert figures["row_id"] == str(row["id"])
    assert httpx.get(link.get_attribute("href")).status_code == 200


def test_a_second_turn_carries_the_first_exchange(page, proxy, upstream):
    page.open(models="openai/fake-model,mock/echo")
    page.ask("What is the capital of France?", 1)
    page.ask("And of Spain?", 2, keyboard=True)  # Ctrl+Enter runs it too
    assert page.driver.switch_to.active_element == page.find("prompt")  # focus back on the prompt box
    assert page.find("prompt").get_attribute("value") == ""
    sent = upstream.calls("fake-model")[-1].json["messages"]
    assert sent == [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": chat_answer("What is the capital of France?")},
        {"role": "user", "content": "And of Spain?"},
    ]
    mock_row = proxy.log.wait_row(page.meta("mock/echo")["request_id"])
    assert mock_row["prompt"] == (
        "user: What is the capital of France?\n\nassistant: Mock answer to: What is the capital of France?"
        "\n\nuser: And of Spain?"
    )
    assert mock_row["session_id"] == page.session() and loads(mock_row["tags"]) == ["playground"]
    assert loads(mock_row["metadata"])["turn"] == 2
    assert len(page.find_all("turn")) == 2  # one earlier turn in each column


def test_new_conversation_gets_a_new_session(page, proxy, upstream):
    page.open(models="openai/fake-model")
    page.ask("Remember the number 7.", 1)
    old = page.session()
    page.find("new-conversation").click()
    page.wait(lambda: page.session() != old, "a new session id")
    assert page.find_all("turn") == [] and page.text("answer", "openai/fake-model") == ""
    page.ask("What number?", 1)
    assert upstream.calls("fake-model")[-1].json["messages"] == [{"role": "user", "content": "What number?"}]
    rows = proxy.log.rows("session_id in (?, ?)", (old, page.session()))
    assert [(r["session_id"], loads(r["metadata"])["turn"]) for r in rows] == [(old, 1), (page.session(), 1)]
    assert page.find("conversation-link").get_attribute("href").endswith(f"/ui/log/conversation?session={page.session()}")


def test_personal_data_is_removed_before_it_is_sent_and_logged(page, proxy, upstream):
    page.open(models="openai/fake-model")
    page.find("preprocess-pii").click()
    page.ask("I am jane.doe@example.com, call +44 20 7946 0958 or (555) 123-4567", 1)
    sent = "I am [EMAIL], call [PHONE] or [PHONE]"
    recorded = upstream.calls("fake-model")[-1]
    assert recorded.json["messages"][-1]["content"] == sent
    assert b"jane.doe" not in recorded.raw_body and b"7946" not in recorded.raw_body
    figures = page.meta("openai/fake-model")
    row = proxy.log.wait_row(figures["request_id"])
    for column in ("prompt", "request_json", "response"):
        assert "jane.doe" not in row[column] and "7946" not in row[column] and "123-4567" not in row[column]
    assert loads(row["metadata"])["preprocess"] == {"pii": {"EMAIL": 1, "PHONE": 2}}
    assert loads(row["request_headers"])["x-study-preprocess"] == "pii"
    assert figures["preprocess"] == "pii: EMAIL 1, PHONE 2", figures
    assert page.text("answer", "openai/fake-model") == chat_answer(sent)
    assert page.columns()[0]["asked"] == sent  # the column shows what the model got


def test_an_upstream_error_shows_in_its_own_column(page, proxy):
    page.open(models="openai/fail-400-pg,mock/echo", prompt="Hello")
    page.find("run").click()
    assert page.wait_turn(1) == "Turn 1: 1 answered, 1 failed."
    failed, fine = page.columns()
    assert failed["state"] == "error" and failed["answer"] == ""
    assert failed["error"] == "HTTP 400: Fake upstream rejects model fail-400-pg."
    assert page.find("answer-error", "openai/fail-400-pg").get_attribute("role") == "alert"
    assert fine == {"model": "mock/echo", "state": "done", "asked": "Hello", "answer": "Mock answer to: Hello", "error": ""}
    row = proxy.log.wait_row(page.meta("openai/fail-400-pg")["request_id"])
    assert row["status_code"] == 400


def test_stop_cuts_the_answers_short(page, proxy, upstream):
    page.open(models="openai/slow-stream-a", prompt="Go on and on")
    page.find("run").click()
    page.wait(lambda: page.columns()[0]["answer"], "the first words")
    page.find("stop").click()
    assert page.wait_turn(1) == "Turn 1: 0 answered, 1 failed."
    column = page.columns()[0]
    assert column["error"] == "Stopped before the answer was complete."
    assert 0 < len(column["answer"]) < len(slow_answer())  # what had come stays on screen
    row = proxy.log.wait_row(page.meta("openai/slow-stream-a")["request_id"])
    assert row["error"] == "client_disconnected"
    page.ask("Again", 2)  # the page goes on: the stopped turn is not part of the history
    assert page.columns()[0]["state"] == "done"
    assert upstream.calls("slow-stream-a")[-1].json["messages"] == [{"role": "user", "content": "Again"}]


def test_query_parameters_prefill_the_page(page, upstream):
    page.open(models="mock/echo,openai/fake-model", prompt="Hello  world", system="Be terse.",
              preprocess="whitespace,pii,truncate=50,template=brief", temperature="0.3", max_tokens="64")
    assert page.find("prompt").get_attribute("value") == "Hello  world"
    assert page.find("system").get_attribute("value") == "Be terse."
    assert page.find("preprocess-pii").is_selected() and page.find("preprocess-whitespace").is_selected()
    assert page.find("preprocess-truncate").get_attribute("value") == "50"
    assert page.find("preprocess-template").get_attribute("value") == "brief"
    assert [c["model"] for c in page.columns()] == ["mock/echo", "openai/fake-model"]
    checked = [box.get_attribute("value") for box in page.find_all("model-option") if box.is_selected()]
    assert checked == ["openai/fake-model", "mock/echo"]  # listed order; the columns keep the link's order
    page.find("run").click()
    page.wait_turn(1)
    body = upstream.calls("fake-model")[-1].json
    assert body["messages"] == [{"role": "system", "content": "Be terse."},
                                {"role": "user", "content": "Briefly: Hello world"}]
    assert (body["temperature"], body["max_tokens"]) == (0.3, 64)
    assert page.text("answer", "mock/echo") == "Mock answer to: Briefly: Hello world"


def test_an_answer_cut_at_max_tokens_says_so(page):
    page.open(models="mock/echo", prompt="one two three four five", max_tokens="3")
    page.find("run").click()
    page.wait_turn(1)
    assert page.text("answer", "mock/echo") == "Mock answer to:"
    page.wait(lambda: "cut" in page.meta("mock/echo")["tokens"], "the row's figures")
    assert page.meta("mock/echo")["tokens"] == "8 (5 in, 3 out), cut: length"


def test_the_page_asks_for_the_proxy_key_once_and_keeps_it_for_the_tab(proxy_factory, driver):
    key = fake_key("sk-test-proxy")
    server = proxy_factory(env={"PG_CLIENT_KEY": key}, config='[clients]\ntester = { key_env = "PG_CLIENT_KEY" }\n',
                           ui=True)
    page = Playground(driver, server.url)
    page.open(models="mock/echo", ready=False)
    page.wait(page.key_asked, "the question for the key")
    assert "401" in page.text("key-why")
    assert driver.switch_to.active_element == page.find("key-input")
    page.find("key-input").send_keys(key)
    page.find("key-submit").click()
    page.wait(lambda: page.text("models-status") == "1 model listed by the proxy.", "the model list with the key")
    assert not page.key_asked()
    page.ask("Hi", 1)
    assert page.text("answer", "mock/echo") == "Mock answer to: Hi"
    row = server.log.wait_row(page.meta("mock/echo")["request_id"])
    assert row["client"] == "tester" and key not in json.dumps(dict(row))
    storage = page.storage()
    assert list(storage["session"].values()) == [key]
    assert storage["local"] == {} and storage["cookies"] == ""
    assert key not in driver.page_source
    page.open(models="mock/echo")  # the same tab: no second question
    assert not page.key_asked()
    assert page.text("models-status") == "1 model listed by the proxy."


def test_the_session_as_a_conversation_in_datasette(page):
    page.open(models="mock/echo,mock/other", system="You are a test.")
    page.ask("First question", 1)
    page.ask("Second question", 2)
    session = page.session()
    page.find("conversation-link").click()
    page.wait(lambda: page.driver.find_elements(By.CSS_SELECTOR, '[data-testid="conversation"]'), "the conversation")
    table = page.find("conversation")
    assert [th.text for th in table.find_elements(By.CSS_SELECTOR, "thead th")] == ["turn", "mock/echo", "mock/other"]
    lines = table.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert [line.get_attribute("data-turn") for line in lines] == ["1", "2"]
    for line, question in zip(lines, ["First question", "Second question"]):
        for model in ("mock/echo", "mock/other"):
            cell = line.find_element(By.CSS_SELECTOR, f'td[data-model="{model}"]')
            bubbles = [b.text for b in cell.find_elements(By.CSS_SELECTOR, ".bubble")]
            assert bubbles == [f"USER\n{question}", f"{model.upper()}\nMock answer to: {question}"]
    assert f"Session {session}: 2 turns, 2 models" in page.text("conversation-title")
    assert "You are a test." in page.driver.find_element(By.CSS_SELECTOR, ".system-prompt").text


def test_columns_wrap_on_a_narrow_window_and_fit_at_1280(page):
    page.open(models="mock/echo,mock/other")
    page.ask("Layout", 1)
    boxes = page.driver.execute_script(
        "return Array.from(document.querySelectorAll('[data-testid=column]')).map((c) => c.getBoundingClientRect().toJSON());"
    )
    assert boxes[0]["top"] == boxes[1]["top"] and boxes[0]["right"] <= boxes[1]["left"]  # side by side
    page.driver.set_window_size(420, 900)
    page.wait(lambda: page.driver.execute_script(
        "const c = document.querySelectorAll('[data-testid=column]');"
        "return c[1].getBoundingClientRect().top >= c[0].getBoundingClientRect().bottom;"), "the columns to wrap")
    assert page.driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")


def test_every_control_has_a_label(page):
    page.open(models="mock/echo")
    unlabelled = page.driver.execute_script(
        "return Array.from(document.querySelectorAll('input, textarea, select, button'))"
        ".filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())"
        ".map((e) => e.id || e.outerHTML);"
    )
    assert unlabelled == []
    assert page.driver.execute_script("return document.activeElement === document.body || !!document.activeElement")


def test_screenshot_of_two_columns_answered(page, tmp_path):
    """Also the picture in docs/playground.png: PLAYGROUND_SCREENSHOT=docs/playground.png pytest -k screenshot."""
    page.driver.set_window_size(1280, 1200)
    page.open(models="openai/gpt-4o-mini,mock/echo", system="Answer in one sentence.")
    page.find("preprocess-pii").click()
    page.ask("What is the capital of Australia?", 1)
    page.ask("And how do I reach its tourist office? I am jane@example.com.", 2)
    path = Path(os.environ.get("PLAYGROUND_SCREENSHOT") or tmp_path / "playground.png")
    page.driver.save_screenshot(str(path))
    assert path.stat().st_size > 30_000  # a blank or error page compresses to a few KB
    assert [c["state"] for c in page.columns()] == ["done", "done"]
    assert page.meta("openai/gpt-4o-mini")["cost"].startswith("$0.0000")  # priced by genai-prices
