# Every target works from a fresh clone: it creates .venv and installs what it needs first.
# Two stamps: `make up` installs the runtime dependencies only; test, lint and bench add the
# dev and load extras (pytest, mypy, Playwright, the reference libraries, Locust ...).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RUNTIME_STAMP := $(VENV)/.installed-runtime
DEV_STAMP     := $(VENV)/.installed-dev

.PHONY: up test test-fast lint bench screenshot install install-dev browser prometheus services clean

$(RUNTIME_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e . --config-settings editable_mode=compat
	touch $(RUNTIME_STAMP)

$(DEV_STAMP): $(RUNTIME_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,load]' --config-settings editable_mode=compat
	touch $(DEV_STAMP)

## install: the platform and its runtime dependencies only (what `make up` needs).
install: $(RUNTIME_STAMP)

## install-dev: plus the dev and load extras (what test, lint and bench need).
install-dev: $(DEV_STAMP)

## up: start the embedded platform (hub on :8600, engines, SPY replay). Ctrl-C stops it.
up: $(RUNTIME_STAMP)
	$(BIN)/nautilus up

## browser: Debian's Chromium for the page test (Playwright drives /usr/bin/chromium).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

## prometheus: Debian's prometheus + promtool, for the dashboard test against a real Prometheus.
prometheus:
	@bash infra/scripts/install-prometheus.sh

## services: start PostgreSQL and Redis when they are installed but down (CI machines).
services:
	@bash infra/scripts/ensure-services.sh

## test: the whole suite against real PostgreSQL, Redis and Chromium.
test: $(DEV_STAMP) browser prometheus services
	$(BIN)/python -m pytest -q

## test-fast: the pure layer (protocol, engine cores, layering): no services, seconds.
test-fast: $(DEV_STAMP)
	$(BIN)/python -m pytest -q -m pure

lint: $(DEV_STAMP)
	$(BIN)/ruff check protocol realtime engines loadtest tests nautilus_realtime.py
	$(BIN)/ruff format --check protocol realtime engines loadtest tests nautilus_realtime.py
	$(BIN)/mypy protocol realtime engines nautilus_realtime.py

## bench: every benchmark (each prints a table and writes loadtest/results/*.json); needs
## PostgreSQL (COPY figure) like the tests.
bench: $(DEV_STAMP) services
	$(BIN)/python -m loadtest.fanout
	$(BIN)/python -m loadtest.marketdata_bench
	taskset -c 0 $(BIN)/python -m loadtest.vpin_bench
	$(BIN)/python -m loadtest.vpin_e2e
	$(BIN)/python -m loadtest.records_bench
	$(BIN)/python -m loadtest.rest_bench

## screenshot: regenerate docs/ui.png (the trading UI over a replayed SPY day; needs Chromium).
screenshot: $(DEV_STAMP) browser
	$(BIN)/python infra/scripts/screenshot.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
