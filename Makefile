# Clinic Relay — every developer and CI command. `make` alone lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help install run idp api worker beat flower sim token check-tebra test test-fast lint fmt bench up down logs clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the project with its dev tools

run: $(STAMP) ## start Redis (if none answers), the Tebra simulator, API, worker, beat, Flower and the audit writer until Ctrl-C
	@mkdir -p var
	APP_ENV=development $(BIN)/honcho -f Procfile start

# The sign-in tests' OpenID provider, for trying the real sign-in locally (docs/security.md, "Sign-in"):
# `make idp` here, then `AUTH_MODE=oidc OIDC_ISSUER=http://127.0.0.1:8090 OIDC_CLIENT_ID=relay-board
# OIDC_AUDIENCE=https://clinic-relay.test/api OIDC_ROLE_CLAIM=https://clinic-relay.test/roles make run`.
IDP_OPTIONS := {"port": 8090, "board": "http://127.0.0.1:8000", "audience": "https://clinic-relay.test/api", \
  "other_audience": "", "access_ttl_s": 300, "role_claim": "https://clinic-relay.test/roles", \
  "client_id": "relay-board", "short_client_id": "relay-board-short-session", \
  "no_refresh_client_id": "relay-board-no-refresh"}
idp: ## a local OpenID provider on 127.0.0.1:8090 (needs node and npm; any login: frontdesk-…, clinician-…, ops-…)
	cd tests/oidc_provider && (test -d node_modules || npm ci --no-audit --no-fund) && node provider.mjs '$(IDP_OPTIONS)'

# The single-process targets take APP_ENV from the environment: none set, they refuse to start and say so.
api: $(STAMP) ## the API alone (gunicorn gthread on API_HOST:API_PORT)
	$(BIN)/gunicorn -c app/gunicorn_conf.py app.wsgi:app

worker: $(STAMP) ## one Celery worker (prefork, WORKER_CONCURRENCY processes)
	$(BIN)/celery -A workers.celery_app worker --loglevel=INFO --queues=sync,details --events

beat: $(STAMP) ## Celery beat (periodic syncs of today, when PERIODIC_SYNC_MINUTES > 0)
	$(BIN)/celery -A workers.celery_app beat --loglevel=INFO --schedule=var/celerybeat-schedule

flower: $(STAMP) ## Flower on FLOWER_ADDRESS:FLOWER_PORT with basic auth
	$(BIN)/celery -A workers.celery_app flower --conf=workers/flowerconfig.py

sim: $(STAMP) ## the Tebra SOAP simulator on SIM_HOST:SIM_PORT
	$(BIN)/python -m tebra_sim

check-tebra: $(STAMP) ## before a clinic's first sync: its practice, limits, providers and today's appointments in Tebra
	@$(BIN)/python -m tasks.tebra.check

token: $(STAMP) ## print a development bearer token with every scope
	@APP_ENV=development $(BIN)/python -m app.devtoken

# Parallel workers: most of the suite waits on real clocks (polls, renewals, failovers), not on the 2 cores.
# Each worker has its own Redis server and stack (tests/conftest.py); TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 8
test: $(STAMP) ## the whole suite: unit, contract, integration (real Redis, worker, simulator), reliability
	APP_ENV=test $(BIN)/pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

test-fast: $(STAMP) ## unit and contract tests only
	APP_ENV=test $(BIN)/pytest tests/unit tests/contract $(PYTEST_ARGS)

lint: $(STAMP) ## ruff, mypy and the import-linter layering contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

fmt: $(STAMP) ## format and fix what ruff can
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP) ## the benchmarks (tables on stdout, JSON in bench/results/)
	APP_ENV=test $(BIN)/python -m bench

up: ## the container stack (needs a Docker engine)
	docker compose up -d --build

down: ## stop the container stack
	docker compose down

logs: ## follow the container stack's logs
	docker compose logs -f --tail=100

clean: ## remove the virtualenv and local state
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
