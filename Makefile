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
	$(VENV)/bin/ruff check $(PACKAGES) tests bench fuzz
	$(VENV)/bin/ruff format --check $(PACKAGES) tests bench fuzz

typecheck: setup
	$(VENV)/bin/mypy

importlint: setup
	$(VENV)/bin/lint-imports

pytest: setup
	$(PY) -m pytest -q -p no:cacheprovider

test: lint typecheck importlint pytest

clean:
	rm -rf demo-out .pytest_cache .mypy_cache .ruff_cache

# Benchmarks: bench/results.json (every metric beside a baseline measured in the same run) and
# the table printed; needs pcscd/vpcd, PostgreSQL (STARCARD_BENCH_PG) and wrk. Under 15 min on
# 2 cores; QUICK=1 runs a smaller version (a minute or two) for development.
.PHONY: bench
bench: setup
	@command -v wrk >/dev/null 2>&1 || { echo "make bench needs wrk: run 'make setup' as root (apt-get install wrk)" >&2; exit 1; }
	QUICK=$(QUICK) $(PY) -m bench.run

# The fault and attack catalogue (docs/faults.md): writes bench/faults.json, fails on any
# false accept, inconsistent state, double active card, lost commit or hang, or a missed control.
.PHONY: faults
faults: setup
	QUICK=$(QUICK) $(PY) -m bench.faults

# Coverage-guided fuzzing of the byte parsers (atheris/libFuzzer); see fuzz/_common.py.
# Each target runs FUZZ_SECONDS with an RSS cap; corpora and crash artifacts go to FUZZ_WORK.
FUZZ_SECONDS ?= 60
FUZZ_RSS_MB ?= 2048
FUZZ_WORK ?= $(or $(TMPDIR),/tmp)/starcard-fuzz
FUZZ_TARGETS ?= tlv apdu_response iso7816_fs virtual_card credential status_list

.PHONY: fuzz
fuzz: setup
	@$(PY) -c 'import atheris' 2>/dev/null || $(VENV)/bin/pip install -q atheris
	@set -e; for t in $(FUZZ_TARGETS); do \
	  d="$(FUZZ_WORK)/$$t"; mkdir -p "$$d/corpus" "$$d/seeds" "$$d/artifacts"; \
	  $(PY) fuzz/fuzz_$$t.py --write-seeds "$$d/seeds"; \
	  echo "== fuzz $$t: $(FUZZ_SECONDS) s, rss <= $(FUZZ_RSS_MB) MB, work dir $$d"; \
	  STARCARD_FUZZ_STATE_DIR="$$d/state" \
	  $(PY) fuzz/fuzz_$$t.py -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=$(FUZZ_RSS_MB) \
	    -timeout=10 -print_final_stats=1 -artifact_prefix="$$d/artifacts/" \
	    "$$d/corpus" "$$d/seeds"; \
	done
