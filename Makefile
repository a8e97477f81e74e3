# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint typecheck unit integration bench broker-start broker-stop clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: venv
	$(BIN)/kstream dev broker start
	$(BIN)/python examples/demo.py

lint: venv
	$(BIN)/ruff check kstream tests bench examples

typecheck: venv
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest -q -m "not integration"

test: venv lint typecheck
	$(BIN)/pytest -q

bench: venv
	$(BIN)/python bench/passthrough.py

broker-start: venv
	$(BIN)/kstream dev broker start

broker-stop: venv
	$(BIN)/kstream dev broker stop

clean:
	-$(BIN)/kstream dev broker stop
	rm -rf .kstream .pytest_cache .mypy_cache .ruff_cache
