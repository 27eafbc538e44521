# Ahead: `make run` serves the demo on http://127.0.0.1:8000, `make test` runs the whole suite,
# `make lint` runs the static checks, `make lock` rewrites the lock files after pyproject.toml changed.

# The newest supported Python on this machine (.ci/find-python says how it looks); PYTHON=... overrides.
ifeq ($(origin PYTHON),undefined)
PYTHON := $(shell .ci/find-python)
endif
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8000
export PORT

# Which interpreter made .venv: version and installation (empty for a Python Ahead does not support).
# A venv made by another Python (an older one, or one since removed) is made again, not patched; one
# this Python made is kept, stamp or not.
PY_ID_CODE := 'import hashlib, os, platform, sys; \
  base = hashlib.sha256(os.path.realpath(sys.base_prefix).encode()).hexdigest()[:10]; \
  (3, 11) <= sys.version_info[:2] < (3, 14) and print(platform.python_version(), base, sep="-")'
PY_ID := $(if $(PYTHON),$(shell $(PYTHON) -c $(PY_ID_CODE) 2>/dev/null))
VENV_MADE := $(VENV)/.made-by-python-$(if $(PY_ID),$(PY_ID),unknown)

.PHONY: run test setup setup-dev test-tools lint lock clean venv

venv: $(VENV_MADE)

$(VENV_MADE):
	@[ -n "$(PY_ID)" ] || { echo "No usable Python 3.11-3.13 ($(or $(PYTHON),none found))." \
	  "Install one, or run make PYTHON=/path/to/python3.x" >&2; exit 1; }
	@if [ "$$($(BIN)/python -c $(PY_ID_CODE) 2>/dev/null)" = "$(PY_ID)" ]; then \
	  echo "$(VENV): made by $(PYTHON) already, kept"; \
	else \
	  echo "$(VENV): made with $(PYTHON) (Python $(PY_ID))"; \
	  rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); \
	fi
	@touch $@

# Installs exactly what the lock files pin, checked against their hashes, then Ahead itself without
# resolving anything again. The stamps depend on the locks, so a changed lock is installed next time.
$(VENV)/.installed: requirements.lock pyproject.toml $(VENV_MADE)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

# The dev lock pins the runtime packages at the same versions (make lock compiles it against
# requirements.lock), so it satisfies `setup` as well.
$(VENV)/.installed-dev: requirements-dev.lock requirements.lock pyproject.toml $(VENV_MADE)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(VENV)/.installed $@

setup: $(VENV)/.installed

setup-dev: $(VENV)/.installed-dev

run: setup
	$(BIN)/ahead migrate
	$(BIN)/ahead seed --demo --if-empty
	$(BIN)/ahead serve --port $(PORT)

# The browser journeys need Debian's Chromium and the npm test tools (axe-core, oidc-provider);
# tests/test_deploy.py runs Debian's nginx with deploy/nginx's configuration.
test-tools:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "Installing Chromium from apt…"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || (sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null); }
	@command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || { \
	  echo "Installing nginx from apt…"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null) \
	  || (sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null); }
	@[ -d tests/node/node_modules ] && [ tests/node/node_modules/.package-lock.json -nt tests/node/package-lock.json ] \
	  || npm ci --prefix tests/node --no-audit --no-fund --loglevel=error

# Two runs: the fast suite, then the browser journeys (pytest -m browser) in a process of their own, so
# Playwright's event loop never shares a process with the async tests. A run that selects no journey
# fails (pytest exits 5), and with CI=true a journey that cannot start fails instead of skipping.
test: setup-dev test-tools
	$(BIN)/pytest -m "not browser"
	$(BIN)/pytest -m browser

# ruff (style and bugs), mypy (the types of app/, strict: [tool.mypy] in pyproject.toml), bandit
# (security smells, bandit.yaml; findings triaged on their line with `# nosec BXXX # reason`),
# lint-imports (the import contracts in pyproject.toml: layers, independent domains), .ci/import-cycles
# (lists every import cycle between two modules of app), pip-audit (known vulnerabilities in
# requirements.lock; .ci/audit says NOT CHECKED when no vulnerability service answers, and fails then
# if AUDIT_REQUIRED=1).
# bandit warns "nosec encountered (BXXX), but no failed test" for some lines whose nosec is needed
# (it visits a statement's parts one by one: PyCQA/bandit#1041); the finding itself stays silenced.
lint: setup-dev
	$(BIN)/ruff check app tests bench migrations
	$(BIN)/mypy app
	$(BIN)/bandit -c bandit.yaml -r app migrations -q
	$(BIN)/lint-imports
	$(BIN)/python .ci/import-cycles
	.ci/audit

# Rewrites both lock files from pyproject.toml for Python 3.11 to 3.13 on any platform, with hashes.
# Pins already in a lock are kept unless pyproject.toml needs otherwise; `make lock UPGRADE=1` moves
# every package to its newest allowed release.
LOCK = $(BIN)/uv pip compile pyproject.toml --quiet --universal --python-version 3.11 --generate-hashes \
  --custom-compile-command "make lock" $(if $(UPGRADE),--upgrade)
lock: setup-dev
	$(LOCK) -o requirements.lock
	$(LOCK) --extra dev --constraint requirements.lock -o requirements-dev.lock

clean:
	rm -rf $(VENV) tests/node/node_modules
