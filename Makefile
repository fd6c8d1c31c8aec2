# Two commands set everything up on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: serve test test-fast lint typecheck pytest pytest-fast bench clean

$(BIN)/handler-serve: pyproject.toml requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.test-deps: $(BIN)/handler-serve
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

serve: $(BIN)/handler-serve
	$(BIN)/handler-serve --host $(HOST) --port $(PORT)

lint: $(VENV)/.test-deps
	$(BIN)/ruff format --check src tests bench
	$(BIN)/ruff check src tests bench

typecheck: $(VENV)/.test-deps
	$(BIN)/mypy

pytest: $(VENV)/.test-deps
	$(BIN)/pytest

test: lint typecheck pytest

# Daily work: everything but the tests marked slow (memory bounds under load, crash and
# restart, fuzzing, hundreds of clients). The full suite stays `make test`, as in CI.
pytest-fast: $(VENV)/.test-deps
	$(BIN)/pytest -m "not slow"

test-fast: lint typecheck pytest-fast

bench: $(VENV)/.test-deps
	$(BIN)/python bench/throughput.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
