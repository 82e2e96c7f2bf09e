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

.PHONY: chart-envoy
chart-envoy: $(STAMP) ## Regenerate the chart's Envoy template from tools/stack/envoy_config.render()
	$(PY) -m deploy.envoy_chart

.PHONY: helm-lint
helm-lint: $(STAMP) ## Chart checks: render every ci/ scenario with Helm, lint, strict k8s schemas, Envoy, k8s/ kustomize, images
	$(PY) -m deploy.envoy_chart --check
	$(PYTEST) -q tests/integration/test_helm_chart.py tests/integration/test_helm_embeddings.py \
		tests/integration/test_helm_features.py tests/integration/test_helm_tls.py \
		tests/integration/test_k8s_kustomize.py \
		tests/integration/test_wheel.py tests/e2e/test_chart_envoy.py

.PHONY: demo
demo: $(STAMP) ## Build the demo catalog and model (once), run the local stack, rank sample queries
	$(VENV)/bin/rankserve demo

.PHONY: up
up: $(STAMP) ## Run the local stack (ranker, Envoy, two model servers) until Ctrl-C
	$(VENV)/bin/rankserve up

.PHONY: lint
lint: $(STAMP) ## Lint with ruff
	$(PY) -m ruff check .

# mypy cannot follow setuptools' package-dir mapping: the import root is laid out as links under
# build/typecheck first (see [tool.mypy] in pyproject.toml for what is checked and how).
.PHONY: typecheck
typecheck: $(STAMP) ## Type-check with mypy (strict for the ranking core, rankserve.ranker)
	$(PY) scripts/typecheck_tree.py build/typecheck
	$(PY) -m mypy

# Debian packages the tests run for real: chromium renders the load-test report; prometheus
# evaluates dashboard queries and ships promtool for the alert-rule tests; redis-server backs
# the Redis feature store tests (on a unix socket, no TCP port).
SYSTEM_DEPS := chromium:chromium promtool:prometheus redis-server:redis-server

.PHONY: system-deps
system-deps: ## Install the Debian packages the tests need (chromium, prometheus, redis-server) when missing
	@missing=""; for dep in $(SYSTEM_DEPS); do \
	  command -v $${dep%%:*} >/dev/null 2>&1 || missing="$$missing $${dep#*:}"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; \
	else \
	  echo "missing Debian packages:$$missing; run 'sudo make system-deps' (tests that need them skip)"; \
	fi

.PHONY: test
test: $(STAMP) system-deps ## Run every test: unit, integration and e2e
	$(MAKE) proto-check
	$(PY) -m deploy.envoy_chart --check
	$(PYTEST) -q tests

.PHONY: test-unit
test-unit: $(STAMP) ## Run the unit tests only (fast, no processes)
	$(PYTEST) -q tests/unit

.PHONY: bench
bench: $(STAMP) ## Benchmark Rank through the stack (vs the transport floor, the compute floor, a naive client; model server vs echo; tracing off vs on; feature fetch; overload; a slow replica)
	$(PY) -m bench.rank_bench
	$(PY) -m bench.modelserver_bench
	$(PY) -m bench.tracing_bench
	$(PY) -m bench.rank_features_bench
	$(PY) -m bench.features_bench
	$(PY) -m bench.overload_bench
	$(PY) -m bench.slow_replica_bench

# Not in CI: it runs for SOAK_MINUTES (15 by default) and writes bench/results/soak.{json,md}.
SOAK_MINUTES ?= 15

.PHONY: soak
soak: $(STAMP) ## Soak the stack: Rank + Predict load, a replica restart and a version swap; fail on RSS/fd/thread growth
	$(PY) -m bench.soak --minutes $(SOAK_MINUTES)

.PHONY: clean
clean: ## Remove the virtual environment and caches (demo artifacts stay in ~/.cache/rankserve)
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
