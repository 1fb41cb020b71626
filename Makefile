# ensemble-trader — every target creates .venv and installs what it needs on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
export OMP_NUM_THREADS ?= 1
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION ?= 20
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION ?= 1
export PIP_DISABLE_PIP_VERSION_CHECK ?= 1
export CDK_DISABLE_CLI_TELEMETRY ?= true
# Where pip finds torch 2.13.0's CPU wheel. Empty: the configured indexes (on the development
# machines a local CPU wheel). Elsewhere PyPI's Linux torch is the CUDA build: pass
# TORCH_INDEX=https://download.pytorch.org/whl/cpu to take the CPU one.
TORCH_INDEX ?=
STAGE ?= dev
# The stage's CDK context for `make deploy`, e.g.
# CDK_CONTEXT="-c broker=alpaca -c initial_equity=25000 -c symbols=SPY".
# STAGE=staging and STAGE=prod need at least -c broker=... (paper too) and -c symbols=... (SPY too):
# the app refuses to synthesise them without both, so a redeploy cannot switch a stage's broker or
# symbols by omission. Dev defaults to paper and SPY.
CDK_CONTEXT ?=

.PHONY: demo test test-unit bench bench-regret synth layers train evaluate-agents meta-select lint deploy redis-server regime-validate local-up local-drain local-down clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned, from the CPU wheel (see TORCH_INDEX); an unpinned torch would pull a CUDA build
	$(PY) -m pip install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e '.[lambda,train,broker,infra,dev]'
	touch $@

$(NODE_STAMP): package.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

# A real redis-server from Debian's packages (the local stack starts it on a free port).
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server from Debian's packages"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }

demo: $(STAMP) redis-server
	$(VENV)/bin/ensemble-trader demo

# every core (pytest-xdist), a test file's tests on one worker: each worker starts its own moto
# server and redis-server (session fixtures, free ports): a fresh-clone CI ran the suite in 637 s on
# 2 cores, 884 s in one process.
# Files in collection order (no reorder by test count), so tests marked `minutes` start first.
test: $(STAMP) $(NODE_STAMP) redis-server layers
	$(PY) -m pytest -n auto --dist loadfile --no-loadscope-reorder tests

test-unit: $(STAMP)
	$(PY) -m pytest tests/unit

bench: $(STAMP)
	$(VENV)/bin/ensemble-trader bench --json

bench-regret: $(STAMP)
	$(PY) tests/benchmarks/bandit_regret.py

train: $(STAMP)
	$(VENV)/bin/ensemble-trader train agents --out layers/models/agents

evaluate-agents: $(STAMP)
	$(PY) -m training.agents.evaluate --img-dir docs/img

meta-select: $(STAMP)
	$(PY) -m training.meta.select

local-up: $(STAMP) redis-server
	$(VENV)/bin/ensemble-trader local up

local-drain: $(STAMP)
	$(VENV)/bin/ensemble-trader local drain

local-down: $(STAMP)
	$(VENV)/bin/ensemble-trader local down

layers: $(STAMP)
	$(PY) layers/build.py

synth: $(STAMP) $(NODE_STAMP) layers
	$(PY) -m infra_cdk.app

deploy: $(STAMP) $(NODE_STAMP) layers
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" npx cdk deploy --all -c stage=$(STAGE) $(CDK_CONTEXT) --require-approval never

regime-validate: $(STAMP)
	$(VENV)/bin/ensemble-trader regime evaluate --out build/regime --plot docs/img/regime_synthetic.png
	$(VENV)/bin/ensemble-trader regime history --out docs/img

lint: $(STAMP)
	$(VENV)/bin/ruff check layers/core functions training infra_cdk tests

clean:
	rm -rf $(VENV) node_modules cdk.out build .pytest_cache
