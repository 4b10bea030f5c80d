# make demo | make test | make bench -- each creates the virtual environment when missing.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ldct-installed

.PHONY: venv demo test bench

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip<25"
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

demo: $(STAMP)
	$(VENV)/bin/ldct demo --out demo_out
	$(VENV)/bin/ldct serve

test: $(STAMP)
	bash scripts/test-servers.sh
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/bench_io_simulate.py --out benchmarks/io_simulate.md
	$(PY) benchmarks/bench_infer.py --out benchmarks/infer_speed.md
