"""``scripts/build_book.py`` without building a book: a notebook cell that raises fails the build, naming the
notebook and the cell. ``make test`` relies on it: the book test's build is its run of every notebook as
committed (the check nbval makes in ``make notebooks``), see tests/test_book.py."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]


def _load_build_script():
    spec = importlib.util.spec_from_file_location("build_book", REPO / "scripts" / "build_book.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_a_cell_error_fails_the_build_and_names_the_notebook(tmp_path):
    build_book = _load_build_script()
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
