# Entry points for newcomers and CI. Everything runs from the controller virtualenv in .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SCENARIOS ?= default python_build

.PHONY: run test lint pytest molecule images artifacts

$(BIN)/activate: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

# The service on its embedded defaults: SQLite and media under ./var, http://127.0.0.1:8000
run: $(BIN)/activate
	$(BIN)/python -m app

# The whole suite: lint, the service's tests, every Molecule scenario (one at a time).
test: lint pytest molecule

lint: $(BIN)/activate
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/yamllint --strict .
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/ansible-lint --offline

pytest: $(BIN)/activate
	$(BIN)/python -m pytest app/tests

# Base images of the scenarios (debootstrap + docker import; present ones are skipped).
images:
	bash molecule/build-images.sh

# What the python_build scenario serves from its loopback mirrors (downloaded once into .cache/).
artifacts:
	bash molecule/python_build/fetch-artifacts.sh

molecule: $(BIN)/activate images artifacts
	set -e; for scenario in $(SCENARIOS); do \
	  PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/molecule test -s $$scenario; \
	done
