"""What every browser test shares: Debian's Chromium through Playwright, loopback servers that always stop, one
time budget, and the ipywidgets slider + figure a kdlab explorer shows (used by tests/_jupyterlab.py for
JupyterLab, tests/test_present.py for Voila, tests/test_book.py for the static site).

- ``find_chromium`` / ``require_browser``: the Chromium to drive, or a skip with the install hint (a failure
  when ``KDLAB_REQUIRE_BROWSER=1``, as in CI). ``launch_chromium`` starts it headless with ``CHROMIUM_ARGS``.
- ``start_server`` / ``stop_server``: a server process in its own process group on 127.0.0.1, waited for
  until it answers, and stopped with its whole group plus any survivor whose command line names the test's
  private folder (kernels run in sessions of their own).
- ``Budget``: one wall-clock deadline shared by every wait of a test module.
- ``find_slider``, ``figure_sources``, ``readout``, ``drag``, ``wait_for_settled_figure``: an ipywidgets slider
  found by its description, the PNG(s) of the figure it drives, a mouse drag of its handle, and the figure
  once it has been redrawn. The markup is ipywidgets' own, so the same code reads JupyterLab and Voila pages.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

# Flags the CI machine needs: without the networking ones Chromium keeps dialling Google's hosts
# through a closed network. Playwright launches with a fresh temporary --user-data-dir of its own.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]

INSTALL_HINT = (
    "Chromium is needed for the browser test. On Debian/Ubuntu: "
    "`sudo apt-get install chromium chromium-driver` (or point KDLAB_CHROMIUM at a Chromium/Chrome binary)."
)


def find_chromium() -> str | None:
    """Path of the Chromium to drive: $KDLAB_CHROMIUM if set, else the first of chromium/chromium-browser on PATH."""
    explicit = os.environ.get("KDLAB_CHROMIUM")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def unavailable(reason: str):
    """Skip with an install hint; in CI (KDLAB_REQUIRE_BROWSER=1) a missing browser is a failure instead."""
    import pytest

    if os.environ.get("KDLAB_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} and KDLAB_REQUIRE_BROWSER=1. {INSTALL_HINT}", pytrace=False)
    pytest.skip(f"{reason}. {INSTALL_HINT}")


def require_browser() -> str:
    """The Chromium path, after checking that Playwright is importable (else skip or fail, see ``unavailable``)."""
    path = find_chromium()
    if path is None:
        unavailable("Chromium was not found")
    if importlib.util.find_spec("playwright") is None:
        unavailable("the Python package playwright is not installed (pip install playwright)")
    return path


def launch_chromium(playwright, chromium_path: str):
    """Headless Debian Chromium through Playwright (its own browser download is never used)."""
    return playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS, timeout=60_000)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def end_with_parent() -> None:
    """``preexec_fn`` for a child process (Linux): it gets SIGTERM when the test process dies, even by SIGKILL."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def processes_mentioning(marker: str) -> list[int]:
    """PIDs whose command line contains ``marker`` (a test's private folder), e.g. kernels of our server."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            pids.append(int(entry.name))
    return pids


def log_tail(log_path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(Path(log_path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def start_server(command: list[str], *, cwd: Path, env: dict[str, str], log_file, log_path: Path,
                 ready, timeout: float, name: str) -> subprocess.Popen:
    """Start ``command`` in its own process group, output to ``log_file``; return once ``ready()`` is true.

    ``ready()`` is polled every 0.25 s (it may raise ``OSError``/``URLError``, meaning "not yet"). Raises with the
    log's tail when the process exits first or ``timeout`` seconds pass; the caller stops it either way.
    """
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True,  # own process group, so stop_server() can end it and its children
        preexec_fn=end_with_parent if sys.platform.startswith("linux") else None,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with code {process.returncode}; log: {log_path}\n"
                               + log_tail(log_path))
        try:
            if ready():
                return process
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{name} did not answer within {timeout:.0f} s; log: {log_path}\n" + log_tail(log_path))


def url_answers(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status == 200


def stop_server(process: subprocess.Popen | None, marker: str | None = None, grace: float = 15) -> None:
    """SIGTERM the server's process group (SIGKILL after ``grace`` s), then kill any process naming ``marker``."""
    if process is not None and process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        except ProcessLookupError:
            pass
    if marker:
        for pid in processes_mentioning(marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class Budget:
    """A wall-clock deadline shared by every wait of a browser test module (the issues bound each test)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds

    def remaining_ms(self, cap_seconds: float | None = None) -> float:
        """Milliseconds left (at least 1 s so a wait can still report what it waited for), capped if asked."""
        left = self.deadline - time.monotonic()
        if cap_seconds is not None:
            left = min(left, cap_seconds)
        return max(left, 1.0) * 1000.0


# ----------------------------------------------------------------------------------------------------------
# A kdlab explorer on a page: the slider and the figure it drives (ipywidgets markup, any front end)

# The image sources (base64 PNG data URLs) of the figure driven by a slider: the images inside the nearest
# widget container around the slider that holds any image (a kdlab builder's VBox), within the same cell.
_FIGURE_SOURCES_JS = """(slider) => {
  let node = slider.parentElement;
  while (node && !node.classList.contains('jp-Cell')) {
    if (node.classList.contains('widget-container') || node.classList.contains('jp-OutputArea')) {
      const images = [...node.querySelectorAll('img')];
      if (images.length > 0) return images.map(image => image.getAttribute('src') || '');
    }
    node = node.parentElement;
  }
  return [];
}"""


def find_slider(page, scope: str, description: str, timeout_ms: float, name: str):
    """The first ipywidgets slider inside ``scope`` (a CSS selector) whose label reads ``description``.

    Fails with the descriptions of the sliders that are there (or with what the widget outputs show, e.g.
    "Loading widget..." when the ipywidgets front-end extension is missing).
    """
    label = re.compile(rf"^\s*{re.escape(description)}\s*$")
    sliders = page.locator(f"{scope} .widget-slider").filter(has=page.locator(".widget-label", has_text=label))
    try:
        sliders.first.wait_for(timeout=timeout_ms)
    except Exception as error:
        found = page.locator(f"{scope} .widget-slider .widget-label").all_text_contents()
        widget_text = [
            text.strip()[:200] for text in page.locator(f"{scope} .jp-OutputArea-output").all_text_contents()
            if "widget" in text.lower() or "Box(" in text
        ]
        raise AssertionError(
            f"{name}: no slider described {description!r}; sliders found: {found}; "
            f"widget outputs: {widget_text[:5]} ({type(error).__name__})"
        ) from None
    return sliders.first


def figure_sources(slider) -> list[str]:
    return slider.evaluate(_FIGURE_SOURCES_JS)


def readout(slider) -> str:
    return slider.locator(".widget-readout").inner_text().strip()


def drag(page, slider, fraction: float = 0.3) -> None:
    """Drag the slider's handle with the mouse by ``fraction`` of the track, towards the farther end."""
    handle = slider.locator(".noUi-handle")
    track = slider.locator(".noUi-base")
    handle.scroll_into_view_if_needed()
    handle_box, track_box = handle.bounding_box(), track.bounding_box()
    x = handle_box["x"] + handle_box["width"] / 2
    y = handle_box["y"] + handle_box["height"] / 2
    room_right = track_box["x"] + track_box["width"] - x
    room_left = x - track_box["x"]
    distance = fraction * track_box["width"] * (1 if room_right >= room_left else -1)
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + distance, y, steps=5)
    page.mouse.up()


def wait_for_settled_figure(slider, before: list[str], seconds: float, idle=lambda: True) -> list[str]:
    """The slider's figure once it differs from ``before`` and has stopped changing; ``before`` if it never
    changes within ``seconds``.

    A drag sends intermediate values, so the figure is read until ``idle()`` (e.g. the kernel is idle) and two
    reads half a second apart agree.
    """
    deadline = time.monotonic() + seconds
    previous = None
    while time.monotonic() < deadline:
        current = figure_sources(slider)
        if current and current != before and current == previous and idle():
            return current
        previous = current
        time.sleep(0.5)
    return previous if previous else before
