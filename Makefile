# Quickstart: `make run` serves the gateway on 127.0.0.1:8080; `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export GATEWAY_SQLITE_PATH ?= var/gateway.db
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: install run test lint bench clean package

# The example plugin packages, installed as a plugin author's would be (tests/test_plugin_examples.py).
EXAMPLES := examples/gateway-pii-guard examples/gateway-openai-compatible

$(STAMP): setup.cfg pyproject.toml $(EXAMPLES:%=%/setup.cfg)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m pip install --quiet $(EXAMPLES:%=-e %)
	touch $(STAMP)

install: $(STAMP)

# Safe to repeat: init and the catalog import leave what is there (products are replaced by id), and the
# dev key is kept in var/dev-key (mode 0600; the store has only its hash) and printed again each time.
DEV_KEY ?= var/dev-key
run: install
	$(BIN)/gateway init
	$(BIN)/gateway catalog import data/demo_catalog.json
	@$(BIN)/gateway keys create --user dev --tier premium --permissions completions,admin,mcp,health \
		--name "make run" --keep $(DEV_KEY)
	@echo "The gateway command is $(BIN)/gateway (source $(BIN)/activate puts it on your PATH)."
	$(BIN)/gateway serve --host $(HOST) --port $(PORT)

test: install
	$(BIN)/python -m pytest

bench: install package
	$(BIN)/python bench/run.py

lint: install
	$(BIN)/ruff check gateway plugins tests examples

# The Lambda package of a stage, built from a virtualenv holding only the runtime dependencies and zappa
# (the development one would ship pytest, moto and cfn-lint). Offline: fake credentials, nothing reaches AWS.
STAGE ?= dev
DEPLOY_VENV ?= .venv-deploy
$(DEPLOY_VENV)/.installed-stamp: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/python -m pip install --quiet -e ".[deploy]"
	touch $@

package: $(DEPLOY_VENV)/.installed-stamp
	mkdir -p dist
	VIRTUAL_ENV=$(abspath $(DEPLOY_VENV)) AWS_ACCESS_KEY_ID=$${AWS_ACCESS_KEY_ID:-offline} \
	AWS_SECRET_ACCESS_KEY=$${AWS_SECRET_ACCESS_KEY:-offline} AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} \
	$(DEPLOY_VENV)/bin/zappa package $(STAGE) -o dist/ai-gateway-$(STAGE).zip

# Everything the targets above make: venvs, var/, the tests' and tools' caches and artifacts, the build's
# egg-info, build/ and dist/ folders (the examples' too), the benchmark's results and node_modules.
clean:
	rm -rf $(VENV) $(DEPLOY_VENV) var .pytest_cache .hypothesis .ruff_cache test-artifacts build dist \
		*.egg-info $(EXAMPLES:%=%/*.egg-info) $(EXAMPLES:%=%/build) bench/results bench/portkey/node_modules
	find . -path ./.git -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
