# The two commands a newcomer needs:  `make run`  and  `make test`.
# Both create .venv with the system python3 and install what they need into it.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.kiln-installed

.PHONY: run demo test lint bench venv clean

$(STAMP): engine/pyproject.toml server/pyproject.toml client/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e "engine[test,demo]" -e server -e client
	touch $(STAMP)

venv: $(STAMP)

## Kiln's main job: the server on SQLite (data in ./kiln-data) with one local worker.
## It prints the URL and, on first start, an admin token.
run: $(STAMP)
	$(VENV)/bin/kiln-server serve --data-dir kiln-data

## The engine alone: train an MLP on scikit-learn's digits in this process.
demo: $(STAMP)
	$(PY) -m kiln_engine.demo

## Every test: lint, then the whole suite. PyTorch-oracle tests run when torch is installed
## (.ci/run installs it): `$(PY) -m pip install torch==2.13.0`.
test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .

## Benchmarks against PyTorch (installs torch==2.13.0 into the venv); see bench/README.md.
bench: $(STAMP)
	$(PY) -m pip install -q torch==2.13.0
	for b in bench/engine_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
