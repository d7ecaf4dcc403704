# Everything a new machine needs, from a clean clone with only Python 3.11:
#   make test   -> virtualenv + install + test suite
#   make demo   -> virtualenv + install + the main job on the embedded default data
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The virtualenv is rebuilt only when the requirements or the package metadata change.
STAMP  := $(VENV)/.ready-$(shell cat requirements.txt pyproject.toml | sha1sum | cut -c1-12)

.PHONY: venv test demo lint bench clean

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
	$(PY) -m hardmine.demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(STAMP)
	$(PY) benchmarks/sampler_bench.py
	$(PY) benchmarks/catpow_bench.py

clean:
	rm -rf $(VENV) results .pytest_cache
