# Quick start: `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow lint bench docs package clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test,frameworks,nir,tensorboard,sim]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/l2l-pcm chip demo --out outputs
	$(BIN)/l2l-pcm fewshot demo --tasks 200 --out outputs
	$(BIN)/l2l-pcm robot demo --tasks 200 --out outputs
	$(BIN)/l2l-pcm fewshot sweep --tasks 50 --times 1s,1h,1d,30d,1y --compensation none,array --out outputs
	$(BIN)/l2l-pcm robot sweep --tasks 50 --times 1min,1h,1d,30d,1y --compensation none,array --out outputs
	@if $(BIN)/python -c "import mujoco, mujoco.mjx" 2>/dev/null; then \
		$(BIN)/l2l-pcm robot demo --dynamics mujoco --tasks 200 --out outputs/mujoco; \
	else echo "skipped the simulated-arm demo: pip install -e '.[sim]'"; fi

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/pytest -q

test-slow: $(STAMP)
	$(BIN)/pytest -q -m slow

# every benchmark, one summary table; `make bench QUICK=1` for small iteration counts
bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py $(if $(QUICK),--quick)

# the documentation site (mkdocs-material + mkdocstrings) into site/; warnings are errors
docs: $(STAMP)
	$(BIN)/pip install --quiet -e ".[docs]"
	bash docs/vendor_mathjax.sh
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# wheel and sdist into dist/, the wheel installed into fresh environments (.ci/package_check)
package: $(STAMP)
	bash .ci/package_check

clean:
	rm -rf $(VENV) outputs .pytest_cache site dist build
