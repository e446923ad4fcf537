# StarCard: the README's two commands are `make demo` and `make test`.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.starcard-setup
PACKAGES := card_profiles hsm_sim verifier issuer

.PHONY: setup demo test lint typecheck importlint pytest clean

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh

setup: $(STAMP)

demo: setup
	$(VENV)/bin/starcard-demo --out demo-out

lint: setup
	$(VENV)/bin/ruff check $(PACKAGES) tests bench
	$(VENV)/bin/ruff format --check $(PACKAGES) tests bench

typecheck: setup
	$(VENV)/bin/mypy

importlint: setup
	$(VENV)/bin/lint-imports

pytest: setup
	$(PY) -m pytest -q -p no:cacheprovider

test: lint typecheck importlint pytest

clean:
	rm -rf demo-out .pytest_cache .mypy_cache .ruff_cache

.PHONY: bench
bench: setup
	QUICK=$(QUICK) $(PY) -m bench.run
