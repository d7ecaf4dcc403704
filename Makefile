# Everything a new machine needs, from a clean clone with only Python 3.11:
#   make test   -> virtualenv + install + test suite
#   make demo   -> virtualenv + install + the main job on the embedded default data
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The virtualenv is rebuilt only when the requirements or the package metadata change.
STAMP  := $(VENV)/.ready-$(shell cat requirements.txt pyproject.toml | sha1sum | cut -c1-12)

.PHONY: venv test demo lint bench bench-training clean

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	@rm -f $(VENV)/.ready-*
	@touch $@

test: $(STAMP)
	$(PY) -m pytest

demo: $(STAMP)
	$(PY) -m hardmine.tools.demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Quick micro-benchmarks (a few minutes); each prints a table and writes JSON.
bench: $(STAMP)
	$(PY) benchmarks/sampler_bench.py
	$(PY) benchmarks/catpow_bench.py
	$(PY) benchmarks/synthetic_bench.py
	$(PY) benchmarks/sep_metrics_bench.py

# Training benchmarks on the tiny SepFormer (about an hour on 2 CPU cores).
bench-training: $(STAMP)
	$(PY) benchmarks/overhead_bench.py
	$(PY) benchmarks/quality_bench.py

clean:
	rm -rf $(VENV) results .pytest_cache
