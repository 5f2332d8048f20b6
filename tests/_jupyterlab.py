"""Drive a real JupyterLab in headless Chromium, as a student would (used by tests/test_browser.py).

Two pieces, both always cleaned up:

- ``JupyterLabServer``: ``python -m jupyter lab`` from this interpreter's environment on a free loopback
  port with a random token, serving a temporary copy of ``notebooks/`` so nothing is written to the
  repository; Jupyter's config, data, runtime and IPython dirs are temporary too.
- ``NotebookPage``: one JupyterLab tab in Playwright, pointed at Debian's Chromium (a test tool's own
  browser download does not work on the CI machine). It runs all cells through the Run menu, waits for
  the kernel, finds an ipywidgets slider by its description, drags it and reads the figure it drives.

Every step can be saved as a screenshot (``NotebookPage.snap``) into a folder that the test names in its
failure messages.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from _browser import (CHROMIUM_ARGS, INSTALL_HINT, Budget, drag, end_with_parent, figure_sources, find_chromium,
                      find_slider, free_port, log_tail, readout, start_server, stop_server, url_answers,
                      wait_for_settled_figure)

__all__ = ["CHROMIUM_ARGS", "INSTALL_HINT", "Budget", "JupyterLabServer", "NotebookPage", "end_with_parent",
           "find_chromium"]

# JupyterLab renders an error output (and stderr text) with this MIME type.
STDERR_MIME = "application/vnd.jupyter.stderr"
# Markers of a failed cell or a widget that could not be shown.
ERROR_PATTERN = re.compile(
    r"Traceback \(most recent call last\)|\b[A-Za-z_]*(Error|Exception)\b\s*:|Error displaying widget"
)


class JupyterLabServer:
    """A JupyterLab server on 127.0.0.1 serving a temporary copy of ``notebooks``; use as a context manager.

    ``cache_dir`` becomes $KDLAB_CACHE of the kernels (so a trained teacher can be shared with other tests).
    ``log_path`` receives the server's stdout/stderr; ``extra_env`` is added to the server's (and kernels')
    environment.
    """

    def __init__(self, notebooks: Path, work_dir: Path, cache_dir: Path, log_path: Path | None = None,
                 startup_timeout: float = 60.0, extra_env: dict[str, str] | None = None):
        self.work_dir = Path(work_dir)
        self.root_dir = self.work_dir / "notebooks"
        shutil.copytree(notebooks, self.root_dir, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log_path) if log_path else self.work_dir / "jupyterlab.log"
        self.cache_dir = Path(cache_dir)
        self.startup_timeout = startup_timeout
        self.extra_env = dict(extra_env or {})
        self.process: subprocess.Popen | None = None
        self._log_file = None

    def _environment(self) -> dict[str, str]:
        jupyter = self.work_dir / "jupyter"
        env = dict(os.environ)
        env.update(
            JUPYTER_CONFIG_DIR=str(jupyter / "config"),
            JUPYTER_DATA_DIR=str(jupyter / "data"),
            JUPYTER_RUNTIME_DIR=str(jupyter / "runtime"),
            JUPYTERLAB_SETTINGS_DIR=str(jupyter / "lab-settings"),
            JUPYTERLAB_WORKSPACES_DIR=str(jupyter / "lab-workspaces"),
            IPYTHONDIR=str(jupyter / "ipython"),
            KDLAB_CACHE=str(self.cache_dir),
            PYTHONUNBUFFERED="1",
        )
        env.pop("MPLBACKEND", None)  # notebooks rely on the inline backend
        env.update(self.extra_env)
        return env

    def _write_settings(self) -> None:
        """Render every cell (no virtual scrolling) and skip the news prompt, so the page is deterministic."""
        settings = self.work_dir / "jupyter" / "lab-settings"
        notebook_settings = settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
        notebook_settings.parent.mkdir(parents=True, exist_ok=True)
        notebook_settings.write_text(json.dumps({"windowingMode": "none"}))
        page_config = self.work_dir / "jupyter" / "config" / "labconfig" / "page_config.json"
        page_config.parent.mkdir(parents=True, exist_ok=True)
        page_config.write_text(
            json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
        )

    def _write_token(self) -> Path:
        """The token goes into the server's config file (readable by us only), never onto its command line,
        where every user of the machine could read it (``ps``, /proc/PID/cmdline)."""
        config = self.work_dir / "jupyter" / "config" / "jupyter_server_config.json"
        config.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump({"IdentityProvider": {"token": self.token}}, handle)
        return config

    def command(self) -> list[str]:
        """The server's command line (no secret in it: see ``_write_token``)."""
        command = [
            sys.executable, "-m", "jupyter", "lab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={self.root_dir}",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
            "--ServerApp.terminals_enabled=False",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI containers run as root
            command.append("--allow-root")
        return command

    def start(self) -> "JupyterLabServer":
        self._write_settings()
        self._write_token()
        command = self.command()
        self._log_file = open(self.log_path, "wb")
        status_url = f"{self.url}/api/status?token={self.token}"
        self.process = start_server(command, cwd=self.root_dir, env=self._environment(), log_file=self._log_file,
                                    log_path=self.log_path, ready=lambda: url_answers(status_url),
                                    timeout=self.startup_timeout, name="JupyterLab")
        return self

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def notebook_url(self, name: str) -> str:
        """The notebook in a fresh workspace of its own (so several tabs can be open at once)."""
        workspace = re.sub(r"[^A-Za-z0-9]+", "-", Path(name).stem)
        return f"{self.url}/lab/workspaces/{workspace}/tree/{name}?token={self.token}&reset"

    def stop(self) -> None:
        """Stop the server (it shuts its kernels down), then kill whatever of ours is left."""
        process, self.process = self.process, None
        # Kernels run in their own sessions; any survivor still names our runtime dir in its command line.
        stop_server(process, marker=str(self.work_dir / "jupyter" / "runtime"))
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> "JupyterLabServer":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc_info) -> None:
        self.stop()


# ----------------------------------------------------------------------------------------------------------
# The page
# ----------------------------------------------------------------------------------------------------------

_KERNEL_STATUS = '.jp-StatusBar-TextItem[title^="Change kernel"]'
_NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook"

# True once "Run All Cells" has finished: the kernel is idle, no prompt shows "[*]", and either every code
# cell has an execution count or a cell failed (JupyterLab then cancels the cells after it).
_RUN_FINISHED_JS = """([notebookSelector, kernelSelector, stderrMime, errorSource]) => {
  const notebook = document.querySelector(notebookSelector);
  const kernel = document.querySelector(kernelSelector);
  if (!notebook || !kernel || !kernel.textContent.trim().endsWith('| Idle')) return false;
  const indicator = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator');
  if (indicator && indicator.dataset.status && indicator.dataset.status !== 'idle') return false;
  const prompts = [...notebook.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')]
    .map(p => p.textContent.trim());
  if (prompts.some(p => p.includes('*'))) return false;
  if (prompts.length > 0 && prompts.every(p => /^\\[\\d+\\]:?$/.test(p))) return true;
  const error = new RegExp(errorSource);
  return [...notebook.querySelectorAll(`.jp-OutputArea-output[data-mime-type="${stderrMime}"]`)]
    .some(o => error.test(o.textContent));
}"""

class NotebookPage:
    """One notebook opened in JupyterLab in a Playwright ``page``; screenshots go to ``shots_dir``."""

    def __init__(self, page, server: JupyterLabServer, name: str, shots_dir: Path, budget: Budget):
        self.page = page
        self.server = server
        self.name = name
        self.shots_dir = Path(shots_dir)
        self.budget = budget
        self.steps = 0
        self.started = time.monotonic()
        self.timeline: list[str] = []  # "step at seconds" for each screenshot, printed by the test

    def snap(self, step: str, element=None) -> Path:
        """Save a screenshot of the page (or of one element) as ``<notebook>-<nn>-<step>.png``."""
        self.steps += 1
        path = self.shots_dir / f"{Path(self.name).stem}-{self.steps:02d}-{step}.png"
        self.timeline.append(f"{step} {time.monotonic() - self.started:.1f}s")
        try:
            (element or self.page).screenshot(path=str(path), timeout=10_000)
        except Exception as error:  # a screenshot must never hide the real failure
            path.with_suffix(".txt").write_text(f"screenshot failed: {error}\n")
        return path

    def open(self) -> None:
        """Load JupyterLab on this notebook (fresh workspace) and wait until its kernel is idle."""
        self.begin_open()
        self.finish_open()

    def begin_open(self) -> None:
        """Start loading JupyterLab on this notebook; returns once the server answered (tabs load in parallel)."""
        self.page.goto(self.server.notebook_url(self.name), wait_until="commit",
                       timeout=self.budget.remaining_ms(60))

    def finish_open(self) -> None:
        """Wait until the notebook is shown and its kernel is idle; hide the file browser for room."""
        self.page.wait_for_selector(_NOTEBOOK, timeout=self.budget.remaining_ms(90))
        self.wait_for_kernel_idle(cap_seconds=90)
        if self.page.locator("#jp-left-stack").is_visible():
            self.page.keyboard.press("Control+b")
        self.snap("opened")

    def wait_for_kernel_idle(self, cap_seconds: float) -> None:
        self.page.locator(_KERNEL_STATUS).filter(has_text=re.compile(r"\| Idle$")).wait_for(
            timeout=self.budget.remaining_ms(cap_seconds)
        )

    def start_run_all(self) -> None:
        """Run > Run All Cells (returns at once; ``wait_for_run_all`` waits for the cells)."""
        self.page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        self.page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        self.snap("running")

    def wait_for_run_all(self, cap_seconds: float) -> None:
        """Wait until the last cell has finished (or one has failed and JupyterLab cancelled the rest)."""
        try:
            self.page.wait_for_function(
                _RUN_FINISHED_JS,
                arg=[_NOTEBOOK, _KERNEL_STATUS, STDERR_MIME, ERROR_PATTERN.pattern],
                polling=500,
                timeout=self.budget.remaining_ms(cap_seconds),
            )
        except Exception as error:
            prompts = self.page.locator(f"{_NOTEBOOK} .jp-CodeCell .jp-InputArea-prompt").all_text_contents()
            dialogs = self.page.locator(".jp-Dialog").all_inner_texts()
            kernel = self.page.locator(_KERNEL_STATUS).all_inner_texts()
            raise AssertionError(
                f"{self.name}: Run All Cells did not finish in time ({type(error).__name__}); "
                f"kernel {kernel}, prompts {[p.strip() for p in prompts]}, dialogs {dialogs}"
            ) from None
        self.snap("ran-all")

    def unexecuted_cells(self) -> list[int]:
        """1-based indices (among code cells) of cells without an execution count."""
        prompts = self.page.locator(f"{_NOTEBOOK} .jp-CodeCell .jp-InputArea-prompt").all_text_contents()
        return [i + 1 for i, prompt in enumerate(prompts) if not re.fullmatch(r"\[\d+\]:?", prompt.strip())]

    def error_outputs(self) -> list[str]:
        """Texts of every output showing a traceback/exception, or a widget that could not be displayed."""
        outputs = self.page.locator(f"{_NOTEBOOK} .jp-OutputArea-output").all_text_contents()
        return [text.strip()[:2000] for text in outputs if ERROR_PATTERN.search(text)]

    def slider(self, description: str):
        """The first ipywidgets slider of this notebook whose description label reads ``description``."""
        return find_slider(self.page, _NOTEBOOK, description, self.budget.remaining_ms(20), self.name)

    def figure_sources(self, slider) -> list[str]:
        return figure_sources(slider)

    def readout(self, slider) -> str:
        return readout(slider)

    def drag(self, slider, fraction: float = 0.3) -> None:
        drag(self.page, slider, fraction)

    def wait_for_settled_figure(self, slider, before: list[str], cap_seconds: float) -> list[str]:
        """The slider's figure once redrawn and settled with the kernel idle (see ``_browser``)."""
        idle = self.page.locator(_KERNEL_STATUS).filter(has_text=re.compile(r"\| Idle$"))
        return wait_for_settled_figure(slider, before, self.budget.remaining_ms(cap_seconds) / 1000.0,
                                       idle=lambda: idle.count() == 1)

    def shut_down_kernel(self) -> None:
        """Delete this notebook's session through the REST API (frees the kernel's memory)."""
        base = f"{self.server.url}/api/sessions"
        query = f"?token={self.server.token}"
        try:
            with urllib.request.urlopen(base + query, timeout=10) as response:
                sessions = json.load(response)
            for session in sessions:
                if session.get("path", "").endswith(self.name):
                    request = urllib.request.Request(f"{base}/{session['id']}{query}", method="DELETE")
                    urllib.request.urlopen(request, timeout=30).close()
        except (urllib.error.URLError, OSError, ValueError):
            pass  # the server's own shutdown ends the kernel anyway
