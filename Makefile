# Two entry points: `make demo` and `make test`. Both build .venv from scratch when needed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench bench-peers clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

test: lint typecheck pytest

# Every benchmark, medians of several runs; prints the table and the time it took, writes
# benchmarks/results/all.json and the README's Performance table (benchmarks/results/README.md).
# ARGS="--quick" for a smoke run, ARGS="durable growth" for some modules only.
bench: $(STAMP)
	$(BIN)/python -m benchmarks $(ARGS)

bench-peers:
	$(PY) benchmarks/peers/run.py $(ARGS)

clean:
	rm -rf $(VENV)
