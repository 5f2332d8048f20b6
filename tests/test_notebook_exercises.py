"""The notebooks' exercises and predict-then-check questions, run the way an instructor runs them.

The book build in tests/test_book.py runs the notebooks as committed (as does nbval, ``make notebooks``):
every exercise unanswered, reported "not attempted", no errors. Here each notebook is executed with the solutions switch on
(``KDLAB_EXERCISE_SOLUTIONS=1``): every exercise cell is then checked with its worked solution and must pass,
and every predict-then-check cell must report (a prediction cannot be filled in: "not attempted").
"""
import re
from pathlib import Path

import nbformat
import pytest

from kdlab import exercises

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("0*.ipynb"))
RESULT = re.compile(r"^\[(passed|failed|not attempted)\] (.+?): (.*)$", re.M)


def _texts(notebook):
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                yield output.get("text", "")
            elif "text/plain" in output.get("data", {}):
                yield output["data"]["text/plain"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_asks_questions_and_exercises(path):
    source = "\n".join(cell.source for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code")
    assert source.count("kdlab.exercises.predict(") >= 2, f"{path.name}: fewer than two predict-then-check questions"
    assert "kdlab.exercises.check(" in source, f"{path.name}: no exercise"
    assert source.count(".check(") >= source.count("kdlab.exercises.predict(") + 1


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_exercises_pass_with_the_solutions_switch(path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv(exercises.SOLUTIONS_ENV, "1")     # the kernel inherits the environment
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    results = [match.groups() for text in _texts(notebook) for match in RESULT.finditer(text)]
    checked = [(status, name, message) for status, name, message in results if name in exercises.names()]
    predictions = [(status, name) for status, name, _ in results if name.startswith("prediction · ")]
    assert checked, f"{path.name}: no exercise reported"
    failed = [(name, message) for status, name, message in checked if status != "passed"]
    assert not failed, f"{path.name}: exercises that did not pass with the solutions filled in: {failed}"
    assert all("worked solution" in message for _, _, message in checked)
    assert len(predictions) >= 2, f"{path.name}: {len(predictions)} predict-then-check reports"
    assert all(status == "not attempted" for status, _ in predictions)
