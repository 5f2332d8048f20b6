"""Execute every notebook headless and save each figure it draws as a PNG under figures/ (``make figures``).

    .venv/bin/python scripts/export_figures.py                     # all notebooks/*.ipynb -> figures/
    .venv/bin/python scripts/export_figures.py notebooks/01_temperature.ipynb --out /tmp/figs

Each notebook is executed with nbclient on a copy in a temporary folder (the committed notebook stays
without outputs). Every ``image/png`` output becomes ``figures/<notebook-stem>/fig-NN.png`` in the order
the notebook draws them; the first image of each slider widget (its state when the cell ran) is saved as
``figures/<notebook-stem>/widget-NN.png``. The list of written files is printed.
"""
from __future__ import annotations

import argparse
import base64
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def execute(path: Path, timeout: int) -> nbformat.NotebookNode:
    """Run the notebook at ``path`` in a temporary copy of its folder and return it with outputs."""
    notebook = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="kdlab-figures-") as workdir:
        shutil.copy(path, Path(workdir) / path.name)
        client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": workdir}})
        client.execute()
    return notebook


def figures_of(notebook: nbformat.NotebookNode) -> list[tuple[str, bytes]]:
    """(kind, png bytes) for every PNG in the cell outputs ("fig") and in the widgets' outputs ("widget")."""
    found = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            png = output.get("data", {}).get("image/png")
            if png:
                found.append(("fig", base64.b64decode(png)))
    models = notebook.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    for model in models.values():
        for output in model.get("state", {}).get("outputs", []) or []:
            png = output.get("data", {}).get("image/png") if isinstance(output, dict) else None
            if png:
                found.append(("widget", base64.b64decode(png)))
    return found


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(handle, "wb") as file:
        file.write(data)
    os.replace(temporary, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    parser.add_argument("--out", type=Path, default=ROOT / "figures", help="output folder (default: figures/)")
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per cell (default 1200)")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    if not paths:
        print("no notebooks found", file=sys.stderr)
        return 1
    written = []
    for path in paths:
        start = time.perf_counter()
        notebook = execute(path.resolve(), args.timeout)
        folder = args.out / path.stem
        if folder.exists():
            shutil.rmtree(folder)
        counts = {"fig": 0, "widget": 0}
        for kind, png in figures_of(notebook):
            counts[kind] += 1
            target = folder / f"{kind}-{counts[kind]:02d}.png"
            write_atomically(target, png)
            written.append(target)
        print(f"{path.name}: {counts['fig']} figures, {counts['widget']} widget images "
              f"in {time.perf_counter() - start:.0f} s", flush=True)
    for target in written:
        print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
