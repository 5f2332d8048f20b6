"""Build the course website (``make book``): a static site in build/book/, entry page build/book/index.html.

    .venv/bin/python scripts/build_book.py                  # everything, into build/book/
    .venv/bin/python scripts/build_book.py --jobs 1         # execute the notebooks one at a time

The site is made with Sphinx, MyST-NB and the PyData theme (configuration: ``book/conf.py``). This script
only prepares what Sphinx reads, in ``build/book-src/`` (rebuilt from scratch every time):

1. the README as the front page (its links to ``notebooks/*.ipynb`` become links to the notebook pages),
   the instructor's guide ``docs/teaching.md`` when it exists, and ``api.rst``: one autodoc entry for every
   public name that ``kdlab/__init__.py`` imports, grouped by the module that defines it;
2. every notebook executed once with nbclient, ``--jobs`` at a time (default 2; with more than one job each
   kernel gets one thread so they share the cores). The teacher the notebooks load is trained (or loaded from
   ``$KDLAB_CACHE``) first, so parallel notebooks never train the same teacher twice. A cell error fails the
   build and names the notebook and the cell;
3. every slider explorer's output replaced by the figure it shows at its default slider values, followed by
   a note with the notebook's Binder and Colab links (taken from the README's tutorial table) and the
   ``kdlab present`` command: a slider needs a kernel to redraw, which a static page does not have;
4. ``sphinx-build -b html`` into ``build/book/``.

Nothing is fetched from the network: MathJax is copied into the site from an installed package.
"""
from __future__ import annotations

import argparse
import ast
import concurrent.futures
import importlib
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WARM_TEACHER = "import kdlab; kdlab.train_teacher('mnist10k', progress=False)"


# ----------------------------------------------------------------------------------------------------------
# 1. Pages

def front_page(readme: str, notebooks: list[str], extra: list[str]) -> str:
    """The README followed by the (hidden) table of contents that makes the site's navigation."""
    entries = "\n".join([f"notebooks/{Path(name).stem}" for name in notebooks] + extra)
    return f"{readme.rstrip()}\n\n```{{toctree}}\n:hidden:\n:maxdepth: 1\n\n{entries}\n```\n"


def public_names(init_file: Path) -> list[str]:
    """Every name that ``kdlab/__init__.py`` imports or assigns, without private ones, in source order."""
    names = []
    for node in ast.parse(init_file.read_text()).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names += [(alias.asname or alias.name).split(".")[0] for alias in node.names]
        elif isinstance(node, ast.Assign):
            names += [target.id for target in node.targets if isinstance(target, ast.Name)]
    return [name for name in dict.fromkeys(names) if not name.startswith("_") and name != "annotations"]


def api_page(package: str = "kdlab") -> str:
    """``api.rst``: autodoc directives for every public name of the package, one section per defining module."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # this checkout's kdlab, whatever the environment has installed
    module = importlib.import_module(package)
    sections: dict[str, list[str]] = {}
    submodules = []
    for name in public_names(Path(module.__file__)):
        obj = getattr(module, name)
        if isinstance(obj, type(module)):
            submodules.append(obj.__name__)
            continue
        if isinstance(obj, type):
            directive = f".. autoclass:: {package}.{name}\n   :members:\n"
        elif callable(obj):
            directive = f".. autofunction:: {package}.{name}\n"
        else:
            directive = f".. autodata:: {package}.{name}\n   :no-value:\n"
        home = getattr(obj, "__module__", None) if callable(obj) else None
        sections.setdefault(home or f"{package} (constants)", []).append(directive)
    lines = ["API reference", "=============", "",
             f"Generated from the docstrings of every public name in ``{package}/__init__.py`` "
             f"(``import {package}``; each name below is ``{package}.<name>``).", ""]
    for home, directives in sections.items():
        lines += [home, "-" * len(home), ""]
        for directive in directives:
            lines += [directive]
    for name in submodules:
        lines += [name, "-" * len(name), "", f".. automodule:: {name}\n   :members:\n"]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# 2. Execution

def _execute(path: str, env: dict[str, str], timeout: int) -> tuple[str, float]:
    """Execute the notebook at ``path`` in place (in the staging folder); return (path, seconds)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    started = time.monotonic()
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3", store_widget_state=True,
                            resources={"metadata": {"path": str(Path(path).parent)}})
    try:
        client.execute(env=env)
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as error:  # a timeout too names the notebook
        raise RuntimeError(f"{Path(path).name}: a cell failed while building the book "
                           f"({type(error).__name__}):\n{error}") from None
    nbformat.write(notebook, path)
    return path, time.monotonic() - started


def execute_all(paths: list[Path], jobs: int, timeout: int) -> dict[str, float]:
    """Execute the notebooks, ``jobs`` at a time, longest (largest file) first; name -> seconds."""
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)  # the notebooks use the inline backend
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if jobs > 1:  # kernels side by side share the cores instead of fighting over them
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    order = sorted(paths, key=lambda path: path.stat().st_size, reverse=True)
    seconds = {}
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = [pool.submit(_execute, str(path), env, timeout) for path in order]
        try:
            for future in concurrent.futures.as_completed(futures):
                path, took = future.result()
                seconds[Path(path).name] = took
                print(f"book: executed {Path(path).name} in {took:.0f} s", flush=True)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return seconds


# ----------------------------------------------------------------------------------------------------------
# 3. Sliders -> default figure + note

def launch_links(readme: str, notebook: str) -> dict[str, str]:
    """The README's Binder and Colab links for ``notebook`` (its tutorial table is the one place they live)."""
    links = {}
    for label, url in re.findall(r"\[(Binder|Colab)\]\((https?://[^)\s]+)\)", readme):
        if notebook in url or notebook.replace("/", "%2F") in url:
            links.setdefault(label, url)
    return links


def _children(model: dict) -> list[str]:
    children = model.get("state", {}).get("children", []) or []
    return [child.removeprefix("IPY_MODEL_") for child in children if isinstance(child, str)]


def _widget_parts(models: dict, model_id: str, found: dict) -> dict:
    """Walk a widget tree: the PNG outputs of its Output widgets and (description, value) of its sliders."""
    model = models.get(model_id, {})
    state = model.get("state", {})
    if model.get("model_name") == "OutputModel":
        for output in state.get("outputs", []) or []:
            data = output.get("data", {}) if isinstance(output, dict) else {}
            if "image/png" in data:
                found["images"].append(data["image/png"])
    elif "Slider" in model.get("model_name", "") and state.get("description"):
        found["sliders"].append((state["description"], state.get("value")))
    for child in _children(model):
        _widget_parts(models, child, found)
    return found


def _value(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def freeze_widgets(notebook, name: str, links: dict[str, str]) -> int:
    """Replace every slider explorer's output by its default figure and a note, drop other widgets (progress
    bars), drop the widget state. Returns how many explorers were replaced."""
    import nbformat

    models = notebook.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    number = re.match(r"\d+", name)
    present = f"kdlab present {number.group(0) if number else name}"
    launch = " · ".join(f"[{label}]({url})" for label, url in links.items())
    replaced = 0
    for cell in notebook.cells:
        outputs = []
        for output in cell.get("outputs", []):
            view = output.get("data", {}).get(WIDGET_VIEW)
            if not view:
                outputs.append(output)
                continue
            parts = _widget_parts(models, view.get("model_id", ""), {"images": [], "sliders": []})
            settings = ", ".join(f"{label} = {_value(value)}" for label, value in parts["sliders"])
            for png in parts["images"]:
                outputs.append(nbformat.v4.new_output("display_data", data={
                    "image/png": png, "text/plain": f"<figure at {settings or 'its default values'}>"}))
            if not parts["sliders"]:  # e.g. a progress bar: nothing to move, nothing to explain
                continue
            sliders = " and ".join(f"*{label}*" for label, _ in parts["sliders"])
            note = (f"**Interactive in Jupyter.** Shown here: the figure at {settings}. "
                    f"To move {sliders}, open this notebook on {launch or 'Binder or Colab'}, "
                    f"or show it in class with `{present}`.")
            outputs.append(nbformat.v4.new_output("display_data", data={"text/markdown": note,
                                                                       "text/plain": note}))
            replaced += 1
        if "outputs" in cell:
            cell["outputs"] = outputs
    notebook.metadata.pop("widgets", None)
    return replaced


def hide_install_cells(notebook) -> None:
    """The first cell of each notebook installs kdlab on Colab: not part of the lesson, so not on the page."""
    for cell in notebook.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if "install" in tags and "remove-cell" not in tags:
            cell["metadata"]["tags"] = [*tags, "remove-cell"]


# ----------------------------------------------------------------------------------------------------------
# 4. The whole build

def stage(source: Path, notebooks: list[Path]) -> list[str]:
    """Fill ``source`` with conf.py, the front page, the guide, the API page and copies of the notebooks."""
    if source.exists():
        shutil.rmtree(source)
    shutil.copytree(ROOT / "book", source, ignore=shutil.ignore_patterns("_build", "__pycache__", "_static_mathjax"))
    (source / "notebooks").mkdir()
    for path in notebooks:
        shutil.copy(path, source / "notebooks" / path.name)
    extra = []
    teaching = ROOT / "docs" / "teaching.md"
    if teaching.is_file():
        shutil.copy(teaching, source / "teaching.md")
        extra.append("teaching")
    readme = (ROOT / "README.md").read_text()
    if teaching.is_file():  # the guide sits beside the front page in the book
        readme = readme.replace("](docs/teaching.md)", "](teaching.md)")
    (source / "api.rst").write_text(api_page())
    extra.append("api")
    (source / "index.md").write_text(front_page(readme, [path.name for path in notebooks], extra))
    return extra


def build(out: Path, source: Path, jobs: int, timeout: int) -> dict:
    import nbformat

    started = time.monotonic()
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    if not notebooks:
        raise SystemExit(f"build_book: no notebooks in {ROOT / 'notebooks'}")
    stage(source, notebooks)
    staged = [source / "notebooks" / path.name for path in notebooks]

    warm = time.monotonic()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    subprocess.run([sys.executable, "-c", WARM_TEACHER], check=True, env=env, stdin=subprocess.DEVNULL)
    timings = {"teacher": time.monotonic() - warm}
    executing = time.monotonic()
    timings.update(execute_all(staged, jobs, timeout))
    timings["notebooks"] = time.monotonic() - executing

    readme = (ROOT / "README.md").read_text()
    for path in staged:
        notebook = nbformat.read(path, as_version=4)
        count = freeze_widgets(notebook, path.stem, launch_links(readme, f"notebooks/{path.name}"))
        hide_install_cells(notebook)
        nbformat.write(notebook, path)
        print(f"book: {path.name}: {count} slider explorer(s) shown as their default figure", flush=True)

    sphinx = time.monotonic()
    if out.exists():
        shutil.rmtree(out)
    command = [sys.executable, "-m", "sphinx", "-b", "html", "-q", "-E", "-d", str(source / "_doctrees"),
               str(source), str(out)]
    subprocess.run(command, check=True, stdin=subprocess.DEVNULL,
                   env={**env, "KDLAB_BOOK_REPO": str(ROOT)})
    timings["sphinx"] = time.monotonic() - sphinx
    timings["total"] = time.monotonic() - started
    return timings


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "book", help="site folder (default: build/book)")
    parser.add_argument("--source", type=Path, default=ROOT / "build" / "book-src",
                        help="staging folder that Sphinx reads (default: build/book-src; emptied first)")
    parser.add_argument("--jobs", type=int, default=2, help="notebooks executed at a time (default: 2)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds allowed per cell (default: 900)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    timings = build(args.out.resolve(), args.source.resolve(), args.jobs, args.timeout)
    detail = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in timings.items())
    print(f"book: {args.out / 'index.html'} ({detail})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
