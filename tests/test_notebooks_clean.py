"""Committed notebooks: valid nbformat 4, no stored outputs or execution counts, the install cell first."""
import importlib.util
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# The install cell is built from the repository URL in pyproject.toml and the release tag (one constant).
_spec = importlib.util.spec_from_file_location("_kdlab_sync_repository_url", ROOT / "scripts" / "sync_repository_url.py")
_sync = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_sync)
INSTALL_SOURCE = _sync.install_cell()


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/*.ipynb not found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_is_valid_nbformat4(path):
    notebook = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    assert notebook.nbformat == 4
    nbformat.validate(notebook)
    assert notebook.metadata.get("kernelspec", {}).get("name") == "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_is_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    dirty = [index for index, cell in enumerate(notebook.cells)
             if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)]
    assert not dirty, f"{path.name}: cells {dirty} store outputs or execution counts (strip them)"
    assert "widgets" not in notebook.metadata, f"{path.name} stores widget state"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_first_cell_is_the_install_cell(path):
    notebook = nbformat.read(path, as_version=4)
    first = notebook.cells[0]
    assert first.cell_type == "code"
    assert "install" in first.metadata.get("tags", [])
    assert first.source.strip() == INSTALL_SOURCE
    second = notebook.cells[1]
    assert second.cell_type == "markdown" and "What you will learn" in second.source
