"""The notebooks' exercises and predict-then-check questions, run the way an instructor runs them.

The book build in tests/test_book.py runs the notebooks as committed (as does nbval, ``make notebooks``):
every exercise unanswered, reported "not attempted", no errors. Here each notebook is executed with the solutions switch on
(``KDLAB_EXERCISE_SOLUTIONS=1``): every exercise cell is then checked with its worked solution and must pass,
and every predict-then-check cell must report (a prediction cannot be filled in: "not attempted").

The notebooks are executed once per module, as many at a time as there are CPUs (at most two, each kernel
then with one thread, as ``scripts/build_book.py`` does): on two cores that finishes sooner than one
two-threaded kernel after another. Each notebook's test then reads its own result (or its own error).
"""
import concurrent.futures
import multiprocessing
import os
import re
from pathlib import Path

import nbformat
import pytest

from kdlab import exercises
from kdlab.threads import available_cpus

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


def _execute(path: str, env: dict) -> tuple[str | None, str | None]:
    """Execute the notebook at ``path`` with ``env`` in its kernel: (the executed notebook as JSON, None), or
    (None, the error) when a cell raised (as text: nbclient's exceptions do not all survive pickling)."""
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    try:
        NotebookClient(notebook, timeout=900, kernel_name="python3",
                       resources={"metadata": {"path": str(Path(path).parent)}}).execute(env=env)
    except Exception as error:  # noqa: BLE001 -- reported by that notebook's test
        return None, f"{type(error).__name__}: {error}"
    return nbformat.writes(notebook), None


@pytest.fixture(scope="module")
def executed():
    """{notebook path: (the executed notebook or None, the error or None)}, with the solutions switch on."""
    jobs = max(1, min(2, available_cpus(), len(NOTEBOOKS)))
    env = {**os.environ, exercises.SOLUTIONS_ENV: "1"}
    env.pop("MPLBACKEND", None)  # the notebooks use the inline backend
    if jobs > 1:  # kernels side by side share the cores instead of fighting over them
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    order = sorted(NOTEBOOKS, key=lambda path: path.stat().st_size, reverse=True)  # longest first
    results = {}
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_execute, str(path), env): path for path in order}
        for future in concurrent.futures.as_completed(futures):
            text, error = future.result()
            results[futures[future]] = (text and nbformat.reads(text, as_version=4), error)
    return results


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_exercises_pass_with_the_solutions_switch(path, executed):
    notebook, error = executed[path]
    assert error is None, f"{path.name}: a cell raised with the solutions switch on:\n{error}"
    results = [match.groups() for text in _texts(notebook) for match in RESULT.finditer(text)]
    checked = [(status, name, message) for status, name, message in results if name in exercises.names()]
    predictions = [(status, name) for status, name, _ in results if name.startswith("prediction · ")]
    assert checked, f"{path.name}: no exercise reported"
    failed = [(name, message) for status, name, message in checked if status != "passed"]
    assert not failed, f"{path.name}: exercises that did not pass with the solutions filled in: {failed}"
    assert all("worked solution" in message for _, _, message in checked)
    assert len(predictions) >= 2, f"{path.name}: {len(predictions)} predict-then-check reports"
    assert all(status == "not attempted" for status, _ in predictions)
