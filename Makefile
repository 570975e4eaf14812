# Quick start: `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow lint bench docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test,frameworks,nir]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/l2l-pcm chip demo --out outputs
	$(BIN)/l2l-pcm fewshot demo --tasks 200 --out outputs
	$(BIN)/l2l-pcm robot demo --tasks 200 --out outputs
	$(BIN)/l2l-pcm fewshot sweep --tasks 50 --times 1s,1h,1d,30d,1y --compensation none,array --out outputs
	$(BIN)/l2l-pcm robot sweep --tasks 50 --times 1min,1h,1d,30d,1y --compensation none,array --out outputs

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/pytest -q

test-slow: $(STAMP)
	$(BIN)/pytest -q -m slow

# every benchmark, one summary table; `make bench QUICK=1` for small iteration counts
bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py $(if $(QUICK),--quick)

# API reference from the docstrings (pdoc), written to docs/api/ (not committed)
docs: $(STAMP)
	$(BIN)/pip install --quiet -e ".[docs,frameworks,nir]"
	$(BIN)/pdoc --docformat restructuredtext -o docs/api l2l_pcm l2l_pcm.pcm l2l_pcm.chip l2l_pcm.chip.chip l2l_pcm.chip.layers \
		l2l_pcm.chip.crossbar l2l_pcm.chip.layout l2l_pcm.chip.energy l2l_pcm.fewshot l2l_pcm.robot l2l_pcm.training \
		l2l_pcm.flax_chip l2l_pcm.equinox_chip l2l_pcm.snn l2l_pcm.eprop l2l_pcm.nir_export

clean:
	rm -rf $(VENV) outputs .pytest_cache
