PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/study-query-llm serve

# tests/test_dashboard_browser.py drives headless Chromium; it skips itself without one. Here
# (root with apt-get, as in CI) Debian's chromium is installed when missing; elsewhere, a note.
test: $(VENV)/.installed-dev
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium for the browser test (apt-get)"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	        chromium fonts-liberation >/dev/null; } || echo "note: chromium not installed: the browser test will skip"; \
	  else echo "note: no chromium (apt-get install chromium): the browser test will skip"; fi
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) build *.egg-info
