# make run: a development server on http://127.0.0.1:8000 with SQLite.
# make test: the whole suite (SQLite by default; set DATABASE_URL for PostgreSQL).
# make crash: the crash test (SEED=7 DURATION=60); make crash-quick: its ~10 s variant.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEV := DJANGO_DEBUG=1

.PHONY: run test lint format superuser crash crash-quick clean

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
	@echo "API:   http://127.0.0.1:8000/conversations/1234"
	@echo "Admin: http://127.0.0.1:8000/admin/ (create a login with: make superuser)"
	$(DEV) $(BIN)/python manage.py runserver 127.0.0.1:8000

superuser: $(VENV)/.run-installed
	$(DEV) $(BIN)/python manage.py createsuperuser

test: $(VENV)/.dev-installed
	$(BIN)/pytest

SEED ?= 7
DURATION ?= 60

crash: $(VENV)/.run-installed
	$(BIN)/python bench/crash.py --seed $(SEED) --duration $(DURATION)

crash-quick: $(VENV)/.run-installed
	$(BIN)/python bench/crash.py --quick --seed $(SEED)

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.dev-installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) staticfiles db.sqlite3* test_db.sqlite3*
