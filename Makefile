# Every target installs what it needs first (tools/misc/setup_env.sh is quick when
# the environment is already up to date).
VENV ?= .venv
PYTHON := $(VENV)/bin/python

.PHONY: env test lint demo demo-quick

env:
	SLAK_VENV=$(VENV) bash tools/misc/setup_env.sh

lint: env
	$(VENV)/bin/ruff check slak_mm tools tests configs
	$(VENV)/bin/ruff format --check slak_mm tools tests configs

test: lint
	$(PYTHON) -m pytest -q tests

# Trains SLaK, a 7x7 baseline and SLaK with frozen large kernels on data that
# needs long-range context; fails unless SLaK wins by 10 mIoU points.
demo: env
	$(PYTHON) tools/misc/demo_context.py

# The pipeline smoke test: one small SLaK UperNet on easy generated data.
demo-quick: env
	$(PYTHON) tools/misc/demo.py
