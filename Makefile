# mservices: `make run` serves on the embedded SQLite default with demo data; `make test` runs
# the checks and the suite. Both set up .venv themselves from a clean clone.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: run serve demo test pytest lint typecheck format messages bench bench-smoke clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
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

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
