# Two entry points: `make demo` and `make test`. Both build .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench science clean venv

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) manage.py demo

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

# The held-out science study (benchmarks/bench_science.py): simulates and images a 5 000-exposure
# balanced survey on first use (var/science/), then trains and scores; see benchmarks/README.md.
science: $(STAMP)
	$(PY) benchmarks/bench_science.py $(SCIENCE_ARGS)

clean:
	rm -rf $(VENV) var test-artifacts
