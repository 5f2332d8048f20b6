"""Rewrite every place that names kdlab's repository from the one constant, ``[project.urls] Repository``.

    python scripts/sync_repository_url.py           # rewrite README.md, CITATION.cff and the notebooks' install cells
    python scripts/sync_repository_url.py --check   # only report what differs (exit code 1 if anything does)

The repository URL lives in pyproject.toml; the release tag is ``v`` + ``kdlab.__version__``. The notebooks'
first cell installs that tag (not HEAD: a notebook opened from a release gets the kdlab it was written for),
and the README's Binder and Colab links open the notebooks at the same tag. ``tests/test_packaging.py``
checks all of them against the constant, with ``install_cell`` and ``expected_links`` below.
"""
from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def repository():
    """(URL, owner, name) from pyproject.toml's [project.urls] Repository (a GitHub URL)."""
    url = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
    match = re.fullmatch(r"https://github\.com/([\w.-]+)/([\w.-]+)", url)
    if not match:
        raise ValueError(f"[project.urls] Repository must be https://github.com/OWNER/NAME, got {url!r}")
    return url, match.group(1), match.group(2)


def release_tag():
    """``v`` + the version in kdlab/__init__.py (read as text: no torch import)."""
    text = (ROOT / "kdlab" / "__init__.py").read_text()
    return "v" + re.search(r'^__version__ = "([^"]+)"', text, re.MULTILINE).group(1)


def install_cell(url=None, tag=None):
    """The source of every notebook's first cell."""
    url = url or repository()[0]
    tag = tag or release_tag()
    return ("try:\n"
            "    import kdlab\n"
            f"except ImportError:  # e.g. on Colab: kdlab's release {tag}; Colab's torch and ipywidgets are kept\n"
            f'    %pip install -q "kdlab @ git+{url}@{tag}"\n'
            "    import kdlab")


def expected_links(notebook_name, url=None, tag=None):
    """(Binder URL, Colab URL) of a notebook at the release tag."""
    _, owner, name = repository() if url is None else (url, *url.rstrip("/").split("/")[-2:])
    tag = tag or release_tag()
    return (f"https://mybinder.org/v2/gh/{owner}/{name}/{tag}?labpath=notebooks%2F{notebook_name}",
            f"https://colab.research.google.com/github/{owner}/{name}/blob/{tag}/notebooks/{notebook_name}")


def _sync_readme(text, url, owner, name, tag):
    text = re.sub(r"https://mybinder\.org/v2/gh/[\w.-]+/[\w.-]+/[\w.-]+\?",
                  f"https://mybinder.org/v2/gh/{owner}/{name}/{tag}?", text)
    text = re.sub(r"https://colab\.research\.google\.com/github/[\w.-]+/[\w.-]+/blob/[\w.-]+/",
                  f"https://colab.research.google.com/github/{owner}/{name}/blob/{tag}/", text)
    text = re.sub(r"git\+https://github\.com/[\w.-]+/[\w.-]+?(@[\w.-]+)?(?=[\"'\s])", f"git+{url}@{tag}", text)
    return text


def _sync_notebook(text, cell_source):
    notebook = json.loads(text)
    lines = cell_source.splitlines(keepends=True)
    if notebook["cells"][0]["source"] == lines:
        return text
    notebook["cells"][0]["source"] = lines
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


def main(argv):
    check = "--check" in argv
    url, owner, name = repository()
    tag = release_tag()
    changes = {}
    readme = ROOT / "README.md"
    changes[readme] = _sync_readme(readme.read_text(), url, owner, name, tag)
    citation = ROOT / "CITATION.cff"
    changes[citation] = re.sub(r'^repository-code: ".*"$', f'repository-code: "{url}"', citation.read_text(),
                               count=1, flags=re.MULTILINE)
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        changes[notebook] = _sync_notebook(notebook.read_text(), install_cell(url, tag))
    differing = [path for path, text in changes.items() if path.read_text() != text]
    for path in differing:
        print(f"sync_repository_url: {path.relative_to(ROOT)} {'differs' if check else 'rewritten'}")
        if not check:
            path.write_text(changes[path])
    if not differing:
        print(f"sync_repository_url: everything names {url} at {tag}")
    return 1 if check and differing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
