# kdlab — two commands do all the set-up on a fresh machine:
#   make lab    opens the tutorials in JupyterLab
#   make test   runs every test (unit tests, then every notebook through nbval)
# Both create .venv on first use and reinstall only when pyproject.toml changes.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.kdlab-installed
# One teacher cache shared by the unit tests, the notebooks and the browser test of a `make test` run.
export KDLAB_CACHE ?= $(CURDIR)/.cache/kdlab
# pytest-xdist is not used: the machine has 2 cores and torch already uses both.
export OMP_NUM_THREADS ?= 2

.PHONY: lab test unit notebooks figures bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[lab,test]'
	@touch $(STAMP)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

test: unit notebooks

# The browser test runs last, so it finds the teacher the other tests already trained and cached.
unit: $(STAMP)
	$(PY) -m pytest tests -m "not browser"
	$(PY) -m pytest tests -m browser

notebooks: $(STAMP)
	$(PY) -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider notebooks/

figures: $(STAMP)
	$(PY) scripts/export_figures.py --out figures

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf figures .cache .pytest_cache .hypothesis
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +
