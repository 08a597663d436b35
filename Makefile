# Every target builds its own virtual environment in .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test test-fast lint bench chaos chaos-mutants clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.demo-installed: pyproject.toml setup.py $(wildcard src/mongo_backup/archive/_canonical*.[ch]) | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[demo]'
	touch $@

$(VENV)/.test-installed: pyproject.toml setup.py $(wildcard src/mongo_backup/archive/_canonical*.[ch]) | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test,demo]'
	touch $@

## make demo: embedded server, demo database, backup -> verify -> restore -> compare
demo: $(VENV)/.demo-installed
	$(BIN)/mongo-backup demo

## make test: the whole test suite (starts its own SecantusDB server; MONGO_TEST_URI overrides)
test: $(VENV)/.test-installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## make test-fast: the unit tests that need no server (under a minute)
test-fast: $(VENV)/.test-installed
	$(BIN)/python -m pytest -m "not server" $(PYTEST_ARGS)

## make lint: ruff (rules and formatting) and mypy --strict
lint: $(VENV)/.test-installed
	$(BIN)/ruff check src tests bench backup_dtb fuzz chaos
	$(BIN)/ruff format --check src tests bench backup_dtb fuzz chaos
	$(BIN)/mypy

## make chaos: the seeded fault campaign (CHAOS_MINUTES, default 10; CHAOS_SEED replays)
CHAOS_MINUTES ?= 10
chaos: $(VENV)/.test-installed
	CHAOS_MINUTES=$(CHAOS_MINUTES) $(BIN)/python chaos/campaign.py $(CHAOS_ARGS)

## make chaos-mutants: two deliberately broken builds, each must be caught within 5 minutes
chaos-mutants: $(VENV)/.test-installed
	$(BIN)/python chaos/mutants.py

## make bench: speed and memory against the baselines in ../shared/bench (several minutes)
bench: $(VENV)/.test-installed
	$(BIN)/python bench/bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) demo-backups bench/results .pytest_cache .mypy_cache .ruff_cache
