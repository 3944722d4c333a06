# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test venv clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed-test: pyproject.toml setup.py $(wildcard src/edgeway/http/*.c src/edgeway/http/*.h) | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

$(VENV)/.installed: pyproject.toml setup.py $(wildcard src/edgeway/http/*.c src/edgeway/http/*.h) | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/edgeway demo

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache src/edgeway/http/_*.so
