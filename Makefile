# tuneform: two commands do all set-up on a fresh machine (Python 3.11 + Go, or your own pulumi v3.260.0):
#   make up      bootstrap, then `pulumi up --stack local --yes` (tunes and serves the specs in tuning_specs/)
#   make test    bootstrap, then lint, type check and the test suite
#
# State stays in this checkout (.pulumi/, git-ignored, file backend); nothing ever talks to Pulumi Cloud.
# Secrets use the passphrase provider: PULUMI_CONFIG_PASSPHRASE defaults to `tuneform-local`, which is fine for the
# local stack only; export your own for any other stack (e.g. `make preview STACK=vertex`).

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

STACK ?= local
VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python
# `make test` leaves out tests marked slow (minutes each); `make test-all` runs them too.
PYTEST_MARKERS ?= not slow
PYTEST_WORKERS ?= 2
TUNEFORM_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/tuneform
UV ?= $(or $(shell command -v uv 2>/dev/null),$(TUNEFORM_CACHE)/uv-0.13.8/bin/uv)

# The engine's directory goes first on PATH for every recipe (see scripts/pulumi-env.sh for how it is chosen).
PULUMI_BIN := $(shell scripts/pulumi-env.sh --bin-dir)
export PATH := $(PULUMI_BIN):$(PATH)
export PULUMI_BACKEND_URL ?= file://$(CURDIR)/.pulumi
export PULUMI_CONFIG_PASSPHRASE ?= tuneform-local
export PULUMI_SKIP_UPDATE_CHECK := true
export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION := true
export TUNEFORM_CACHE

PULUMI := pulumi --non-interactive

.PHONY: help bootstrap stack up recover preview refresh destroy outputs test test-all test-unit test-integration lint format typecheck bench bench-vertex-faults vertex-smoke lock

help:
	@echo "make up | preview | refresh | destroy | outputs | recover   (STACK=$(STACK))"
	@echo "make test | test-all | test-unit | test-integration | lint | format | typecheck | bench | lock | bootstrap"
	@echo "make vertex-smoke PROJECT=... BUCKET=... [REGION=us-central1]   (a live Vertex AI check, costs cents)"

bootstrap:
	@scripts/bootstrap.sh

# Stacks are created on first use; the passphrase provider keeps secrets in the file backend, encrypted.
stack: bootstrap
	@mkdir -p $(CURDIR)/.pulumi
	@pulumi stack select --create $(STACK) --secrets-provider passphrase

# A killed `pulumi up` leaves a lock and pending creates behind; `up` says so and names `make recover`, the one step
# that clears them (tuneform.recover: stop leftovers, pulumi cancel, refresh --clear-pending-creates, then up).
up: stack
	@$(PY) -m tuneform.recover --check --stack $(STACK)
	$(PULUMI) up --stack $(STACK) --yes

recover: stack
	$(PY) -m tuneform.recover --stack $(STACK)

preview: stack
	$(PULUMI) preview --stack $(STACK)

refresh: stack
	$(PULUMI) refresh --stack $(STACK) --yes
	@$(PY) -m tuneform.recover --check --stack $(STACK) || true

destroy: stack
	$(PULUMI) destroy --stack $(STACK) --yes

outputs: stack
	@pulumi stack output --json --show-secrets --stack $(STACK)

lint:
	$(VENV)/bin/ruff check provider tests bench
	$(VENV)/bin/ruff format --check provider tests bench

format:
	$(VENV)/bin/ruff format provider tests bench
	$(VENV)/bin/ruff check --fix provider tests bench

typecheck:
	$(VENV)/bin/mypy

# pytest exits 5 when nothing was collected (e.g. a marker selection matching no test); that is not a failure.
# fake-gcs-server is a test-only dependency (the Vertex tests' storage emulator): built here, once per machine.
test: bootstrap lint typecheck
	scripts/build_fake_gcs.sh >/dev/null
	rc=0; $(VENV)/bin/pytest -n $(PYTEST_WORKERS) -m "$(PYTEST_MARKERS)" || rc=$$?; \
	if [[ $$rc == 5 ]]; then echo "pytest: no tests selected"; rc=0; fi; exit $$rc

test-all:
	$(MAKE) test PYTEST_MARKERS=

# The tiers, for a developer's loop: `pytest` alone (or make test-unit) runs the unit tier in about two minutes;
# the integration tier is the real CLI, training, the emulators and the heavy tests. `make test` runs both.
test-unit: bootstrap
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS)

test-integration: bootstrap
	scripts/build_fake_gcs.sh >/dev/null
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) -m "(cli or training or emulator or heavy) and not slow"

# Each benchmark prints its baseline, tuneform's figure and their ratio, measured in the same run.
bench: bootstrap
	$(PY) bench/bench_dataset.py
	$(PY) bench/bench_preview.py --specs 100
	$(PY) bench/bench_trainer.py
	$(PY) bench/bench_serving.py

# Not a speed benchmark: how a Vertex stack converges with 30% of the emulator's calls faulted (figures in README).
bench-vertex-faults: bootstrap
	$(PY) bench/bench_vertex_faults.py --specs 5 --rate 0.3 --seeds 1 2 3

# The live smoke test of the Vertex target against a real project (costs cents, see README):
#   make vertex-smoke PROJECT=my-project BUCKET=an-existing-bucket [REGION=us-central1]
REGION ?= us-central1
vertex-smoke: bootstrap
	@if [[ -z "$(PROJECT)" || -z "$(BUCKET)" ]]; then \
		echo "usage: make vertex-smoke PROJECT=<gcp project> BUCKET=<existing bucket> [REGION=us-central1]" >&2; exit 2; fi
	$(PY) -m tuneform.smoke --project "$(PROJECT)" --region "$(REGION)" --bucket "$(BUCKET)" \
		--report vertex-smoke-report.md

# requirements.lock: everything (core + local + dev); requirements-core.lock: the core profile alone, at the very
# same versions (compiled against the full lock), what CI's review job installs (no torch).
lock:
	$(UV) pip compile pyproject.toml --extra local --extra dev -p 3.11 --python-platform x86_64-unknown-linux-gnu -o requirements.lock
	$(UV) pip compile pyproject.toml -c requirements.lock -p 3.11 --python-platform x86_64-unknown-linux-gnu -o requirements-core.lock
