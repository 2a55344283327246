# The two commands of the README, and a few helpers. Each target installs what it needs into
# ./.venv first (once per change of pyproject.toml or requirements.lock).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test ui bench install

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

## Runs the main job on the embedded SQLite default (no server needed).
demo: $(STAMP)
	$(BIN)/attribution demo

## Runs the whole test suite (needs MariaDB/MySQL; see README).
test: $(STAMP)
	$(BIN)/pytest -q -n 2

## Opens the Dagster UI on the demo's instance.
ui: $(STAMP)
	mkdir -p .attribution/dagster
	test -f .attribution/dagster/dagster.yaml || cp dagster.yaml .attribution/dagster/dagster.yaml
	DAGSTER_HOME=$(CURDIR)/.attribution/dagster ATTRIBUTION_HOME=$(CURDIR)/.attribution $(BIN)/dagster dev -w workspace.yaml

## Benchmarks (method and figures: bench/RESULTS.md).
bench: $(STAMP)
	$(BIN)/python -m bench.run
