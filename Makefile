# The quickstart is `make demo` and `make test`; both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast bench lint format clean

setup: $(STAMP)

# Reinstall whenever the dependency declarations change.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,bench]'
	touch $(STAMP)

demo: setup
	$(PY) scripts/demo.py

test: setup lint
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

# Benchmarks write markdown + JSON under benchmarks/results/ (see benchmarks/README.md).
bench: setup
	$(PY) -m benchmarks.framework_overhead
	$(PY) -m benchmarks.itc_vs_open_clip
	$(PY) -m benchmarks.data_pipeline
	$(PY) -m benchmarks.convert_throughput
	$(PY) -m benchmarks.retrieval_cost

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) outputs data .pytest_cache .ruff_cache
