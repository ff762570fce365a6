# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
WSI := $(VENV)/bin/wsireview
WORKSPACE ?= data
DEMO_SLIDES ?= 12
SEED ?= 0
PYTEST_ARGS ?=

.PHONY: venv demo serve test bench clean-demo

venv: $(VENV)/.installed

# torch 2.13.0 first: that takes the CPU build; the project's range then installs nothing more.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

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

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

bench: venv
	$(PY) benchmarks/ingest_time.py
	$(PY) benchmarks/demo_generation.py
	$(PY) benchmarks/embed_throughput.py
	$(PY) benchmarks/retrain_time.py
	$(PY) benchmarks/triage_latency.py
	$(PY) -m pip install --quiet 'flask>=3'  # the tile benchmark's baseline server
	$(PY) benchmarks/serve_tiles.py

clean-demo:
	rm -rf $(WORKSPACE)/demo-cohort $(WORKSPACE)/catalog.sqlite* $(WORKSPACE)/thumbs $(WORKSPACE)/masks \
	       $(WORKSPACE)/features $(WORKSPACE)/models
