# mservices: `make run` serves on the embedded SQLite default with demo data; `make test` runs
# the checks and the suite. Both set up .venv themselves from a clean clone.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
PIP := $(BIN)/python -m pip --disable-pip-version-check
LOCK_VENV := build/lock-venv
PIP_TOOLS := pip-tools==7.7.0
LOCK_ARGS ?=
PIP_COMPILE := CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_VENV)/bin/pip-compile --quiet \
	--allow-unsafe --generate-hashes --strip-extras --no-emit-index-url --no-emit-find-links

.PHONY: run serve demo test pytest lint typecheck format messages bench bench-smoke clean lock wheel

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The exact versions of requirements.lock (hash-checked), then the checkout itself, editable,
# without resolving anything again.
$(RUN_STAMP): requirements.lock pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -r requirements.lock
	$(PIP) install --quiet --no-deps -e .
	touch $@

$(DEV_STAMP): requirements-dev.lock pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -r requirements-dev.lock
	$(PIP) install --quiet --no-deps -e .
	touch $@ $(RUN_STAMP)

## run: install, migrate, load demo data and serve on http://127.0.0.1:8000 (new accounts get
## the demo's customer role unless MSERVICES_SIGNUP_ROLE is set, even to empty)
run: $(RUN_STAMP)
	$(BIN)/mservices demo
	MSERVICES_SIGNUP_ROLE=$${MSERVICES_SIGNUP_ROLE-customer} $(BIN)/mservices serve

## test: lint, type-check and run the whole suite
test: lint typecheck pytest

pytest: $(DEV_STAMP)
	$(BIN)/python -m pytest

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(DEV_STAMP)
	$(BIN)/mypy

format: $(DEV_STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## messages: re-extract every translatable string into server/locale/*/LC_MESSAGES/mservices.po,
## fill English, keep Chinese translations, compile the .mo files; then translate what it lists
messages: $(DEV_STAMP)
	$(BIN)/python -m server.i18n.messages update

## bench: every scenario, reported as a ratio to a bare Tornado endpoint of the same run
bench: $(DEV_STAMP)
	$(BIN)/python -m bench

bench-smoke: $(DEV_STAMP)
	$(BIN)/python -m bench --smoke

## lock: re-resolve requirements.lock (what runs) and requirements-dev.lock (the dev extra too)
## from pyproject.toml, keeping every pin that still fits; LOCK_ARGS=--upgrade moves everything
## to the newest allowed release, LOCK_ARGS='--upgrade-package tornado' one package (needs network)
lock: $(LOCK_VENV)/bin/pip-compile
	$(PIP_COMPILE) $(LOCK_ARGS) --output-file requirements.lock pyproject.toml
	$(PIP_COMPILE) $(LOCK_ARGS) --extra dev --constraint requirements.lock \
		--output-file requirements-dev.lock pyproject.toml

$(LOCK_VENV)/bin/pip-compile:
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet '$(PIP_TOOLS)'

## wheel: build dist/mservices-VERSION-py3-none-any.whl (templates, static files, migrations and
## catalogs inside) with the locked setuptools, offline; deploy it with requirements.lock
wheel: $(DEV_STAMP)
	rm -rf build/lib build/bdist.*
	$(PIP) wheel --quiet --no-deps --no-build-isolation --wheel-dir dist .

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
