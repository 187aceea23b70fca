# Two commands on a fresh machine: `make demo` (the main job on the embedded default) and
# `make test` (the test suite). Each creates .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint retrain bench

$(BIN)/ponder: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $@

demo: $(BIN)/ponder
	$(BIN)/ponder demo

test: $(BIN)/ponder
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest

lint: $(BIN)/ponder
	$(BIN)/ruff check src tests benchmarks

# Retrain every embedded model from scratch (policy, rollout labels, verifier) and install the
# weights into the package. Resumable: rerun after an interruption.
retrain: $(BIN)/ponder
	$(BIN)/ponder train all --install

bench: $(BIN)/ponder
	$(BIN)/python benchmarks/bench_generation.py
	$(BIN)/python benchmarks/bench_int8.py
