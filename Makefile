# make run: a development server on http://127.0.0.1:8000 with SQLite.
# make test: the whole suite (SQLite by default; set DATABASE_URL for PostgreSQL).
# make crash: the crash test (SEED=7 DURATION=60); make crash-quick: its ~10 s variant.
# make fuzz: schemathesis against gunicorn (SEED=7 EXAMPLES=400; DATABASE_URL picks the database).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEV := DJANGO_DEBUG=1

.PHONY: run test lint format audit superuser schema seed bench bench-live soak profile crash crash-quick fuzz clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.run-installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev-installed: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(VENV)/.run-installed $@

run: $(VENV)/.run-installed
	$(DEV) $(BIN)/python manage.py migrate --noinput
	$(DEV) $(BIN)/python manage.py collectstatic --noinput --verbosity 0
	@echo "Demo:  http://127.0.0.1:8000/ (the chat page)"
	@echo "API:   http://127.0.0.1:8000/conversations/1234"
	@echo "Docs:  http://127.0.0.1:8000/api/docs/ (try every endpoint; schema at /api/schema/)"
	@echo "Admin: http://127.0.0.1:8000/admin/ (create a login with: make superuser)"
	@echo "Demo data: make seed, then open http://127.0.0.1:8000/admin/conversations/conversation/"
	@echo "           (each conversation's page has JSON and CSV downloads) or"
	@echo "           http://127.0.0.1:8000/conversations/demo-long-thread?limit=20"
	$(DEV) $(BIN)/python manage.py runserver 127.0.0.1:8000

superuser: $(VENV)/.run-installed
	$(DEV) $(BIN)/python manage.py createsuperuser

# A few demo conversations; rerunning it writes nothing twice.
seed: $(VENV)/.run-installed
	$(DEV) $(BIN)/python manage.py migrate --noinput
	$(DEV) $(BIN)/python manage.py seed_demo

# docs/openapi.yaml, the committed copy of /api/schema/ (a test fails when it is stale).
schema: $(VENV)/.run-installed
	$(DEV) $(BIN)/python manage.py spectacular --validate --fail-on-warn --file docs/openapi.yaml

test: $(VENV)/.dev-installed
	$(BIN)/pytest

# The benchmark and the soak run need PostgreSQL on 127.0.0.1:5432 (user postgres) and wrk
# (installed from Debian's packages if missing); see the README's Performance section.
bench: $(VENV)/.dev-installed
	$(BIN)/python bench/run.py

# Live delivery (issue 9) against the WSGI server it replaced, on its own database
# chat_bench_live (about 8 minutes; ARGS=--quick for a smoke run of about a minute,
# ARGS=--ten-thousand to add 10,000 streams).
bench-live: $(VENV)/.dev-installed
	$(BIN)/python -m bench.live $(ARGS)

soak: $(VENV)/.dev-installed
	$(BIN)/python bench/soak.py

profile: $(VENV)/.dev-installed
	$(BIN)/python bench/profile.py get

SEED ?= 7
DURATION ?= 60

crash: $(VENV)/.run-installed
	$(BIN)/python bench/crash.py --seed $(SEED) --duration $(DURATION)

crash-quick: $(VENV)/.run-installed
	$(BIN)/python bench/crash.py --quick --seed $(SEED)

# Known vulnerabilities in the pinned runtime dependencies (pip-audit asks PyPI).
audit: $(VENV)/.dev-installed
	$(BIN)/pip-audit --requirement requirements.txt --progress-spinner off

EXAMPLES ?= 400

# schemathesis, every check, on a fresh database of DATABASE_URL's kind (SQLite when unset);
# tests/test_fuzz.py runs its --quick variant in make test.
fuzz: $(VENV)/.dev-installed
	$(BIN)/python bench/fuzz.py --seed $(SEED) --max-examples $(EXAMPLES)

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.dev-installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) staticfiles db.sqlite3* test_db.sqlite3*
