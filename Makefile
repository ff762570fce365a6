# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
WSI := $(VENV)/bin/wsireview
WORKSPACE ?= data
DEMO_SLIDES ?= 12
SEED ?= 0
PYTEST_ARGS ?=

.PHONY: venv demo serve test lint typecheck bench clean-demo constraints

venv: $(VENV)/.installed

# torch 2.13.0 first: that takes the CPU build; the project's range then installs nothing more.
# constraints.txt pins every other package to what CI tested.
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

# After a deliberate dependency change: pin what is installed now (torch and the project excluded).
constraints: venv
	{ sed -n 1,2p constraints.txt; $(PY) -m pip freeze --exclude-editable | grep -viE '^(torch|wsireview)=='; } > constraints.tmp
	mv constraints.tmp constraints.txt

demo: venv
	$(WSI) --workspace $(WORKSPACE) demo --out $(WORKSPACE)/demo-cohort --slides $(DEMO_SLIDES) --seed $(SEED)
	$(WSI) --workspace $(WORKSPACE) add $(WORKSPACE)/demo-cohort --labels $(WORKSPACE)/demo-cohort/labels.csv
	$(WSI) --workspace $(WORKSPACE) retrain --seed $(SEED)
	$(WSI) --workspace $(WORKSPACE) status
	$(WSI) --workspace $(WORKSPACE)
	@echo "The slides in a browser: make serve   (or $(WSI) --workspace $(WORKSPACE) serve)"

# The viewer in a browser, on 127.0.0.1:8000.
serve: venv
	$(WSI) --workspace $(WORKSPACE) serve

test: venv lint typecheck
	$(PY) -m pytest $(PYTEST_ARGS)

lint: venv
	$(PY) -m ruff check wsireview tests benchmarks

# mypy, not strict (settings in pyproject.toml): zero errors expected.
typecheck: venv
	$(PY) -m mypy wsireview

bench: venv
	$(PY) benchmarks/ingest_time.py
	$(PY) benchmarks/demo_generation.py
	$(PY) benchmarks/embed_throughput.py
	$(PY) benchmarks/embed_cluster.py
	$(PY) benchmarks/retrain_time.py
	$(PY) benchmarks/triage_latency.py
	$(PY) -m pip install --quiet 'flask>=3'  # the tile benchmark's baseline server
	$(PY) benchmarks/serve_tiles.py

clean-demo:
	rm -rf $(WORKSPACE)/demo-cohort $(WORKSPACE)/catalog.sqlite* $(WORKSPACE)/thumbs $(WORKSPACE)/masks \
	       $(WORKSPACE)/features $(WORKSPACE)/models
