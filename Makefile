# make run: a development server on http://127.0.0.1:8000 with SQLite (PORT=8011 picks another port),
# under uvicorn, so that it serves the live events too; it reloads when the code changes.
# make superuser: an admin login (DJANGO_SUPERUSER_USERNAME, _EMAIL and _PASSWORD make it without asking).
# make test: the whole suite (SQLite by default; set DATABASE_URL for PostgreSQL; ARGS=... for pytest).
# make test-fast: the suite without the browser tests and the crash and fuzz runs, for everyday work.
# make crash: the crash test (SEED=7 DURATION=60); make crash-quick: its ~10 s variant (docs/crash-test.md).
# make scale-test: two instances, PgBouncer and a streaming replica, and its negative control.
# make fuzz: schemathesis against gunicorn (SEED=7 EXAMPLES=400; DATABASE_URL picks the database;
# docs/fuzzing.md).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEV := DJANGO_DEBUG=1
PORT ?= 8000
ARGS ?=

.PHONY: run port-free test test-fast lint format audit superuser schema seed bench bench-live soak profile crash crash-quick scale-test fuzz clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.run-installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev-installed: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(VENV)/.run-installed $@

# Before any setup step, so a busy port is the first thing said, not the last.
port-free:
	@$(PYTHON) bin/port-free $(PORT)

run: port-free $(VENV)/.run-installed
	$(DEV) $(BIN)/python manage.py migrate --noinput
	$(DEV) $(BIN)/python manage.py collectstatic --noinput --verbosity 0
	@echo "Demo:  http://127.0.0.1:$(PORT)/ (the chat page)"
	@echo "API:   http://127.0.0.1:$(PORT)/conversations/1234"
	@echo "Docs:  http://127.0.0.1:$(PORT)/api/docs/ (try every endpoint; schema at /api/schema/)"
	@echo "Admin: http://127.0.0.1:$(PORT)/admin/ (create a login with: make superuser)"
	@echo "Demo data: make seed, then open http://127.0.0.1:$(PORT)/admin/conversations/conversation/"
	@echo "           (each conversation's page has JSON and CSV downloads) or"
	@echo "           http://127.0.0.1:$(PORT)/conversations/demo-long-thread?limit=20"
	@echo "Live:  http://127.0.0.1:$(PORT)/conversations/1234/events (new messages as they are stored)"
	$(DEV) $(BIN)/uvicorn chatproject.asgi:application --host 127.0.0.1 --port $(PORT) --reload \
		--reload-dir chatproject --reload-dir conversations --reload-dir demo

# Asks for a name and a password, or, with DJANGO_SUPERUSER_PASSWORD set (and
# DJANGO_SUPERUSER_USERNAME, DJANGO_SUPERUSER_EMAIL), asks nothing.
superuser: $(VENV)/.run-installed
	$(DEV) $(BIN)/python manage.py migrate --noinput --verbosity 0
	$(DEV) $(BIN)/python manage.py createsuperuser $(if $(DJANGO_SUPERUSER_PASSWORD),--noinput)

# A few demo conversations; rerunning it writes nothing twice.
seed: $(VENV)/.run-installed
	$(DEV) $(BIN)/python manage.py migrate --noinput
	$(DEV) $(BIN)/python manage.py seed_demo

# docs/openapi.yaml, the committed copy of /api/schema/ (a test fails when it is stale).
schema: $(VENV)/.run-installed
	$(DEV) $(BIN)/python manage.py spectacular --validate --fail-on-warn --file docs/openapi.yaml

test: $(VENV)/.dev-installed
	$(BIN)/pytest $(ARGS)

test-fast: $(VENV)/.dev-installed
	$(BIN)/pytest -m "not browser and not slow" $(ARGS)

# The benchmark and the soak run need PostgreSQL on 127.0.0.1:5432 (user postgres) and wrk
# (installed from Debian's packages if missing); see docs/performance.md.
bench: $(VENV)/.dev-installed
	$(BIN)/python -m bench.run

# Live delivery (issue 9) against the WSGI server it replaced, on its own database
# chat_bench_live (about 8 minutes; ARGS=--quick for a smoke run of about a minute,
# ARGS=--ten-thousand to add 10,000 streams, ARGS="--widgets 16000,20000" a step of each size).
bench-live: $(VENV)/.dev-installed
	$(BIN)/python -m bench.live $(ARGS)

soak: $(VENV)/.dev-installed
	$(BIN)/python -m bench.soak

profile: $(VENV)/.dev-installed
	$(BIN)/python -m bench.profile get

SEED ?= 7
DURATION ?= 60

crash: $(VENV)/.run-installed
	$(BIN)/python -m bench.crash --seed $(SEED) --duration $(DURATION)

crash-quick: $(VENV)/.run-installed
	$(BIN)/python -m bench.crash --quick --seed $(SEED)

# Builds its own primary, replica and PgBouncers (Debian's pgbouncer, installed if missing as
# root) on free ports; needs Redis on 127.0.0.1:6379. tests/test_scale.py runs its --quick variant.
scale-test: $(VENV)/.run-installed
	$(BIN)/python -m bench.scale

# Known vulnerabilities in the pinned runtime dependencies (pip-audit asks PyPI).
audit: $(VENV)/.dev-installed
	$(BIN)/pip-audit --requirement requirements.txt --progress-spinner off

EXAMPLES ?= 400

# schemathesis, every check, on a fresh database of DATABASE_URL's kind (SQLite when unset);
# tests/test_fuzz.py runs its --quick variant in make test.
fuzz: $(VENV)/.dev-installed
	$(BIN)/python -m bench.fuzz --seed $(SEED) --max-examples $(EXAMPLES)

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.dev-installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) staticfiles db.sqlite3* test_db.sqlite3*
