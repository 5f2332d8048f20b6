"""``kdlab present``: which notebook it picks, its errors, and (in Chromium) the page Voila serves: no code,
the temperature slider of notebook 01 live, the figure following it, only on 127.0.0.1 and only with the token.

The browser test starts the real command (``kdlab present 01 --no-browser --port P``) in a temporary folder
holding a copy of ``notebooks/``, with Jupyter's config and runtime folders and $TMPDIR inside it, so that
stopping the command's process group and killing whatever still names that folder (Voila's kernel) leaves
nothing running. Every wait shares one deadline, ``KDLAB_BROWSER_BUDGET`` seconds (default 180).
"""
from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from _browser import (Budget, drag, figure_sources, find_slider, free_port, launch_chromium, log_tail, readout,
                      require_browser, start_server, stop_server, wait_for_settled_figure)
from kdlab import cli

REPO = Path(__file__).resolve().parents[1]
URL_PATTERN = re.compile(r"http://127\.0\.0\.1:(\d+)/\?token=([0-9a-f]{32})")


def test_notebook_is_found_by_number_prefix_or_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./notebooks here: the checkout's notebooks/ is used
    assert cli._find_notebook("01") == REPO / "notebooks" / "01_temperature.ipynb"
    assert cli._find_notebook("3") == REPO / "notebooks" / "03_ttm_renyi.ipynb"
    assert cli._find_notebook("04_dtkd") == REPO / "notebooks" / "04_dtkd_sharpness.ipynb"
    mine = tmp_path / "notebooks" / "01_mine.ipynb"
    mine.parent.mkdir()
    mine.write_text("{}")
    assert cli._find_notebook("01") == mine  # ./notebooks comes first
    assert cli._find_notebook(str(mine)) == mine.resolve()


@pytest.mark.parametrize("argv, message", [
    (["present", "99"], r"NOTEBOOK '99': no notebook starting with '99'.*available: 01_temperature\.ipynb"),
    (["present", "missing/x.ipynb"], r"NOTEBOOK 'missing/x\.ipynb' is not a \.ipynb file"),
    (["present", "01", "--port", "70000"], r"--port must be between 1 and 65535, got 70000"),
])
def test_bad_arguments_end_with_a_message(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err), capsys.readouterr()


def test_an_ambiguous_prefix_names_the_candidates(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notebooks").mkdir()
    for name in ("01_a.ipynb", "01_b.ipynb"):
        (tmp_path / "notebooks" / name).write_text("{}")
    with pytest.raises(SystemExit):
        cli.main(["present", "1"])
    assert "NOTEBOOK '1' matches 2 notebooks" in capsys.readouterr().err


def test_a_busy_port_is_refused_before_voila_starts(capsys):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["present", "01", "--port", str(port), "--no-browser"])
    assert exit_info.value.code == 2
    assert f"--port {port} is already in use" in capsys.readouterr().err


def _listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) of the sockets listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A = LISTEN
                found.add(address)
    return found


@pytest.mark.browser
@pytest.mark.slow
def test_present_01_shows_a_live_temperature_slider_without_code(tmp_path):
    chromium = require_browser()
    budget = Budget(float(os.environ.get("KDLAB_BROWSER_BUDGET", "180")))
    work = Path(tempfile.mkdtemp(prefix="kdlab-present-"))
    shutil.copytree(REPO / "notebooks", work / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    port = free_port()
    log_path = tmp_path / "present.log"
    env = dict(os.environ)
    env.update(TMPDIR=str(work), JUPYTER_CONFIG_DIR=str(work / "jupyter-config"),
               JUPYTER_RUNTIME_DIR=str(work / "jupyter-runtime"), IPYTHONDIR=str(work / "ipython"),
               KDLAB_CACHE=os.environ.get("KDLAB_CACHE") or str(work / "cache"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               PYTHONUNBUFFERED="1",
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # one kernel among the other tests' processes
    env.pop("MPLBACKEND", None)
    script = Path(sys.executable).with_name("kdlab")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "kdlab.cli"]
    command += ["present", "01", "--no-browser", "--port", str(port)]
    process = None
    with open(log_path, "wb") as log_file:
        try:
            process = start_server(command, cwd=work, env=env, log_file=log_file, log_path=log_path,
                                   ready=lambda: URL_PATTERN.search(log_path.read_text(errors="replace")),
                                   timeout=budget.remaining_ms(90) / 1000, name="kdlab present")
            url = URL_PATTERN.search(log_path.read_text()).group(0)
            assert URL_PATTERN.search(url).group(1) == str(port)
            assert _listening_addresses(port) == {"0100007F"}, (  # 127.0.0.1 only, not 0.0.0.0 or ::
                f"Voila listens on {_listening_addresses(port)}, not only on 127.0.0.1")
            try:  # without the token: the login page, never the notebook
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as response:
                    assert "/login" in response.url, f"served without the token: {response.url}"
            except urllib.error.HTTPError as error:
                assert error.code in (401, 403), error
            _drive_present_page(chromium, url, budget, tmp_path)
        except BaseException:
            print(f"kdlab present log ({log_path}):\n{log_tail(log_path, 60)}\nscreenshots: {tmp_path}")
            raise
        finally:
            stop_server(process, marker=str(work), grace=20)
            shutil.rmtree(work, ignore_errors=True)
    assert not process or process.poll() is not None


def _drive_present_page(chromium: str, url: str, budget: Budget, shots: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright, chromium)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            try:
                _check_present_page(page, url, budget, shots)
            except BaseException:
                page.screenshot(path=str(shots / "present-01-failure.png"))
                raise
        finally:
            browser.close()


def _check_present_page(page, url: str, budget: Budget, shots: Path) -> None:
    """Load the Voila page, check it shows no code and no error, drag the temperature slider, check the redraw."""
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    started = time.monotonic()
    page.goto(url, wait_until="commit", timeout=budget.remaining_ms(60))  # Voila runs the notebook first
    slider = find_slider(page, "body", "temperature", max(budget.remaining_ms() - 45_000, 1_000), "kdlab present 01")
    slider.scroll_into_view_if_needed()
    ran = time.monotonic() - started
    page.screenshot(path=str(shots / "present-01-loaded.png"))
    body = page.locator("body").inner_text()
    # Voila keeps empty input areas of code cells in its layout; none may show any source text.
    code = [text for text in page.locator(".jp-CodeCell .jp-InputArea, .jp-CodeMirrorEditor, .cm-editor").all_inner_texts()
            if text.strip()]
    assert not code, f"code is shown: {code[:3]}"
    assert "import kdlab" not in body and "kdlab.widgets." not in body, "code is shown"
    assert "Traceback (most recent call last)" not in body, f"a cell failed:\n{body[-3000:]}"

    before, value_before = figure_sources(slider), readout(slider)
    assert before, "no figure next to the temperature slider"
    drag(page, slider)
    value_after = readout(slider)
    after = wait_for_settled_figure(slider, before, budget.remaining_ms(30) / 1000)
    page.screenshot(path=str(shots / "present-01-dragged.png"))
    assert value_after != value_before, f"dragging left the temperature at {value_before}"
    assert after != before, f"the figure did not change when the temperature moved {value_before} -> {value_after}"
    assert not errors, f"script errors on the Voila page: {errors}"
    print(f"kdlab present 01: page ready in {ran:.0f} s, temperature {value_before} -> {value_after}, "
          f"figure redrawn (budget left {budget.remaining_ms() / 1000:.0f} s)")
