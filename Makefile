# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint typecheck unit integration bench bench-quick broker-start broker-stop clean tools browser deploy-tools system-tools

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

# Programs the tests run besides Python: kcat (interop tests), Java 17+ and Maven (the local
# broker and Kafka's own tools), ps. Missing ones are installed from Debian's apt (as root, or
# with sudo); the versions are pinned here (Debian 12) and can be overridden: make APT_KCAT=kcat.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_KCAT ?= kcat=1.7.1-2
APT_JAVA ?= openjdk-17-jre-headless
APT_MAVEN ?= maven
system-tools:
	@missing=""; \
	command -v kcat >/dev/null 2>&1 || missing="$$missing $(APT_KCAT)"; \
	command -v java >/dev/null 2>&1 || missing="$$missing $(APT_JAVA)"; \
	command -v mvn >/dev/null 2>&1 || missing="$$missing $(APT_MAVEN)"; \
	command -v ps >/dev/null 2>&1 || missing="$$missing procps"; \
	if [ -n "$$missing" ]; then \
	  echo "installing with apt-get:$$missing"; \
	  { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends $$missing >/dev/null; } \
	    || { echo "error: could not install$$missing with apt-get (as root or with sudo; see its message)" >&2; exit 1; }; \
	fi

test: venv system-tools lint typecheck browser deploy-tools
	$(BIN)/pytest -q

# The deploy tier's tools (tests/deploy): apt packages, Go tools built from source into .tools/
# (cold: ~10 min on 2 idle cores, 42 min measured on 2 cores shared by 7 engineers; warm: 0.1 s),
# the debootstrap base image (cold ~2 min, then cached in .tools/image).
deploy-tools: venv
	tools/deploy-deps.sh
	tools/k8s/build.sh
	tools/image/base.sh >/dev/null

# Full benchmark suite against a broker each benchmark starts itself (~50 min on 2 cores).
bench: venv
	$(BIN)/python bench/peers.py
	$(BIN)/python -m bench.eos
	$(BIN)/python -m bench.latency
	$(BIN)/python -m bench.latency --rate 500 --variants raw,default,stages
	$(BIN)/python -m bench.chain
	$(BIN)/python -m bench.prefetch
	$(BIN)/python -m bench.memory
	$(BIN)/python -m bench.memory --backlog 0 --malloc-arena-max 0 --name memory-no-arena-limit
	$(BIN)/python -m bench.memory --messages 20000000 --rounds 1 --backlog 0 --name memory-long
	$(BIN)/python -m bench.passthrough
	$(BIN)/python -m bench.passthrough --input headers --contenders raw,kstream-bytes
	$(BIN)/python -m bench.passthrough --contenders kstream-bytes,kstream-bytes-metrics,kstream-bytes-tracing,kstream-bytes-tracing-sdk --name passthrough-observe
	$(BIN)/python -m bench.observe_cost
	$(BIN)/python -m bench.ratelimit
	$(BIN)/python -m bench.workflows
	$(BIN)/python -m bench.report

# The same, scaled down (~8 min): for a quick look, not for the figures.
bench-quick: venv
	$(BIN)/python bench/peers.py --messages 50000 --repeat 1
	$(BIN)/python -m bench.eos --messages 100000 --repeat 1
	$(BIN)/python -m bench.latency --seconds 10 --rounds 1 --broker-warmup 20 --variants raw,default,stages
	$(BIN)/python -m bench.prefetch
	$(BIN)/python -m bench.memory --messages 1000000 --first 200000 --backlog 100000 --rounds 1
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
