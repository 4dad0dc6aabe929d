# Baclofen CDS — developer entry points. `make run` and `make test` are the quick start.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: run test lint format bench image-test clean system-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# `make run`: development with caller authentication OFF (a loud warning says so), so curl
# works. `make run AUTH=sandbox`: accept tokens from the public CDS Hooks sandbox only.
# `make run AUTH=enforce` needs CDS_TRUSTED_ISSUERS (docs/trust.md). Logs are plain text for
# the terminal; `make run LOG_FORMAT=json` shows the JSON lines a deployment writes.
AUTH ?= off
LOG_FORMAT ?= text
run: $(VENV)/.installed
	CDS_ENV=development CDS_AUTH_MODE=$(AUTH) CDS_LOG_FORMAT=$(LOG_FORMAT) \
		$(BIN)/baclofen-cds serve --host $(HOST) --port $(PORT)

# PostgreSQL server binaries for the @pytest.mark.postgres tests (the tests start their own
# throw-away server). Installed with apt-get when running as root; otherwise those tests
# skip and say why.
system-deps:
	@if ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null 2>&1; then \
		:; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql; \
	else \
		echo "PostgreSQL server binaries not found and not root: PostgreSQL tests will be skipped."; \
	fi

test: system-deps $(VENV)/.installed-test
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(VENV)/.installed-test
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Load benchmark report (benchmarks/README.md), e.g. make bench BENCH_ARGS="--duration 5".
bench: $(VENV)/.installed-test
	$(BIN)/python benchmarks/load.py $(BENCH_ARGS)

image-test:
	deploy/image-test.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
