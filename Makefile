# LocalPlus Event Engine. Quick start: `make up` (run everything) and `make test` (the whole suite).
# Both set themselves up on a fresh machine: uv, the locked Python environment, generated stubs.

SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
# uv from PATH, else installed from PyPI into .tools/ (no root, venv or --user site needed).
UV := $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.tools/bin/uv)
export PYTHONPATH := $(CURDIR)/gen:$(CURDIR)/services/common:$(CURDIR)/services/events:$(CURDIR)/services/ticketing:$(CURDIR)/services/recurrence:$(CURDIR)/services/notifications:$(CURDIR)/gateway:$(CURDIR)/devtools:$(CURDIR)
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/.venv
# Everything make runs is local development, so dev mode (CONTRACT §2): the services, the gateway, migrate
# and token may fall back to the dev database URL and JWT secret. Anything but `dev` refuses those defaults.
export LOCALPLUS_ENV ?= dev
RUN := $(UV) run --frozen --no-sync
PG15_BIN := /usr/lib/postgresql/15/bin
PROTOS := $(shell find protos -name '*.proto')

.PHONY: help setup up test fuzz bench bench-workers profile versus bench-tools gen lint proto-baseline migrate reconcile token system-postgres system-chromium import

help:
	@echo "make up        run Postgres, the three services and the gateway on :8080 (Ctrl-C stops all)"
	@echo "make test      run the whole test suite"
	@echo "make fuzz      fuzz every route through the gateway with schemathesis, longer than make test does"
	@echo "make bench     print throughput and latency figures"
	@echo "make bench-workers  one events service with 1 worker process against 2"
	@echo "make profile   sample the events service under load with py-spy (ARGS='--scenario list')"
	@echo "make versus    this events service against another checkout's, side by side (ARGS='--base DIR')"
	@echo "make gen       generate Python stubs, the gateway descriptor and the OpenAPI document from protos/"
	@echo "make lint      buf lint and breaking, ruff, mypy"
	@echo "make proto-baseline REF=<tag>  record the released protos that buf breaking compares with"
	@echo "make migrate   apply sql/migrations to DATABASE_URL (default: the embedded database)"
	@echo "make reconcile settle payments whose webhook was missed and refunds left pending (ARGS='--older-than 0')"
	@echo "make token     print a dev JWT, e.g. make token ARGS='--admin'"

$(UV):
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --target $(CURDIR)/.tools uv

.venv/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --quiet
	@touch $@

gen/descriptor.pb: $(PROTOS) devtools/gen_protos.py gateway/localplus_openapi.py gateway/localplus_gateway.py .venv/.synced
	$(RUN) python devtools/gen_protos.py

setup: .venv/.synced gen/descriptor.pb

gen: .venv/.synced
	$(RUN) python devtools/gen_protos.py

# buf breaking compares the protos with the last release's, recorded in $(BASELINE): fields and RPCs
# may be added, never broken. Both sides are images of protos/localplus, the imports they need included
# but not compared (an image input, because the two-module workspace cannot be compared with one image).
BASELINE := protos/baseline/localplus-v1.txtpb
REF ?= HEAD

lint: setup
	$(RUN) buf lint
	set -o pipefail; $(RUN) buf build --path protos/localplus -o -#format=binpb \
	  | $(RUN) buf breaking -#format=binpb --against $(BASELINE) --exclude-imports
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy services gateway devtools tests bench

# At a release: record its protos as the new baseline (text format, so the diff is reviewable) and commit it.
proto-baseline: .venv/.synced
	$(RUN) buf build '.git#ref=$(REF)' --path protos/localplus --exclude-source-info -o $(BASELINE)

migrate: setup
	$(RUN) python -m localplus_common.migrate

# Stripe against DATABASE_URL (dev defaults: the embedded database, localstripe); cron it in production.
reconcile: setup
	$(RUN) python -m localplus_ticketing.reconcile $(ARGS)

up: setup
	$(RUN) python -m localplus_dev.stack up

# The suite also runs its database tests on the machine's Postgres 15 (Supabase's major version), and
# the services through PgBouncer in transaction mode (as behind Supabase's pooler).
system-postgres:
	@test -x $(PG15_BIN)/postgres -a -x /usr/sbin/pgbouncer || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq --no-install-recommends postgresql-15 postgresql-contrib pgbouncer >/dev/null; }

# The docs page is tested in Debian's Chromium (headless), installed here when missing.
system-chromium:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

test: setup system-postgres system-chromium
	$(RUN) pytest $(PYTEST_ARGS)

# make test fuzzes every route with a few examples each; this runs the same test with many more.
FUZZ_EXAMPLES ?= 100
fuzz: setup
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(RUN) pytest tests/test_fuzz.py $(PYTEST_ARGS)

# wrk and h2load keep the load generator's own CPU out of the figures; without them the
# benchmarks fall back to Python clients.
bench-tools:
	@command -v wrk >/dev/null && command -v h2load >/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk nghttp2-client \
	  >/dev/null; } || echo "wrk/h2load missing: make bench uses Python load generators"

bench: setup bench-tools
	$(RUN) python -m bench $(ARGS)

# One events service with 1 worker process against 2 (LOCALPLUS_WORKERS), alternating (bench/workers.py).
bench-workers: setup bench-tools
	$(RUN) python -m bench.workers $(ARGS)

# Import a scraped feed (.json or .ics) through the gateway: make import FILE=feed.ics SOURCE=bangkok-listings
import: setup
	$(RUN) python -m localplus_dev.importer $(FILE) --source $(SOURCE)

token: setup
	@$(RUN) python -m localplus_dev.token $(ARGS)

# Where the events service's time goes: a short load sampled by py-spy (speedscope file + top-N tables).
profile: setup bench-tools
	$(RUN) python -m bench.profile $(ARGS)

# Before/after on a busy machine: this checkout's events service against another's, bursts alternating.
versus: setup bench-tools
	$(RUN) python -m bench.versus $(ARGS)
