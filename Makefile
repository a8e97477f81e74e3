# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint typecheck unit integration bench bench-quick broker-start broker-stop clean tools browser deploy-tools

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

test: venv lint typecheck browser deploy-tools
	$(BIN)/pytest -q

# The deploy tier's tools (tests/deploy): apt packages, Go tools built from source into .tools/
# (cold: ~10 min on 2 idle cores, 42 min measured on 2 cores shared by 7 engineers; warm: 0.1 s),
# the debootstrap base image (cold ~2 min, then cached in .tools/image).
deploy-tools: venv
	tools/deploy-deps.sh
	tools/k8s/build.sh
	tools/image/base.sh >/dev/null

# Full benchmark suite against a broker each benchmark starts itself (~40 min on 2 cores).
bench: venv
	$(BIN)/python bench/peers.py
	$(BIN)/python -m bench.eos
	$(BIN)/python -m bench.latency
	$(BIN)/python -m bench.prefetch
	$(BIN)/python -m bench.memory
	$(BIN)/python -m bench.passthrough
	$(BIN)/python -m bench.passthrough --contenders kstream-bytes,kstream-bytes-metrics,kstream-bytes-tracing,kstream-bytes-tracing-sdk --name passthrough-observe
	$(BIN)/python -m bench.observe_cost
	$(BIN)/python -m bench.ratelimit
	$(BIN)/python -m bench.workflows
	$(BIN)/python -m bench.report

# The same, scaled down (~8 min): for a quick look, not for the figures.
bench-quick: venv
	$(BIN)/python bench/peers.py --messages 200000 --repeat 1 --faust-messages 20000
	$(BIN)/python -m bench.eos --messages 100000 --repeat 1
	$(BIN)/python -m bench.latency --seconds 10 --variants default,tuned
	$(BIN)/python -m bench.prefetch
	$(BIN)/python -m bench.memory --messages 1000000 --first 200000 --backlog 100000
	$(BIN)/python -m bench.report

# Pinned load generator for bench.workflows, built from the Go module proxy into .tools/ (ignored).
tools: .tools/bin/vegeta

.tools/bin/vegeta:
	GOBIN=$(CURDIR)/.tools/bin go install github.com/tsenart/vegeta/v12@v12.13.0

# The console tests drive Debian's chromium through Playwright (Playwright's own browser
# download cannot work here): installed from apt when missing.
browser:
	@test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)

broker-start: venv
	$(BIN)/kstream dev broker start

broker-stop: venv
	$(BIN)/kstream dev broker stop

clean:
	-$(BIN)/kstream dev broker stop
	rm -rf .kstream .pytest_cache .mypy_cache .ruff_cache
