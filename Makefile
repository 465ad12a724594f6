# Two commands on a fresh machine: `make run` (pipeline on the default params) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(BIN):$(PATH)
export PYTHONPATH := $(CURDIR)/src

.PHONY: setup run test test-fast ui bench notebook lint format lock clean

setup: $(STAMP)

# --no-deps: the lock pins every package; keras-rl2 and tf-keras would otherwise pull the full
# `tensorflow` wheel beside tensorflow-cpu (1.6x slower updates).
$(STAMP): requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements.lock
	touch $(STAMP)

run: setup
	dvc repro

test: setup
	pytest -q -rs

test-fast: setup
	pytest -q -m "not e2e"

ui: setup
	mlflow server --backend-store-uri sqlite:///$(CURDIR)/mlflow.db \
		--default-artifact-root $(CURDIR)/mlruns --host 127.0.0.1 --port 5000

bench: setup
	python benchmarks/bench.py

lint: setup
	ruff check src stages tests benchmarks
	ruff format --check src stages tests benchmarks

format: setup
	ruff format src stages tests benchmarks
	ruff check --fix src stages tests benchmarks

lock: setup
	(echo "# Every package of the environment, pinned; installed with --no-deps. Regenerate: make lock"; \
	 $(BIN)/pip freeze --all) > requirements.lock
