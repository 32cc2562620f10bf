# Entry points for newcomers and CI. Everything runs from the controller virtualenv in .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SCENARIOS ?= default python_build cluster
ROLES := $(patsubst roles/%/meta/argument_specs.yml,%,$(wildcard roles/*/meta/argument_specs.yml))

.PHONY: run test prerequisites lint role-docs pytest pytest-fast container-test image molecule images artifacts

$(BIN)/activate: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

# The service on its embedded defaults: SQLite and media under ./var, http://127.0.0.1:8000
run: $(BIN)/activate
	$(BIN)/python -m app

# The whole suite: lint, the service's tests, the container image's, every Molecule scenario (one at a time).
# First what it needs on the machine: installed and started as root, else named and stopped at once.
test: prerequisites lint pytest container-test molecule

prerequisites:
	bash .ci/prerequisites.sh

lint: $(BIN)/activate
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/yamllint --strict .
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/ansible-lint --offline
	$(BIN)/hadolint Dockerfile molecule/compose/*.Dockerfile
	$(BIN)/python -m pytest -q molecule/test_role_specs.py molecule/test_inventories.py
	@# The monitoring role's alert rules rendered with its defaults: promtool's check and unit tests, ALERTS.md.
	bash roles/monitoring/tests/check-alert-rules.sh
	@# Each role's README as committed: regenerated into a copy, which must not differ.
	set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; for role in $(ROLES); do \
	  cp roles/$$role/README.md "$$tmp/$$role.md"; \
	  $(BIN)/aar-doc --output-file "$$tmp/$$role.md" roles/$$role markdown; \
	  diff -u roles/$$role/README.md "$$tmp/$$role.md" || { echo "roles/$$role/README.md is stale: make role-docs"; exit 1; }; \
	done

# The generated part of each role's README.md, from its meta/ (aar-doc; settings in .aar_doc.yml).
role-docs: $(BIN)/activate
	set -e; for role in $(ROLES); do $(BIN)/aar-doc roles/$$role markdown; done

# The fast part alone, for quick rounds while developing: no downloads, processes, databases or browser.
pytest-fast: $(BIN)/activate
	$(BIN)/python -m pytest -m 'not e2e and not container' tests

# Docker-free: the container tests have their own target.
pytest: $(BIN)/activate
	$(BIN)/python -m pytest -m 'not container' tests
	@# The same suite on the PostgreSQL task store (the web page's browser tests do not depend on it; the
	@# cluster's tests run on PostgreSQL servers of their own in the first pass already).
	VIDEO_API_TEST_STORE=postgresql $(BIN)/python -m pytest -m 'not container and not browser' --ignore=tests/cluster tests

# The image (Dockerfile) from the local Debian 12 base: built, run hardened, a download stopped and resumed, compose.
container-test: $(BIN)/activate
	bash molecule/build-images.sh 12
	$(BIN)/python -m pytest -m container tests

# The service's image, video-download-api:<app version>; BASE_IMAGE=... for another base than debian:12-slim.
image: $(BIN)/activate
	bash molecule/build-service-image.sh

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
