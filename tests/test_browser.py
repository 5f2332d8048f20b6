"""The tutorials as a student meets them: JupyterLab in headless Chromium, widgets and all.

The book build (tests/test_book.py) proves that the cells execute; this test proves that the sliders render
in JupyterLab and that the figures follow them. One JupyterLab server (from this environment, on 127.0.0.1 with a random token,
serving a temporary copy of ``notebooks/``) and one Chromium serve all notebooks. Each notebook gets its own
tab, where the test runs all cells from the Run menu, waits for the named slider, drags its handle with the
mouse and asserts that the figure it drives is redrawn (PNG before != PNG after, once it has settled) and
that no cell shows an error.

To fit the issue's bound (the whole browser test under 3 minutes on 2 cores) the notebooks run side by side:
the cached teacher is trained first (once, by ``kdlab.train_teacher("mnist10k")`` as in the notebooks), then
all tabs start "Run All Cells", and each test waits for its own tab. The kernels use one thread each so that
they share the cores instead of fighting over them.

Needs Debian's Chromium (``apt-get install chromium chromium-driver``), driven by Playwright; a test tool's
own browser download is not used. Without Chromium the test is skipped with that hint, unless
``KDLAB_REQUIRE_BROWSER=1`` (set by ``.ci/run``), which turns the skip into a failure.
Screenshots of every step (and the JupyterLab log) go to a temporary folder whose path is printed on failure;
``KDLAB_KEEP_SCREENSHOTS=1`` keeps it after a pass too. The kernels use ``$KDLAB_CACHE`` when it is set (so
a teacher trained by another test is reused), otherwise a temporary cache. Every wait shares one deadline,
``KDLAB_BROWSER_BUDGET`` seconds (default 180) from the start of this module.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from _browser import launch_chromium, require_browser
from _jupyterlab import Budget, JupyterLabServer, NotebookPage, end_with_parent

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"

# notebook -> description of the slider to move: a kdlab.widgets builder names each slider by its description
# (temperature_explorer: "temperature", power_transform_explorer: "gamma", dtkd_explorer: "teacher scale").
SLIDERS = {
    "01_temperature.ipynb": "temperature",
    "03_ttm_renyi.ipynb": "gamma",
    "04_dtkd_sharpness.ipynb": "teacher scale",
}

WARM_TEACHER = "import kdlab; kdlab.train_teacher('mnist10k', progress=False)"


@pytest.fixture(scope="module")
def budget():
    return Budget(float(os.environ.get("KDLAB_BROWSER_BUDGET", "180")))


@pytest.fixture(scope="module")
def chromium_path():
    return require_browser()


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
def cache_dir(work_dir):
    return Path(os.environ.get("KDLAB_CACHE") or work_dir / "kdlab-cache")


@pytest.fixture(scope="module")
def warm_teacher(chromium_path, cache_dir, shots_dir, budget):
    """Train (or load) the notebooks' teacher in the background while JupyterLab and Chromium start."""
    log = open(shots_dir / "warm-teacher.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-c", WARM_TEACHER], env={**os.environ, "KDLAB_CACHE": str(cache_dir)},
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        preexec_fn=end_with_parent if sys.platform.startswith("linux") else None,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        log.close()


@pytest.fixture(scope="module")
def lab(chromium_path, work_dir, cache_dir, shots_dir, budget):
    server = JupyterLabServer(
        NOTEBOOKS, work_dir, cache_dir, log_path=shots_dir / "jupyterlab.log",
        startup_timeout=budget.remaining_ms(60) / 1000,
        extra_env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},  # three kernels share two cores
    )
    with server:
        yield server


@pytest.fixture(scope="module")
def browser(chromium_path, lab):
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    try:
        browser = launch_chromium(playwright, chromium_path)
        try:
            yield browser
        finally:
            browser.close()
    finally:
        playwright.stop()


@pytest.fixture(scope="module")
def running(request, lab, browser, warm_teacher, shots_dir, budget):
    """Each selected notebook open in its own tab with "Run All Cells" started; name -> NotebookPage or error."""
    selected = [
        item.callspec.params["notebook"] for item in request.session.items
        if item.module is request.module and hasattr(item, "callspec") and "notebook" in item.callspec.params
    ]
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(30_000)
    tabs: dict[str, NotebookPage | BaseException] = {}
    try:
        for name in selected:
            if not (NOTEBOOKS / name).is_file():
                tabs[name] = FileNotFoundError(f"{NOTEBOOKS / name} is missing")
                continue
            tabs[name] = NotebookPage(context.new_page(), lab, name, shots_dir, budget)
        for step in ("begin_open", "finish_open"):  # the tabs load in parallel
            for name, tab in tabs.items():
                if isinstance(tab, NotebookPage):
                    try:
                        getattr(tab, step)()
                    except Exception as error:
                        tab.snap("failure")
                        tabs[name] = error
        try:  # started together, each notebook would train its own copy of a cold teacher
            warm_teacher.wait(timeout=budget.remaining_ms() / 1000)
        except subprocess.TimeoutExpired:
            pass  # out of time: the waits below report it
        for name, tab in tabs.items():
            if isinstance(tab, NotebookPage):
                try:
                    tab.start_run_all()
                except Exception as error:
                    tab.snap("failure")
                    tabs[name] = error
        yield tabs
    finally:
        for tab in tabs.values():
            if isinstance(tab, NotebookPage):
                tab.shut_down_kernel()
        context.close()


@pytest.mark.parametrize("notebook, description", list(SLIDERS.items()))
def test_slider_redraws_figure_in_jupyterlab(notebook, description, running, lab, shots_dir, budget):
    where = f"(screenshots: {shots_dir}; JupyterLab log: {lab.log_path})"
    nb = running[notebook]
    if isinstance(nb, BaseException):
        raise AssertionError(f"{notebook}: could not be opened and run {where}: {nb}") from nb
    try:
        nb.wait_for_run_all(cap_seconds=budget.seconds)
        errors = nb.error_outputs()
        assert not errors, f"{notebook}: cells show errors {where}:\n" + "\n---\n".join(errors)
        unexecuted = nb.unexecuted_cells()
        assert not unexecuted, f"{notebook}: code cells {unexecuted} did not run {where}"

        slider = nb.slider(description)
        slider.scroll_into_view_if_needed()
        cell = slider.locator("xpath=ancestor::div[contains(@class, 'jp-Cell')][1]")
        readout_before = nb.readout(slider)
        figure_before = nb.figure_sources(slider)
        nb.snap(f"{description}-before", cell)
        assert figure_before, f"{notebook}: no figure next to the {description!r} slider {where}"

        nb.drag(slider)
        readout_after = nb.readout(slider)
        nb.snap(f"{description}-dragged", cell)
        assert readout_after != readout_before, (
            f"{notebook}: dragging the {description!r} slider left its value at {readout_before} {where}"
        )
        figure_after = nb.wait_for_settled_figure(slider, figure_before, cap_seconds=30)
        nb.snap(f"{description}-after", cell)
        assert figure_after != figure_before, (
            f"{notebook}: the figure did not change when {description!r} moved "
            f"{readout_before} -> {readout_after} {where}"
        )
        errors = nb.error_outputs()
        assert not errors, f"{notebook}: errors after moving the slider {where}:\n" + "\n---\n".join(errors)
        print(f"{notebook}: {description} {readout_before} -> {readout_after}; "
              f"steps at {', '.join(nb.timeline)} (module budget left {budget.remaining_ms() / 1000:.0f} s); "
              f"screenshots in {shots_dir}")
    except BaseException:
        nb.snap("failure")
        print(f"\n{notebook} failed; screenshots of each step: {shots_dir}\nJupyterLab log: {lab.log_path}\n"
              + lab.log_tail())
        raise
