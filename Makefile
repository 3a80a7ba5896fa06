# Every target works from a fresh clone: it creates .venv and installs what it needs first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: up test test-fast lint bench install browser prometheus services clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,load]' --config-settings editable_mode=compat
	touch $(STAMP)

install: $(STAMP)

## up: start the embedded platform (hub on :8600, engines, SPY replay). Ctrl-C stops it.
up: $(STAMP)
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
test: $(STAMP) browser prometheus services
	$(BIN)/python -m pytest -q

## test-fast: the pure layer (protocol, engine cores, layering): no services, seconds.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m pure

lint: $(STAMP)
	$(BIN)/ruff check protocol realtime engines loadtest tests
	$(BIN)/ruff format --check protocol realtime engines loadtest tests
	$(BIN)/mypy protocol realtime engines

## bench: every benchmark (each prints a table and writes loadtest/results/*.json); needs
## PostgreSQL (COPY figure) like the tests. About 5 minutes.
bench: $(STAMP) services
	$(BIN)/python -m loadtest.fanout
	$(BIN)/python -m loadtest.marketdata_bench
	taskset -c 0 $(BIN)/python -m loadtest.vpin_bench
	$(BIN)/python -m loadtest.vpin_e2e
	$(BIN)/python -m loadtest.records_bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
