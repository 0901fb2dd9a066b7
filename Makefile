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

# The browser tests drive headless Chromium (tests/test_dashboard_browser.py alone, the playground's
# through selenium and chromedriver); they skip themselves without them. Here (root with apt-get, as
# in CI) Debian's chromium and chromium-driver are installed when missing; elsewhere, a note.
test: $(VENV)/.installed-dev
	@{ command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; } && \
	  command -v chromedriver >/dev/null 2>&1 || \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium and chromium-driver for the browser tests (apt-get)"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	        chromium chromium-driver fonts-liberation >/dev/null; } || echo "note: chromium not installed: the browser tests will skip"; \
	  else echo "note: no chromium or chromedriver (apt-get install chromium chromium-driver): the browser tests will skip"; fi
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) build *.egg-info

# --- benchmark (bench/README.md) ------------------------------------------------------------
# `make bench` runs every scenario (about 20 minutes); BENCH_ARGS passes options to bench/run.py,
# e.g. `make bench BENCH_ARGS="--quick --only b --targets direct,ours"`.
# matplotlib (bench/requirements.txt) goes into .venv; LiteLLM into its own venv, Portkey's gateway
# into its own node_modules (bench/.portkey, with npm), both pinned.
BENCH_ARGS ?=
LITELLM_VENV := bench/.venv-litellm
PORTKEY_DIR := bench/.portkey

.PHONY: bench

$(VENV)/.installed-bench: bench/requirements.txt $(VENV)/.installed
	$(BIN)/pip install --quiet -r bench/requirements.txt
	touch $@

# A failed LiteLLM install does not stop the bench: bench/run.py then says LiteLLM was skipped and why.
$(LITELLM_VENV)/.installed: bench/litellm/requirements.txt
	@mkdir -p bench/results
	@rm -f $@
	@echo "installing LiteLLM into $(LITELLM_VENV) (log: bench/results/litellm-install.log)"
	@( ( [ -x $(LITELLM_VENV)/bin/python ] || $(PYTHON) -m venv $(LITELLM_VENV) ) \
	  && $(LITELLM_VENV)/bin/pip install --upgrade pip \
	  && $(LITELLM_VENV)/bin/pip install -r bench/litellm/requirements.txt ) \
	  > bench/results/litellm-install.log 2>&1 \
	  && touch $@ \
	  || echo "LiteLLM could not be installed (see bench/results/litellm-install.log): the bench will skip it"

# The same for Portkey: npm ci from bench/portkey's package.json and package-lock.json, into bench/.portkey.
$(PORTKEY_DIR)/.installed: bench/portkey/package.json bench/portkey/package-lock.json
	@mkdir -p bench/results $(PORTKEY_DIR)
	@rm -f $@
	@echo "installing Portkey's gateway into $(PORTKEY_DIR) (log: bench/results/portkey-install.log)"
	@( cp bench/portkey/package.json bench/portkey/package-lock.json $(PORTKEY_DIR)/ \
	  && cd $(PORTKEY_DIR) && npm ci --no-audit --no-fund ) \
	  > bench/results/portkey-install.log 2>&1 \
	  && touch $@ \
	  || echo "Portkey could not be installed (see bench/results/portkey-install.log): the bench will skip it"

bench: $(VENV)/.installed-bench $(LITELLM_VENV)/.installed $(PORTKEY_DIR)/.installed
	@command -v wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk; }
	@command -v taskset >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq util-linux; }
	$(BIN)/python bench/run.py $(BENCH_ARGS)
