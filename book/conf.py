"""Sphinx configuration of the course website (``make book`` -> build/book/index.html).

``scripts/build_book.py`` stages this file with the executed notebooks, the README and the generated API page
into ``build/book-src/`` and runs Sphinx there; nothing here executes a notebook (``nb_execution_mode`` is
"off": the notebooks arrive executed). Everything a page needs is served from the site itself, MathJax
included, so the book works offline.
"""
import os
import shutil
import sys
from importlib import resources
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, os.environ.get("KDLAB_BOOK_REPO", str(HERE.parents[1])))  # autodoc imports this checkout's kdlab

import kdlab  # noqa: E402

project = "kdlab"
author = "the kdlab authors"
copyright = "the kdlab authors, MIT licence"
release = version = kdlab.__version__

extensions = [
    "myst_nb",               # .md and executed .ipynb pages
    "sphinx.ext.autodoc",    # the API page, from kdlab's docstrings
    "sphinx.ext.napoleon",   # their "Args:" / "Returns:" sections
    "sphinx.ext.mathjax",    # maths in MathJax-ready markup, typeset by the local copy below
]
exclude_patterns = ["_build", "**.ipynb_checkpoints"]

# Notebooks come executed by scripts/build_book.py (two at a time, errors fail the build).
nb_execution_mode = "off"
nb_output_stderr = "remove"        # progress bars and warnings belong to the notebook, not the page
nb_merge_streams = True
nb_ipywidgets_js = {}              # no widget manager from a CDN: the build replaces sliders by their figures
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# MathJax 3 from the Python package django-static-mathjax (no Django needed: it is MathJax's es5 build as
# package data), copied into the site so that pages typeset maths without a network.
_MATHJAX = resources.files("mathjax") / "static" / "mathjax" / "es5"
_STATIC = HERE / "_static_mathjax"
if not (_STATIC / "mathjax" / "tex-mml-chtml.js").is_file():
    shutil.copytree(str(_MATHJAX), _STATIC / "mathjax", dirs_exist_ok=True)
html_static_path = [str(_STATIC)]
mathjax_path = "mathjax/tex-mml-chtml.js"

smartquotes = False  # formulas in docstrings and notebooks keep their primes and straight quotes

html_theme = "pydata_sphinx_theme"
html_title = "kdlab"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "header_links_before_dropdown": 3,  # the tutorials' long titles: the rest under "More"
}
html_sidebars = {"**": []}  # one level of pages: the header is the navigation, no empty left column
html_show_sourcelink = False
html_copy_source = False


def _protect_formulas(app, what, name, obj, options, lines):
    """kdlab's docstrings write formulas in plain text: |x| (absolute values, KL's ||), a * b and p ** 2, which
    reStructuredText reads as substitutions and emphasis. Escape "|" and "*" outside ``literals`` so each
    formula shows as written."""
    for index, line in enumerate(lines):
        parts = line.split("``")
        lines[index] = "``".join(part if k % 2 else part.replace("|", r"\|").replace("*", r"\*")
                                 for k, part in enumerate(parts))


def setup(app):
    app.connect("autodoc-process-docstring", _protect_formulas, priority=400)  # before napoleon (500)
