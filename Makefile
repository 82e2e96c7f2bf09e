# rankserve: `make` lists the targets. Everything runs from the virtual environment in .venv/,
# which the first target that needs it creates.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST := $(PY) -m pytest -p no:cacheprovider

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

.PHONY: install
install: $(STAMP) ## Create .venv/ and install rankserve with every extra

.PHONY: proto
proto: $(STAMP) ## Regenerate Python code from protos/
	PYTHON=$(PY) scripts/gen_protos.sh

.PHONY: proto-check
proto-check: $(STAMP) ## Fail when the generated code under protos/ is stale
	PYTHON=$(PY) scripts/gen_protos.sh
	@git diff --exit-code --stat -- protos || { echo "generated code is stale: run 'make proto' and commit"; exit 1; }
	@test -z "$$(git status --porcelain --untracked-files=all -- protos)" || { git status --short -- protos; echo "untracked generated files: run 'make proto' and commit"; exit 1; }

.PHONY: demo
demo: $(STAMP) ## Build the demo catalog and model (once), run the local stack, rank sample queries
	$(VENV)/bin/rankserve demo

.PHONY: up
up: $(STAMP) ## Run the local stack (ranker, Envoy, two model servers) until Ctrl-C
	$(VENV)/bin/rankserve up

.PHONY: lint
lint: $(STAMP) ## Lint with ruff
	$(PY) -m ruff check .

# Prometheus and promtool (Debian package `prometheus`) run in the e2e and alert-rule tests.
# Installed when missing and we are root (CI); otherwise say how, and those tests skip (or fail
# under CI=true).
.PHONY: test-tools
test-tools: ## Install the programs the tests run (Debian prometheus, for promtool too)
	@if command -v prometheus >/dev/null && command -v promtool >/dev/null; then \
		echo "prometheus and promtool: installed"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y \
			--no-install-recommends prometheus; \
	else \
		echo "prometheus is missing: sudo apt-get install -y --no-install-recommends prometheus"; \
	fi

.PHONY: test
test: $(STAMP) test-tools ## Run every test: unit, integration and e2e
	$(MAKE) proto-check
	$(PYTEST) -q tests

.PHONY: test-unit
test-unit: $(STAMP) ## Run the unit tests only (fast, no processes)
	$(PYTEST) -q tests/unit

.PHONY: bench
bench: $(STAMP) ## Benchmark Rank through the stack (vs the compute floor, a naive client; tracing off vs on)
	$(PY) -m bench.rank_bench
	$(PY) -m bench.tracing_bench

.PHONY: clean
clean: ## Remove the virtual environment and caches (demo artifacts stay in ~/.cache/rankserve)
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
