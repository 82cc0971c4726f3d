# Two commands for a newcomer: `make demo` and `make test`. Both install into .venv first (`make install`).
# Only Python 3.11 is needed on the machine; everything else comes from PyPI.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SERVE ?= 1
PORT ?= 8000
DEMO_DB := var/demo.sqlite3

.PHONY: install demo test lint check-migrations schema clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# A fresh SQLite database every time, the demo scenario, one market day, then the portal on :$(PORT).
# SERVE=0 runs the day and exits (its last line is one JSON object with the day's figures).
demo: install
	mkdir -p var
	rm -f $(DEMO_DB) $(DEMO_DB)-wal $(DEMO_DB)-shm
	env -u DATABASE_URL -u CELERY_BROKER_URL SQLITE_PATH=$(DEMO_DB) $(BIN)/python manage.py migrate --verbosity 0
ifeq ($(SERVE),0)
	env -u DATABASE_URL -u CELERY_BROKER_URL SQLITE_PATH=$(DEMO_DB) $(BIN)/python manage.py demo_day --no-serve --port 0
else
	env -u DATABASE_URL -u CELERY_BROKER_URL SQLITE_PATH=$(DEMO_DB) $(BIN)/python manage.py demo_day --port $(PORT)
endif

# The whole suite. With DATABASE_URL and CELERY_BROKER_URL set it runs on PostgreSQL and the tests
# marked `services` start real Celery workers on Redis. pytest exits 5 when it collects nothing: a failure here.
test: install
	$(BIN)/python manage.py makemigrations --check --dry-run --verbosity 0
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy .

schema: install
	$(BIN)/python manage.py spectacular --validate --fail-on-warn --file var/openapi.yaml

clean:
	rm -rf $(VENV) var/*.sqlite3* var/static
