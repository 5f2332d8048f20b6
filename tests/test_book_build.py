"""``scripts/build_book.py`` without building a book: a notebook cell that raises fails the build, naming the
notebook and the cell. ``make test`` relies on it: the book test's build is its run of every notebook as
committed (the check nbval makes in ``make notebooks``), see tests/test_book.py."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def build_book(monkeypatch):
    """scripts/build_book.py imported by name (its notebook runner is sent to spawned worker processes, which
    import it again from the same sys.path)."""
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    monkeypatch.delitem(sys.modules, "build_book", raising=False)
    return importlib.import_module("build_book")


@pytest.mark.slow
def test_a_cell_error_fails_the_build_and_names_the_notebook(tmp_path, build_book):
    good = tmp_path / "good.ipynb"
    bad = tmp_path / "bad_lesson.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1 + 1")]), good)
    nbformat.write(nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("y = 2"),
        nbformat.v4.new_code_cell("raise ValueError('lesson broke here')"),
        nbformat.v4.new_code_cell("z = 3"),
    ]), bad)
    with pytest.raises(RuntimeError) as raised:
        build_book.execute_all([good, bad], jobs=1, timeout=120)
    message = str(raised.value)
    assert "bad_lesson.ipynb: a cell failed while building the book" in message
    assert "raise ValueError('lesson broke here')" in message and "ValueError" in message


@pytest.mark.slow
def test_a_cell_that_times_out_fails_the_build_and_names_the_notebook(tmp_path, build_book):
    slow = tmp_path / "slow_lesson.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import time; time.sleep(60)")]), slow)
    with pytest.raises(RuntimeError) as raised:
        build_book.execute_all([slow], jobs=1, timeout=2)
    assert "slow_lesson.ipynb: a cell failed while building the book (CellTimeoutError)" in str(raised.value)
