"""The course website (``make book``): built from a clean copy of the checkout with the network cut off, then
read as files (figures, maths, links, API, sliders) and as pages in headless Chromium.

The build runs once per module (in make test's browser pass, see ``pytestmark``; ``scripts/build_book.py``
executes every notebook, so it takes minutes) in a temporary copy of the files git tracks, under
``unshare -rn`` (a network namespace with only loopback) when the machine allows it, else with a
``sitecustomize`` that refuses every non-loopback connection in the build and its kernels. The teacher comes
from ``$KDLAB_CACHE`` (``make test`` trains it in the unit tests).

This build is also ``make test``'s run of every notebook as a student meets it (the solutions switch off):
the notebooks are executed once here instead of a second time through nbval, and
``test_every_notebook_runs_as_committed_without_an_error`` makes nbval's assertion (no cell raises) on the
executed notebooks, plus the student-mode one (every exercise and prediction reports "not attempted").
``make notebooks`` still runs nbval on its own. That a cell error fails the build is tested in the unit pass
(``tests/test_book_build.py``). The solutions-switch run is ``tests/test_notebook_exercises.py``.
"""
from __future__ import annotations

import functools
import html.parser
import http.server
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import nbformat
import pytest

from _browser import Budget, launch_chromium, require_browser
from kdlab import exercises

# The whole module runs in make test's browser pass (``-m browser``): its file checks and its Chromium test share
# one build of the book, which would otherwise be made twice (once per pytest run of ``make unit``).
pytestmark = [pytest.mark.slow, pytest.mark.browser]

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
REQUIRED_API = ["kd_loss", "ttm_loss", "wttm_loss", "dtkd_loss", "distill", "sweep"]
# Notebooks whose slider explorers the browser tests move (tests/test_browser.py): each page must carry the note.
WITH_SLIDERS = ["01_temperature", "03_ttm_renyi", "04_dtkd_sharpness"]

# Refuses every connection that does not go to loopback (for the processes of the build, kernels included).
NO_NETWORK_SITECUSTOMIZE = '''
import ipaddress, socket

def _loopback(host):
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False

def _guard(original):
    def connect(self, address, *args):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
            raise OSError(f"kdlab book test: network access to {address[0]!r} is disabled")
        return original(self, address, *args)
    return connect

socket.socket.connect = _guard(socket.socket.connect)
socket.socket.connect_ex = _guard(socket.socket.connect_ex)
_getaddrinfo = socket.getaddrinfo

def getaddrinfo(host, *args, **kwargs):
    if isinstance(host, bytes):
        host = host.decode()
    if not _loopback(host) and not host.replace(".", "").isdigit() and ":" not in host:
        raise socket.gaierror(f"kdlab book test: name lookup of {host!r} is disabled")
    return _getaddrinfo(host, *args, **kwargs)

socket.getaddrinfo = getaddrinfo
'''


def _load_build_script():
    spec = importlib.util.spec_from_file_location("build_book", REPO / "scripts" / "build_book.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _network_namespace_works() -> bool:
    """True when ``unshare -rn`` can make a namespace with loopback up (root, or unprivileged user namespaces)."""
    if not (shutil.which("unshare") and shutil.which("ip")):
        return False
    probe = subprocess.run(["unshare", "-rn", "sh", "-c", "ip link set lo up"], capture_output=True, timeout=30)
    return probe.returncode == 0


def _clean_copy(destination: Path) -> None:
    """The files git tracks (as they are in the work tree), nothing else: no build/, caches or .venv."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = REPO / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


@pytest.fixture(scope="module")
def site():
    """Build the book once from a clean copy without network; yields (site, build log, how it was cut off, copy,
    the staging folder with the executed notebooks)."""
    with tempfile.TemporaryDirectory(prefix="kdlab-book-") as directory:
        work = Path(directory)
        clone = work / "clone"
        _clean_copy(clone)
        assert not (clone / "build").exists() and not (clone / ".venv").exists()
        out = work / "site"
        env = dict(os.environ)
        env["KDLAB_CACHE"] = os.environ.get("KDLAB_CACHE") or str(work / "cache")
        env["PYTHONPATH"] = str(clone)
        env.pop("MPLBACKEND", None)
        env.pop(exercises.SOLUTIONS_ENV, None)  # the notebooks as a student runs them
        command = [sys.executable, str(clone / "scripts" / "build_book.py"), "--out", str(out),
                   "--source", str(work / "src")]
        if _network_namespace_works():
            how = "unshare -rn (only loopback)"
            command = ["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *command]
        else:
            how = "sitecustomize refusing non-loopback connections"
            guard = work / "guard"
            guard.mkdir()
            (guard / "sitecustomize.py").write_text(NO_NETWORK_SITECUSTOMIZE)
            env["PYTHONPATH"] = os.pathsep.join([str(guard), str(clone)])
        started = time.monotonic()
        result = subprocess.run(command, cwd=clone, env=env, capture_output=True, text=True, timeout=1200,
                                stdin=subprocess.DEVNULL)
        log = result.stdout + result.stderr
        took = time.monotonic() - started
        assert result.returncode == 0, f"the book did not build ({how}), exit {result.returncode}:\n{log[-6000:]}"
        print(f"book built in {took:.0f} s without network ({how})\n{result.stdout[-1500:]}")
        yield out, log, how, clone, work / "src"


class _Page(html.parser.HTMLParser):
    """Links, resources, ids and elements of one HTML page, as the standard library parses it."""

    def __init__(self):
        super().__init__()
        self.links: list[str] = []        # <a href>
        self.resources: list[tuple[str, str]] = []  # (tag, src/href) of scripts, stylesheets, images
        self.ids: set[str] = set()
        self.classes: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if attributes.get("id"):
            self.ids.add(attributes["id"])
        if attributes.get("class"):
            self.classes.append(attributes["class"])
        if tag == "a" and attributes.get("href"):
            self.links.append(attributes["href"])
        if tag in ("script", "img") and attributes.get("src"):
            self.resources.append((tag, attributes["src"]))
        if tag == "link" and attributes.get("href"):
            self.resources.append((f"link rel={attributes.get('rel')}", attributes["href"]))

    def handle_data(self, data):
        self.text.append(data)


@functools.lru_cache(maxsize=None)
def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _external(url: str) -> bool:
    return bool(re.match(r"^(https?:)?//", url))


def _local_target(page_path: Path, url: str) -> tuple[Path, str] | None:
    """(file, fragment) that a relative link of ``page_path`` points to; None for external/special links."""
    if _external(url) or re.match(r"^(mailto|data|javascript|tel):", url):
        return None
    parts = urllib.parse.urlsplit(url)
    target = page_path if not parts.path else (page_path.parent / urllib.parse.unquote(parts.path)).resolve()
    if target.is_dir():
        target = target / "index.html"
    return target, parts.fragment


RESULT = re.compile(r"^\[(passed|failed|not attempted)\] (.+?): ", re.M)


def test_every_notebook_runs_as_committed_without_an_error(site):
    """nbval's check (``--nbval-lax``: no cell raises), made on the book's execution of every notebook, and
    the student-mode check: with the solutions switch off every exercise and prediction is "not attempted"."""
    _, log, _, _, staged = site
    for notebook in NOTEBOOKS:
        assert re.search(rf"^book: executed {re.escape(notebook.name)} in \d+ s$", log, re.M), (
            f"{notebook.name} was not executed by the build")
        executed = nbformat.read(staged / "notebooks" / notebook.name, as_version=4)
        code = [cell for cell in executed.cells if cell.cell_type == "code" and cell.source.strip()]
        not_run = [index for index, cell in enumerate(code) if not cell.get("execution_count")]
        assert code and not not_run, f"{notebook.name}: code cells that did not run: {not_run}"
        errors = [(index, output.get("ename"), output.get("evalue"))
                  for index, cell in enumerate(executed.cells) for output in cell.get("outputs", [])
                  if output.get("output_type") == "error"]
        assert not errors, f"{notebook.name}: cells that raised: {errors}"
        texts = [output.get("text", "") if output.get("output_type") == "stream"
                 else output.get("data", {}).get("text/plain", "")
                 for cell in code for output in cell.get("outputs", [])]
        reports = [match.groups() for text in texts for match in RESULT.finditer(text)]
        checked = [(status, name) for status, name in reports
                   if name in exercises.names() or name.startswith("prediction · ")]
        assert checked, f"{notebook.name}: no exercise or prediction reported"
        assert all(status == "not attempted" for status, _ in checked), (
            f"{notebook.name}: with the solutions switch off, reports other than 'not attempted': {checked}")


def test_every_notebook_has_a_page_with_figures_and_maths(site):
    out, _, _, source, _ = site
    assert NOTEBOOKS, "no notebooks in notebooks/"
    mathjax = out / "_static" / "mathjax" / "tex-mml-chtml.js"
    assert mathjax.is_file() and mathjax.stat().st_size > 100_000, f"MathJax is not in the site: {mathjax}"
    for notebook in NOTEBOOKS:
        path = out / "notebooks" / f"{notebook.stem}.html"
        assert path.is_file(), f"no page for {notebook.name}"
        page = _parse(path)
        images = [src for tag, src in page.resources if tag == "img" and "_images/" in src]
        assert images, f"{notebook.name}: its page has no figure"
        for src in images:
            target, _ = _local_target(path, src)
            assert target.is_file() and target.stat().st_size > 1000, f"{notebook.name}: figure {src} is missing"
        maths = [c for c in page.classes if re.search(r"\bmath\b", c)]
        assert maths, f"{notebook.name}: no maths in MathJax markup on its page"
        scripts = [src for tag, src in page.resources if tag == "script"]
        assert any(src.split("?")[0].endswith("_static/mathjax/tex-mml-chtml.js") for src in scripts), (
            f"{notebook.name}: the page does not load the site's own MathJax: {scripts}")
        text = "".join(page.text)
        assert "Traceback (most recent call last)" not in text, f"{notebook.name}: its page shows an error"
        assert "%pip install" not in text, f"{notebook.name}: the Colab install cell is on the page"


def test_internal_links_resolve_and_nothing_loads_from_the_network(site):
    out, _, _, source, _ = site
    pages = sorted(path for path in out.rglob("*.html") if "_static" not in path.relative_to(out).parts)
    assert len(pages) >= len(NOTEBOOKS) + 2
    broken, external = [], []
    for path in pages:
        page = _parse(path)
        for url in page.links:
            target = _local_target(path, url)
            if target is None:
                continue
            file, fragment = target
            if not file.is_file():
                broken.append(f"{path.relative_to(out)}: {url} (no file)")
            elif fragment and file.suffix == ".html" and fragment not in _parse(file).ids:
                broken.append(f"{path.relative_to(out)}: {url} (no id {fragment!r})")
        for tag, url in page.resources:
            if _external(url) and tag != "img":  # an external image (the README's badge) is only a picture
                external.append(f"{path.relative_to(out)}: {tag} {url}")
            elif not _external(url) and not url.startswith("data:"):
                file, _ = _local_target(path, url)
                if not file.is_file():
                    broken.append(f"{path.relative_to(out)}: {tag} {url} (no file)")
    assert not broken, "links that do not resolve:\n" + "\n".join(broken[:30])
    assert not external, "scripts or stylesheets from the network:\n" + "\n".join(external[:30])


def test_front_page_is_the_readme_and_links_every_page(site):
    out, _, _, source, _ = site
    index = _parse(out / "index.html")
    text = " ".join("".join(index.text).split())
    readme_title = (source / "README.md").read_text().splitlines()[0].lstrip("# ").strip()
    assert readme_title.split(" — ")[0] in text
    targets = {str(_local_target(out / "index.html", url)[0].relative_to(out.resolve()))
               for url in index.links if _local_target(out / "index.html", url)
               and _local_target(out / "index.html", url)[0].is_relative_to(out.resolve())}
    for notebook in NOTEBOOKS:
        assert f"notebooks/{notebook.stem}.html" in targets, f"the front page does not link {notebook.name}"
    assert "api.html" in targets
    if (source / "docs" / "teaching.md").is_file():  # the instructor's guide, once it exists
        assert "teaching.html" in targets and (out / "teaching.html").is_file()


def test_api_page_documents_every_public_name_with_its_docstring(site):
    out, _, _, source, _ = site
    import kdlab

    api = _parse(out / "api.html")
    text = " ".join("".join(api.text).split())
    names = _load_build_script().public_names(source / "kdlab" / "__init__.py")
    assert set(REQUIRED_API) <= set(names)
    missing = [name for name in names
               if f"kdlab.{name}" not in api.ids and not any(i.startswith(f"module-kdlab.{name}") for i in api.ids)]
    assert not missing, f"public names without an API entry: {missing}"
    for name in REQUIRED_API:
        first_line = " ".join(getattr(kdlab, name).__doc__.strip().split("\n\n")[0].split()).replace("``", "")
        assert first_line[:60] in text, f"the docstring of kdlab.{name} is not on the API page: {first_line!r}"


def test_sliders_become_their_default_figure_with_a_note_and_links(site):
    out, log, _, _, _ = site
    for stem in WITH_SLIDERS:
        path = out / "notebooks" / f"{stem}.html"
        source = path.read_text(encoding="utf-8")
        assert "application/vnd.jupyter.widget" not in source, f"{stem}: widget markup left without a manager"
        text = " ".join("".join(_parse(path).text).split())
        assert "Interactive in Jupyter" in text and f"kdlab present {stem[:2]}" in text, stem
        links = _parse(path).links
        assert any("mybinder.org" in url and stem in url for url in links), f"{stem}: no Binder link"
        assert any("colab.research.google.com" in url and stem in url for url in links), f"{stem}: no Colab link"
        assert re.search(rf"{stem}\.ipynb: [1-9]\d* slider explorer", log), f"{stem}: no explorer was replaced"


# ----------------------------------------------------------------------------------------------------------
# In Chromium

@pytest.fixture(scope="module")
def served(site):
    """The site on a loopback HTTP server (a thread of this process), shut down after the module."""
    out, _, _, source, _ = site
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(out))

    class Quiet(handler.func):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(out)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def book_browser():
    chromium = require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright, chromium)
        try:
            yield browser
        finally:
            browser.close()


def _open(browser, url: str, base: str, budget: Budget):
    """A page at ``url`` that records every request leaving ``base`` (and blocks it) and every script error."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.outside, page.errors = [], []

    def route(route):
        if route.request.url.startswith(base):
            route.continue_()
        else:
            page.outside.append(route.request.url)
            route.abort()

    page.route("**/*", route)
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.goto(url, wait_until="load", timeout=budget.remaining_ms(60))
    return context, page


def test_book_pages_render_in_chromium(served, book_browser, tmp_path):
    budget = Budget(float(os.environ.get("KDLAB_BROWSER_BUDGET", "180")))
    context, index = _open(book_browser, f"{served}/index.html", served, budget)
    try:
        index.screenshot(path=str(tmp_path / "index.png"))
        assert "kdlab" in index.title()
        nav = index.locator("nav a").all_inner_texts()
        assert any("Temperature" in text for text in nav), f"no tutorial in the navigation: {nav[:20]}"
        assert not index.errors, f"script errors on the front page: {index.errors}"
        assert all(re.search(r"\.(svg|png)(\?|$)", url) for url in index.outside), (
            f"the front page asked the network for more than a badge: {index.outside}")
    finally:
        context.close()

    context, page = _open(book_browser, f"{served}/notebooks/01_temperature.html", served, budget)
    try:
        page.wait_for_function("document.querySelectorAll('mjx-container').length > 0",
                               timeout=budget.remaining_ms(60), polling=250)
        typeset = page.locator("mjx-container").count()
        leftover = page.locator("article").inner_text().count("$$")
        images = page.evaluate("""[...document.querySelectorAll('article img')]
                                    .map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0])""")
        page.screenshot(path=str(tmp_path / "notebook-01.png"), full_page=False)
        assert typeset >= 5 and leftover == 0, f"MathJax typeset {typeset} formulas, {leftover} '$$' left raw"
        assert images and all(ok for _, ok in images), f"figures that did not load: {images}"
        assert page.get_by_text("Interactive in Jupyter").first.is_visible()
        assert not page.errors, f"script errors on the notebook page: {page.errors}"
        assert not page.outside, f"the notebook page asked the network for: {page.outside}"
    finally:
        context.close()
