# One command sets everything up and runs the job: `make demo`, `make test`.
# The virtual environment lives in .venv; PyTorch is pinned by constraints.txt (an unpinned
# torch would pull a multi-GB CUDA build on a CPU machine).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
DEMO_OUT ?= runs/demo
BUDGET ?= quick
export HF_HUB_OFFLINE := 1

.PHONY: setup demo test lint format bench

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/svq demo --out $(DEMO_OUT) --budget $(BUDGET)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest -q -n 2

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: setup
	$(PY) benchmarks/model.py
