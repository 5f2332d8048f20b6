# kdlab — two commands do all the set-up on a fresh machine:
#   make lab    opens the tutorials in JupyterLab (extra arguments: make lab LAB_ARGS="--port 9999 --no-browser")
#   make test   runs every test: the unit tests (every notebook run with the exercise solutions switch on),
#               the browser pass (the book built from a clean copy, which runs every notebook as committed, and
#               the JupyterLab, Voila and book pages in Chromium), then the widget tests against ipywidgets 7.7.1
# Both create .venv on first use and reinstall only when pyproject.toml changes. `make lab` installs what the
# tutorials need (kdlab[lab]); `make test` adds the test tools (kdlab[lab,test]).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
LAB_STAMP  := $(VENV)/.kdlab-lab-installed
TEST_STAMP := $(VENV)/.kdlab-test-installed
BOOK_STAMP := $(VENV)/.kdlab-book-installed
# The widget tests also run against Colab's preinstalled ipywidgets 7.7.1, in a small environment of their own
# layered over .venv (only ipywidgets 7.7.1 and ipython_genutils are installed into it).
WIDGETS7       := .venv-ipywidgets7
WIDGETS7_STAMP := $(WIDGETS7)/.kdlab-installed
# Arguments for `jupyter lab`, e.g. LAB_ARGS="--port 9999 --no-browser".
LAB_ARGS ?=
# JupyterLab refuses to start as root (Docker, WSL, cloud notebooks) unless told it may.
ALLOW_ROOT := $(if $(filter 0,$(shell id -u 2>/dev/null)),--allow-root)
# One teacher cache shared by the unit tests, the notebooks and the browser test of a `make test` run.
export KDLAB_CACHE ?= $(CURDIR)/.cache/kdlab
# Threads: kdlab sets torch's thread count to the CPUs this process may use (affinity, cgroup quota,
# CPU_LIMIT); set OMP_NUM_THREADS yourself to choose. pytest-xdist is not used: torch already uses every core.

.PHONY: lab test unit widgets7 notebooks figures bench clean

# Torch first: CPU-only wheels from PyTorch's index where nvidia-smi finds no GPU (scripts/install_torch.py
# falls back to the default index when that one cannot be reached), so kdlab's install finds torch present.
$(LAB_STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) scripts/install_torch.py
	$(PY) -m pip install --quiet -e '.[lab]'
	@touch $(LAB_STAMP)

$(TEST_STAMP): $(LAB_STAMP)
	$(PY) -m pip install --quiet -e '.[lab,test]'
	@touch $(TEST_STAMP)

# `make book` needs only the book extra (Sphinx, MyST-NB, the PyData theme, MathJax, Voila) over the lab one.
$(BOOK_STAMP): $(LAB_STAMP)
	$(PY) -m pip install --quiet -e '.[lab,book]'
	@touch $(BOOK_STAMP)

$(WIDGETS7_STAMP): $(TEST_STAMP)
	rm -rf $(WIDGETS7)
	$(PY) -m venv --without-pip $(WIDGETS7)
	$(PY) scripts/layer_venv.py $(WIDGETS7)
	$(PY) -m pip --python $(WIDGETS7)/bin/python install --quiet --no-deps ipywidgets==7.7.1 ipython_genutils==0.2.0
	@touch $(WIDGETS7_STAMP)

lab: $(LAB_STAMP)
	$(VENV)/bin/jupyter lab $(strip $(ALLOW_ROOT) $(LAB_ARGS)) notebooks/

# Every notebook runs twice in make test, once per mode: with the solutions switch on in the unit pass
# (tests/test_notebook_exercises.py), and as committed in the browser pass, where tests/test_book.py builds the
# book (a cell error fails the build) and checks that no cell raised -- what `make notebooks` (nbval) checks,
# so make test does not run the notebooks a third time through nbval.
test: unit widgets7

# The browser pass runs second, so it finds the teacher the unit tests already trained and cached.
# --durations: the slowest tests are listed in every log, to see where CI's time goes.
unit: $(TEST_STAMP)
	$(PY) -m pytest tests -m "not browser" --durations=25
	$(PY) -m pytest tests -m browser --durations=10

widgets7: $(WIDGETS7_STAMP)
	$(WIDGETS7)/bin/python -c "import ipywidgets; assert ipywidgets.__version__ == '7.7.1', ipywidgets.__version__"
	$(WIDGETS7)/bin/python -m pytest -q -p no:cacheprovider -W ignore::DeprecationWarning \
	    $(wildcard tests/test_widgets*.py)

# nbval on every notebook as committed (make test makes the same check on the book build's run, see above).
notebooks: $(TEST_STAMP)
	$(PY) -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider notebooks/

figures: $(LAB_STAMP)
	$(PY) scripts/export_figures.py --out figures

# The course website (README, executed notebooks, docs/teaching.md, API reference) in build/book/; see
# scripts/build_book.py. Also installs Voila for `kdlab present`.
.PHONY: book
book: $(BOOK_STAMP)
	$(PY) scripts/build_book.py --out build/book

bench: $(LAB_STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf figures .cache .pytest_cache .hypothesis $(WIDGETS7)
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +
