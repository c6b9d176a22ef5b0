# Every target installs what it needs first (tools/misc/setup_env.sh is quick when
# the environment is already up to date).
VENV ?= .venv
PYTHON := $(VENV)/bin/python

.PHONY: env test test-avx2 lint demo demo-quick

env:
	SLAK_VENV=$(VENV) bash tools/misc/setup_env.sh

lint: env
	$(VENV)/bin/ruff check slak_mm tools tests configs
	$(VENV)/bin/ruff format --check slak_mm tools tests configs

test: lint
	$(PYTHON) -m pytest -q tests

# The CPU-capability tests (marker cpu_capability) as an AVX2-only CPU runs
# them: oneDNN without bf16/fp16 kernels, ATen without AVX-512, on any newer
# CPU. The caps must be set before torch starts, hence their own process.
# Not -q: pytest's header names the capabilities seen; -rs the skip reasons.
AVX2_CAPS := ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2
test-avx2: env
	$(AVX2_CAPS) $(PYTHON) -m pytest -rs -m cpu_capability tests

# Trains SLaK, a 7x7 baseline and SLaK with frozen large kernels on data that
# needs long-range context; fails unless SLaK wins by 10 mIoU points.
demo: env
	$(PYTHON) tools/misc/demo_context.py

# The pipeline smoke test: one small SLaK UperNet on easy generated data.
demo-quick: env
	$(PYTHON) tools/misc/demo.py
