# Choreo. `make run` and `make test` do all their own setup on a fresh clone.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TOOLS := $(CURDIR)/.tools
export PATH := $(TOOLS)/bin:$(CURDIR)/$(BIN):$(PATH)

# Fragments (k8s, observability) add targets and TEST_DEPS; included before the rules use them.
-include mk/*.mk

.PHONY: help venv run test lint typecheck unit pytest chaos bench clean

help: ## list targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,bench]'  # bench: the smoke test of the benchmarks runs in make test
	touch $(STAMP)

venv: $(STAMP) ## create .venv with every pinned dependency

run: $(STAMP) ## the whole system locally on an embedded NATS server (choreo up)
	$(BIN)/choreo up $(ARGS)

lint: $(STAMP) ## ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check common services tests

typecheck: $(STAMP) ## mypy (strict on common/)
	$(BIN)/mypy common services

pytest: $(STAMP) $(TEST_DEPS) ## the pytest suite only
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck pytest ## lint, types and the whole test suite (what CI runs)

chaos: $(STAMP) ## the big chaos suite (>= 10,000 orders) with a summary table
	CHOREO_CHAOS_ORDERS=$${CHOREO_CHAOS_ORDERS:-10000} $(BIN)/pytest tests/chaos -s --timeout 3600

bench: $(STAMP) ## benchmarks against raw nats-py and FastStream; results in bench/results/
	$(BIN)/pip install -q -e '.[dev,bench]'
	$(BIN)/python -m bench.run

clean: ## remove local state (.data) and tools
	rm -rf .data .tools

