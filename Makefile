# Two commands on a fresh machine:
#   make demo   - set up a virtualenv, generate a tiny model, run two instances, query them
#   make test   - set up a virtualenv with the test tools (builds the real llama-server once)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The real llama-server (test dependency) is compiled by pip from source: keep it lean.
export CMAKE_ARGS ?= -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF
export LLAMA_CPP_BUILD_JOBS ?= 2
PYTEST_ARGS ?=

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[demo]'
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@ $(VENV)/.runtime

demo: $(VENV)/.runtime
	$(BIN)/python scripts/demo.py

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/mypy

test: $(VENV)/.dev
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/mypy
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.dev
	$(BIN)/python bench/bench_core.py

clean:
	rm -rf $(VENV) .demo
