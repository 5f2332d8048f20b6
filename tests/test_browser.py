"""The tutorials as a student meets them: JupyterLab in headless Chromium, widgets and all.

nbval proves that the cells execute; this test proves that the sliders render in JupyterLab and that the
figures follow them. One JupyterLab server (from this environment, on a loopback port with a random token,
serving a temporary copy of ``notebooks/``) and one Chromium serve all notebooks. For each notebook the test
runs all cells from the Run menu, waits for the named slider, drags its handle with the mouse and asserts
that the figure it drives is redrawn (PNG before != PNG after) and that no cell shows an error.

Needs Debian's Chromium (``apt-get install chromium chromium-driver``), driven by Playwright; a test tool's
own browser download is not used. Without Chromium the test is skipped with that hint, unless
``KDLAB_REQUIRE_BROWSER=1`` (set by ``.ci/run``), which turns the skip into a failure.
Screenshots of every step go to a temporary folder whose path is printed on failure.
The kernels share ``$KDLAB_CACHE`` when it is set (so a teacher trained by another test is reused);
otherwise they use a temporary cache. The whole module is bounded by ``KDLAB_BROWSER_BUDGET`` seconds
(default 180, as the issue asks).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from _jupyterlab import INSTALL_HINT, Budget, JupyterLabServer, NotebookPage, CHROMIUM_ARGS, find_chromium

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = Path(os.environ.get("DEVNB", REPO / "notebooks"))

# notebook -> description of the slider to move: a kdlab.widgets builder names each slider by its description
# (temperature_explorer: "temperature", power_transform_explorer: "gamma", dtkd_explorer: "teacher scale").
SLIDERS = {
    "01_temperature.ipynb": "temperature",
    "03_ttm_renyi.ipynb": "gamma",
    "04_dtkd_sharpness.ipynb": "teacher scale",
}


def _unavailable(reason: str):
    """Skip with an install hint; in CI (KDLAB_REQUIRE_BROWSER=1) a missing browser is a failure instead."""
    if os.environ.get("KDLAB_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} and KDLAB_REQUIRE_BROWSER=1. {INSTALL_HINT}", pytrace=False)
    pytest.skip(f"{reason}. {INSTALL_HINT}")


@pytest.fixture(scope="module")
def budget():
    return Budget(float(os.environ.get("KDLAB_BROWSER_BUDGET", "180")))


@pytest.fixture(scope="module")
def chromium_path():
    path = find_chromium()
    if path is None:
        _unavailable("Chromium was not found")
    return path


@pytest.fixture(scope="module")
def work_dir():
    with tempfile.TemporaryDirectory(prefix="kdlab-browser-") as directory:
        yield Path(directory)


@pytest.fixture(scope="module")
def shots_dir(request):
    """Screenshots (and the JupyterLab log) of every step; kept when a test failed or KDLAB_KEEP_SCREENSHOTS=1."""
    directory = Path(tempfile.mkdtemp(prefix="kdlab-browser-shots-"))
    failed_before = request.session.testsfailed
    yield directory
    if request.session.testsfailed == failed_before and os.environ.get("KDLAB_KEEP_SCREENSHOTS") != "1":
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def lab(chromium_path, work_dir, shots_dir, budget):
    cache = os.environ.get("KDLAB_CACHE") or str(work_dir / "kdlab-cache")
    server = JupyterLabServer(NOTEBOOKS, work_dir, Path(cache), log_path=shots_dir / "jupyterlab.log",
                              startup_timeout=budget.remaining_ms(60) / 1000)
    with server:
        yield server


@pytest.fixture(scope="module")
def browser(chromium_path, lab):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the Python package playwright is not installed (pip install playwright)")
    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS, timeout=60_000)
        try:
            yield browser
        finally:
            browser.close()
    finally:
        playwright.stop()


@pytest.mark.parametrize("notebook, description", list(SLIDERS.items()))
def test_slider_redraws_figure_in_jupyterlab(notebook, description, lab, browser, shots_dir, budget):
    path = NOTEBOOKS / notebook
    assert path.is_file(), f"{path} is missing"
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    nb = NotebookPage(page, lab, notebook, shots_dir, budget)
    where = f"(screenshots: {shots_dir}; JupyterLab log: {lab.log_path})"
    started = time.monotonic()
    try:
        nb.open()
        nb.run_all_cells(cap_seconds=150)
        errors = nb.error_outputs()
        assert not errors, f"{notebook}: cells show errors {where}:\n" + "\n---\n".join(errors)
        unexecuted = nb.unexecuted_cells()
        assert not unexecuted, f"{notebook}: code cells {unexecuted} did not run {where}"

        slider = nb.slider(description)
        slider.scroll_into_view_if_needed()
        nb.snap(f"{description}-found")
        readout_before = nb.readout(slider)
        figure_before = nb.figure_sources(slider)
        assert figure_before, f"{notebook}: no figure next to the {description!r} slider {where}"
        cell = slider.locator("xpath=ancestor::div[contains(@class, 'jp-Cell')][1]")
        nb.snap(f"{description}-before", cell)

        nb.drag(slider)
        readout_after = nb.readout(slider)
        nb.snap(f"{description}-dragged", cell)
        assert readout_after != readout_before, (
            f"{notebook}: dragging the {description!r} slider left its value at {readout_before} {where}"
        )
        figure_after = nb.wait_for_settled_figure(slider, figure_before, cap_seconds=30)
        nb.snap(f"{description}-after", cell)
        assert figure_after and figure_after != figure_before, (
            f"{notebook}: the figure did not change when {description!r} moved "
            f"{readout_before} -> {readout_after} {where}"
        )
        errors = nb.error_outputs()
        assert not errors, f"{notebook}: errors after moving the slider {where}:\n" + "\n---\n".join(errors)
        print(f"{notebook}: {description} {readout_before} -> {readout_after} in {time.monotonic() - started:.1f} s "
              f"({', '.join(nb.timeline)}); screenshots in {shots_dir}")
    except BaseException:
        nb.snap("failure")
        print(f"\n{notebook} failed; screenshots of each step: {shots_dir}\nJupyterLab log: {lab.log_path}\n"
              + lab.log_tail())
        raise
    finally:
        nb.shut_down_kernel()
        context.close()
