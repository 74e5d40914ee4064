# Two entry points: `make demo` and `make test`. Both build .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench science clean venv serve

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(PY) -m ruff check .

demo: $(STAMP)
	$(PY) manage.py demo

# The linter first (ruff, configured in pyproject.toml): seconds, and it fails before the suite.
test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest $(PYTEST_ARGS)

# Production: gunicorn (config/gunicorn.conf.py) with DEBUG off unless DEBUG is set. Needs
# SECRET_KEY and ALLOWED_HOSTS (README "Deployment"); prepares the database (migrate, which
# also makes the shared cache's table), the static files and the search indexes first, and runs
# the TAP async worker (manage.py tap_worker) beside gunicorn, stopped with it.
SERVE_ENV = DEBUG=$${DEBUG:-0}
serve: $(STAMP)
	$(SERVE_ENV) $(PY) manage.py migrate --noinput
	$(SERVE_ENV) $(PY) manage.py collectstatic --noinput --verbosity 0
	$(SERVE_ENV) $(PY) manage.py build_index --if-model --verbosity 0
	$(SERVE_ENV) $(PY) manage.py tap_worker & worker=$$!; trap 'kill $$worker 2>/dev/null' EXIT INT TERM; \
	$(SERVE_ENV) $(PY) -m gunicorn --config config/gunicorn.conf.py config.wsgi:application

bench: $(STAMP)
	$(PY) -m benchmarks.run_all

# The held-out science study (benchmarks/bench_science.py): simulates and images a 2 000-exposure
# balanced survey of 36 CCDs on first use (var/science/), then trains and scores; see benchmarks/README.md.
science: $(STAMP)
	$(PY) -m benchmarks.bench_science $(SCIENCE_ARGS)

clean:
	rm -rf $(VENV) var test-artifacts
