# Every target installs what it needs first (tools/setup_env.sh is quick when
# the environment is already up to date).
VENV ?= .venv
PYTHON := $(VENV)/bin/python

.PHONY: env test lint demo

env:
	SLAK_VENV=$(VENV) bash tools/setup_env.sh

lint: env
	$(VENV)/bin/ruff check slak_mm tools tests configs
	$(VENV)/bin/ruff format --check slak_mm tools tests configs

test: lint
	$(PYTHON) -m pytest -q tests

demo: env
	$(PYTHON) tools/demo.py
