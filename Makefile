# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test fuzz venv clean

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

# The compiled modules (src/edgeway/http/*.c) built with ASan + UBSan into build/fuzz/ and driven
# by atheris for FUZZ_SECONDS per target (fuzz/run.py; docs/http.md, "Fuzzing the compiled parts").
FUZZ_SECONDS ?= 15
FUZZ_TARGETS ?=
$(VENV)/.installed-fuzz: pyproject.toml setup.py $(wildcard src/edgeway/http/*.c src/edgeway/http/*.h) | $(BIN)/python
	$(BIN)/python -m pip install -q --prefer-binary -e '.[test,fuzz]'
	touch $@

fuzz: $(VENV)/.installed-fuzz
	$(BIN)/python fuzz/run.py --seconds $(FUZZ_SECONDS) $(FUZZ_TARGETS)

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache src/edgeway/http/_*.so
