# Two commands do everything: `make demo` and `make test`. Both create (or reuse) .venv in the checkout.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ucr-installed
# CPU torch: this wheel version lies on local disk here (pip's find-links); elsewhere the PyTorch CPU index serves it.
TORCH_CPU_VERSION ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: demo test test-slow test-all bench venv system-deps clean

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@$(MAKE) --no-print-directory system-deps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "[setup] CUDA found: installing the default torch build"; \
		$(PY) -m pip install -q "torch>=2.4"; \
	elif $(PY) -c "import torch" 2>/dev/null; then \
		echo "[setup] torch already installed: $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	else \
		echo "[setup] no CUDA: installing a CPU build of torch"; \
		$(PY) -m pip install -q "torch==$(TORCH_CPU_VERSION)+cpu" \
		  || $(PY) -m pip install -q torch --index-url $(TORCH_CPU_INDEX); \
	fi
	$(PY) -m pip install -q -c requirements.lock -e ".[dev]"
	@touch $(STAMP)

# System packages, installed with apt where the machine allows it: FluidSynth (a library) renders the synthetic data;
# Chromium and its driver run the web page's browser test (tests/test_serve.py).
system-deps:
	@missing=""; \
	$(PYTHON) -c "import ctypes.util,sys; sys.exit(0 if ctypes.util.find_library('fluidsynth') else 1)" \
	  || missing="$$missing libfluidsynth3"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null 2>&1 || missing="$$missing chromium-driver"; \
	if [ -z "$$missing" ]; then \
		true; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "[setup] installing$$missing with apt-get"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
		  || echo "[setup] WARNING: could not install$$missing (FluidSynth renders the synthetic data; Chromium runs the web page's test)"; \
	else \
		echo "[setup] WARNING: missing system packages:$$missing; install them (Debian/Ubuntu names; brew: fluid-synth, chromium, chromedriver)"; \
	fi

demo: $(STAMP)
	RAY_AUTH_MODE=$${RAY_AUTH_MODE:-disabled} $(VENV)/bin/ucr demo

test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q

test-slow: $(STAMP)  # exit status 5 (no test selected) is not a failure
	$(PY) -m pytest -m "slow" -q || test $$? -eq 5

test-all: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) tests/benchmarks/bench_codec.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
