# OpsDash developer commands. Everything sets itself up on a fresh clone.
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed
NOTEBOOK_STAMP = $(VENV)/.notebook-installed
BENCH_STAMP = $(VENV)/.bench-installed
PORT   ?= 5006

.PHONY: install serve notebook test test-fast bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## serve: the demo dashboard on http://localhost:$(PORT) (SQLite under ./var, seeded, logins printed)
serve: install
	$(VENV)/bin/opsdash serve --demo --port $(PORT)

$(NOTEBOOK_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[test,notebook]'
	touch $(NOTEBOOK_STAMP)

## notebook: JupyterLab on examples/opsdash_dashboard.ipynb, reading the demo database of `make serve` (./var)
# The venv's bin/ first on PATH: the installed kernel spec starts `python` from PATH.
# Jupyter refuses to run as root without --allow-root; this project's machines and containers run as root.
notebook: $(NOTEBOOK_STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) \
	    examples/opsdash_dashboard.ipynb $(NOTEBOOK_ARGS)

## test: the whole suite (PostgreSQL/Redis/browser tests skip locally when absent, fail under CI=true)
test: install
	$(PY) -m pytest $(PYTEST_ARGS)

## test-fast: everything but browser and slow tests
test-fast: install
	$(PY) -m pytest -m "not browser and not slow" $(PYTEST_ARGS)

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $(BENCH_STAMP)

## bench: benchmarks that print figures (see docs/performance.md); installs the bench extra
bench: $(BENCH_STAMP)
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) var .pytest_cache test-output
