# Baclofen CDS — developer entry points. `make run` and `make test` are the quick start.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8080
# Every install takes its versions from constraints.txt (the lock; `make lock` updates
# it): the developers' venvs, CI and the Dockerfile get the same packages, build backend
# included.
LOCK := constraints.txt
PIP_INSTALL = $(BIN)/python -m pip install --quiet --constraint $(LOCK) --build-constraint $(LOCK)
UV_VERSION := 0.13.9

.PHONY: run test lint format bench image-test clean system-deps lock

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --constraint $(LOCK) pip

$(VENV)/.installed: $(BIN)/python pyproject.toml $(LOCK)
	$(PIP_INSTALL) -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP_INSTALL) -e '.[test]'
	touch $@

# Re-resolve the lock from pyproject.toml and constraints.in (PyPI), keeping the pinned
# versions that still fit; LOCK_FLAGS=--upgrade takes the newest allowed versions of
# everything, LOCK_FLAGS="--upgrade-package gunicorn" of one package. Commit the result.
LOCK_FLAGS ?=
lock: $(BIN)/python
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)
	$(BIN)/uv pip compile --quiet --universal --python-version 3.11 --extra test \
		--custom-compile-command "make lock" $(LOCK_FLAGS) \
		--output-file $(LOCK) pyproject.toml constraints.in

# `make run`: development with caller authentication OFF (a loud warning says so), so curl
# works. `make run AUTH=sandbox`: accept tokens from the public CDS Hooks sandbox only.
# `make run AUTH=enforce` needs CDS_TRUSTED_ISSUERS (docs/trust.md). Logs are plain text for
# the terminal; `make run LOG_FORMAT=json` shows the JSON lines a deployment writes.
# The schema upgrade is its own step, before serving (docs/operations.md).
AUTH ?= off
LOG_FORMAT ?= text
run: $(VENV)/.installed
	CDS_ENV=development CDS_LOG_FORMAT=$(LOG_FORMAT) $(BIN)/baclofen-cds db upgrade
	CDS_ENV=development CDS_AUTH_MODE=$(AUTH) CDS_LOG_FORMAT=$(LOG_FORMAT) \
		$(BIN)/baclofen-cds serve --host $(HOST) --port $(PORT)

# PostgreSQL server binaries for the @pytest.mark.postgres tests, nginx for the served
# production topology (the tests start their own throw-away servers) and Debian's chromium,
# which Playwright drives through the console (tests/test_console_browser.py; Playwright's
# own browser download is not used). Installed with apt-get when running as root;
# otherwise those tests skip and say why.
system-deps:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null 2>&1 \
		|| missing="$$missing postgresql"; \
	command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	if [ -z "$$missing" ]; then \
		:; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	else \
		echo "Not found and not root:$$missing. The tests that need them will be skipped."; \
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
