# Ahead: `make run` serves the demo on http://127.0.0.1:8000, `make test` runs the whole suite.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8000
export PORT

.PHONY: run test setup setup-dev test-tools lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(VENV)/.installed $@

setup: $(VENV)/.installed

setup-dev: $(VENV)/.installed-dev

run: setup
	$(BIN)/ahead migrate
	$(BIN)/ahead seed --demo --if-empty
	$(BIN)/ahead serve --port $(PORT)

# The browser journeys need Debian's Chromium and the npm test tools (axe-core, oidc-provider).
test-tools:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "Installing Chromium from apt…"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || (sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null); }
	@[ -d tests/node/node_modules ] && [ tests/node/node_modules/.package-lock.json -nt tests/node/package-lock.json ] \
	  || npm ci --prefix tests/node --no-audit --no-fund --loglevel=error

test: setup-dev test-tools
	$(BIN)/pytest

lint: setup-dev
	$(BIN)/ruff check app tests bench

clean:
	rm -rf $(VENV) tests/node/node_modules
