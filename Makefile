# The commands the README names. Everything runs from a clean clone on Python 3.11.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev
DEMO_STAMP := $(VENV)/.installed-all
export RAY_USAGE_STATS_ENABLED := 0
export RAY_AUTH_MODE := disabled
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install system-deps demo test test-unit test-integration test-e2e test-browser lint typecheck bench openapi clean

# torch is pinned in the worker extra; installing it first keeps pip on the local CPU build.
define venv_install
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[$(1)]'
	@touch $@
endef

$(STAMP): pyproject.toml
	$(call venv_install,dev)
	@touch $(DEMO_STAMP)

$(DEMO_STAMP): pyproject.toml
	$(call venv_install,all)

install: $(STAMP) system-deps

system-deps:
	@bash scripts/system-deps.sh test

demo: $(DEMO_STAMP)
	@bash scripts/system-deps.sh demo
	$(PY) -m grace_selection.cli demo

test: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports
	$(PY) -m pytest tests -m "unit or integration or e2e or browser" -p no:cacheprovider

test-unit: $(STAMP)
	$(PY) -m pytest tests -m unit

test-integration: install
	$(PY) -m pytest tests -m integration

test-e2e: install
	$(PY) -m pytest tests -m e2e

test-browser: install
	$(PY) -m pytest tests -m browser

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

bench: $(STAMP)
	mkdir -p docs/results
	$(PY) benchmarks/selection.py --sizes 100000,1000000 --json docs/results/selection.json
	$(PY) -m grace_lab.quality_synthetic --seeds 0,1,2 --json docs/results/quality_synthetic.json
	$(PY) benchmarks/service.py --json docs/results/service.json --markdown docs/results/service.md
	$(PY) benchmarks/scoring.py --json docs/results/scoring.json

# The OpenAPI document of the v1 API; a unit test fails when it is stale.
openapi: $(STAMP)
	$(PY) -m grace_selection.cli openapi --output proto/openapi.json

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build *.egg-info
