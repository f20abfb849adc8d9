# One-command entry points. `make demo` runs the main job on the embedded default;
# `make test` runs the test suite. Both set up .venv first when needed.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# CPU build stored on the dev/CI machines; keep the pin below 2.15.
TORCH   ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: setup test test-slow demo bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

# The main job on the embedded default: mini BRIDGE data, SFT of the tiny model, GRPO,
# greedy test accuracy. --resume makes a second `make demo` continue or reuse runs/demo.
demo: $(STAMP)
	$(BIN)/coinfluence train --bridge --out runs/demo --resume

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_generate.py
	$(BIN)/python benchmarks/bench_sft_tokens.py
	$(BIN)/python benchmarks/bench_rollout.py
	$(BIN)/python benchmarks/bench_influence.py

clean:
	rm -rf $(VENV) runs .pytest_cache
