# The two commands a newcomer needs:  `make run`  and  `make test`.
# Both create .venv with the system python3 and install what they need into it, and
# build the web dashboard (Node.js >= 20 and npm).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.kiln-installed

.PHONY: run demo test lint bench venv dashboard clean

$(STAMP): engine/pyproject.toml server/pyproject.toml client/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e "engine[test,demo]" -e "server[test]" -e client
	touch $(STAMP)

venv: $(STAMP)

# The dashboard (dashboard/: TypeScript, Vite) built into the server's package, which
# serves it at /: `npm ci` again only when the lock file changed since the last one,
# a build again only when a source did.
DASHBOARD_DEPS  := dashboard/node_modules/.kiln-installed
DASHBOARD_BUILD := server/kiln_server/dashboard/index.html
DASHBOARD_SRC   := $(shell find dashboard/src dashboard/public -type f 2>/dev/null) \
                   $(wildcard dashboard/*.html dashboard/*.json dashboard/*.ts)

$(DASHBOARD_DEPS): dashboard/package-lock.json
	cd dashboard && npm ci --no-audit --no-fund
	touch $@

$(DASHBOARD_BUILD): $(DASHBOARD_DEPS) $(DASHBOARD_SRC)
	cd dashboard && npm run build
	touch $@

dashboard: $(DASHBOARD_BUILD)

## Kiln's main job: the server on SQLite (data in ./kiln-data) with one local worker.
## It prints the URL, the dashboard's, and, on first start, an admin token.
run: $(STAMP) dashboard
	$(VENV)/bin/kiln-server serve --data-dir kiln-data

## The engine alone: train an MLP on scikit-learn's digits in this process.
demo: $(STAMP)
	$(PY) -m kiln_engine.demo

## Every test: lint, the dashboard's unit tests (Vitest), then the whole suite, in three
## processes (pytest-xdist; a module's tests stay in one, with its servers): most of the
## suite waits on servers and workers it starts, so three share two cores well.
## PyTorch-oracle tests run when torch is installed (.ci/run installs it):
## `$(PY) -m pip install torch==2.13.0`; browser tests when Chromium is (/usr/bin/chromium).
test: $(STAMP) dashboard
	$(PY) -m ruff check .
	cd dashboard && npm test
	$(PY) -m pytest -q -n 3 --dist loadscope

lint: $(STAMP)
	$(PY) -m ruff check .

## Benchmarks against PyTorch (installs torch==2.13.0 into the venv); see bench/README.md.
bench: $(STAMP)
	$(PY) -m pip install -q torch==2.13.0
	for b in bench/engine_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache dashboard/node_modules server/kiln_server/dashboard
