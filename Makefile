# Two commands set everything up on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: serve test test-fast lint typecheck pytest pytest-fast bench clean redis-server screenshots

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

# Browser tests drive Debian's chromium through Playwright (whose own browser download is
# not used): install the package when it is missing, or stop with one line naming it.
$(VENV)/.chromium: $(VENV)/.test-deps
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium) \
		|| { echo "make: the tests need the Debian package chromium"; exit 1; }
	touch $@

# The tests start real redis-server processes (the many-machines configuration). We are root on
# the test machines: install the Debian package when it is missing, else fail in one line.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] \
		&& (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >/dev/null 2>&1; } \
		|| { echo "make: the tests need redis-server: install the Debian package redis-server" >&2; exit 1; }

pytest: $(VENV)/.test-deps $(VENV)/.chromium redis-server
	$(BIN)/pytest

test: lint typecheck pytest

# Daily work: everything but the tests marked slow (memory bounds under load, crash and
# restart, fuzzing, hundreds of clients). The full suite stays `make test`, as in CI.
pytest-fast: $(VENV)/.test-deps $(VENV)/.chromium redis-server
	$(BIN)/pytest -m "not slow"

test-fast: lint typecheck pytest-fast

# The README's pictures of the dashboard, taken by its browser test on a fresh server.
screenshots: $(VENV)/.test-deps $(VENV)/.chromium
	PERICLES_SCREENSHOTS=docs $(BIN)/pytest -q tests/test_dashboard.py -k test_screenshots

bench: $(VENV)/.test-deps
	$(BIN)/python bench/throughput.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
