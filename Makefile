# One-command entry points. `make demo` runs the main job on the embedded default;
# `make test` runs the test suite. Both set up .venv first when needed.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# CPU build stored on the dev/CI machines; keep the pin below 2.15.
TORCH   ?= torch==2.13.0
PYTEST_ARGS ?=
BENCH_VENV ?= .venv-bench

.PHONY: setup test test-slow demo bench figures clean

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

# The main job on the embedded default: mini2 BRIDGE data, SFT of the tiny model, GRPO,
# greedy test accuracy, analysis of the SFT model. At one thread it repeats the training of the
# study's unit bridge-s0 (figures/results/bridge-s0) on the same CPU kernels. --resume makes a
# second `make demo` continue or reuse runs/demo.
demo: $(STAMP)
	$(BIN)/coinfluence --threads 1 train --bridge --out runs/demo --resume
	test -f runs/demo/analysis/sft/summary.json || $(BIN)/coinfluence --threads 1 analyze --ckpt runs/demo/sft --run runs/demo --no-kernel

# Benchmarks run in their own venv with the peers of the `bench` extra (TRL, dattri), so the
# test venv never sees them. Kronfluence declares torchvision, which does not work beside the
# CPU torch: it goes in with --no-deps (what it really imports is in the extra).
$(BENCH_VENV)/.installed: pyproject.toml
	test -x $(BENCH_VENV)/bin/python || $(PY) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install -q "$(TORCH)"
	echo "$(TORCH)" > $(BENCH_VENV)/constraints.txt
	$(BENCH_VENV)/bin/python -m pip install -q -c $(BENCH_VENV)/constraints.txt -e ".[dev,bench]"
	$(BENCH_VENV)/bin/python -m pip install -q --no-deps "kronfluence==1.0.1"
	touch $@

bench: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python benchmarks/bench_generate.py
	$(BENCH_VENV)/bin/python benchmarks/bench_sft_tokens.py
	$(BENCH_VENV)/bin/python benchmarks/bench_rollout.py
	$(BENCH_VENV)/bin/python benchmarks/bench_influence.py
	$(BENCH_VENV)/bin/python benchmarks/bench_peers.py
	$(BENCH_VENV)/bin/python benchmarks/bench_grpo_trl.py
	$(BENCH_VENV)/bin/python benchmarks/bench_scaling.py

# The paper's diagnostics: run the missing (variant, seed) units, then redraw figures/*.png and Table 1,
# and the figures of the progress setting's units (figures/rl-progress/).
figures: $(STAMP)
	$(BIN)/python figures/make_figures.py
	$(BIN)/python figures/make_figures.py --rl progress

clean:
	rm -rf $(VENV) runs .pytest_cache
