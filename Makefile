# Concord: `make dev` runs it, `make test` tests it. `make help` lists the rest.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev
BENCH_STAMP := $(VENV)/.installed-bench
PYTEST_ARGS ?=
BENCH_ARGS ?=
MUTATION_STAMP := $(VENV)/.installed-mutation
MUTATION_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help dev test test-fast test-js test-js-browser vectors coverage-crdt mutation lint typecheck check bench bench-e2e lab clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	touch $(BENCH_STAMP)

$(MUTATION_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,mutation]'
	touch $(MUTATION_STAMP)

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

dev: $(STAMP) ## set up, then run Concord on embedded PostgreSQL and NATS (localhost:8000)
	$(BIN)/concord dev

test: $(STAMP) test-js ## set up, then run the whole test suite (embedded services unless CONCORD_TEST_* are set)
	$(BIN)/pytest -n 2 --dist loadfile -p no:cacheprovider $(PYTEST_ARGS)

test-js: ## the JavaScript client's unit and vector tests (Node.js 20+; its e2e runs under pytest)
	node --test js/test/

test-js-browser: ## the client in headless Chromium: module loading, IndexedDBStore (needs chromium; make test runs it too)
	node js/browser/run.js

vectors: $(STAMP) ## regenerate the shared CRDT test vectors (js/vectors/*.json) from crdt/
	$(BIN)/python -m tests.vectors.generate

test-fast: $(STAMP) ## unit and property tests only (no services)
	$(BIN)/pytest -p no:cacheprovider tests/unit tests/property $(PYTEST_ARGS)

coverage-crdt: $(STAMP) ## crdt/ must stay at 100% line and branch coverage
	$(BIN)/pytest -n 2 -p no:cacheprovider -q tests/unit/test_crdt_*.py tests/property \
		--cov=crdt --cov-branch --cov-report=term-missing:skip-covered --cov-fail-under=100

mutation: $(MUTATION_STAMP) ## mutmut over the core, niced (about 4 h here; not in CI; MUTATION_ARGS="crdt --diff")
	$(BIN)/python -m tests.mutation.run $(MUTATION_ARGS)

lint: $(STAMP) ## ruff check and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP) ## mypy --strict
	$(BIN)/mypy

check: lint typecheck test coverage-crdt ## what CI runs

bench: $(BENCH_STAMP) ## run the benchmarks (results: docs/benchmarks.md)
	$(BIN)/python -m bench.crdt_bench
	$(BIN)/python -m bench.eventstore_bench

bench-e2e: $(BENCH_STAMP) ## the whole system end to end, each workload (BENCH_ARGS="--quick --record")
	$(BIN)/python -m bench.e2e.all $(BENCH_ARGS)

clean: ## remove the virtual environment and caches (keeps .concord data)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
