"""Install torch and torchvision before kdlab: CPU-only wheels where there is no NVIDIA GPU.

``make lab`` and ``make test`` run this with the venv's Python before ``pip install -e .``, so that kdlab's
own install finds torch present. On Linux, PyPI's torch is the CUDA build: with its nvidia-* and triton wheels
torch, nvidia-* and triton take 5.3 GB of a venv (1.2 + 3.2 + 0.9 GB for torch 2.14.1), of which a machine
without an NVIDIA GPU uses nothing. So, on Linux, when ``nvidia-smi -L`` lists no GPU, torch and torchvision
come from PyTorch's CPU wheel index (the CPU torch wheel: 0.19 GB to download, 0.7 GB installed). That index
is first probed with a short timeout: when it cannot be reached (a network that allows only PyPI, as on
kdlab's CI machines) the script says so and does nothing, and torch comes from the default index with kdlab's
other dependencies, as with a plain ``pip install``. Measured there: the probe fails in 0.03 s (the name does
not resolve); ``pip install --index-url`` on the same index spends 9.6 s in five retries before going on.

Nothing happens when torch is already installed, on macOS and Windows (PyPI's wheels there are CPU builds
or carry CUDA only on request), or where a GPU is found. Environment:
``KDLAB_TORCH_INDEX`` — another index URL, or ``default`` to skip this step;
``KDLAB_TORCH_PROBE_TIMEOUT`` — seconds the probe may take (default 5).

    python scripts/install_torch.py [--dry-run]      # --dry-run prints the decision and the pip command
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
PROBE_TIMEOUT = 5.0


def has_nvidia_gpu() -> bool:
    """True when ``nvidia-smi -L`` runs and lists at least one GPU."""
    executable = shutil.which("nvidia-smi")
    if executable is None:
        return False
    try:
        listing = subprocess.run([executable, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return listing.returncode == 0 and "GPU" in listing.stdout


def index_reachable(url: str, timeout: float) -> tuple[bool, str]:
    """(reachable, why): one GET of the index page for torch, within ``timeout`` seconds."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/torch/", timeout=timeout) as response:
            return response.status == 200, f"HTTP {response.status}"
    except (urllib.error.URLError, OSError, ValueError) as error:
        return False, str(getattr(error, "reason", error))


def plan(platform: str = sys.platform, environ=os.environ) -> tuple[list[str] | None, str]:
    """(pip arguments or None, the reason): what this script would do on this machine."""
    if importlib.util.find_spec("torch") is not None:
        try:
            version = importlib.metadata.version("torch")
        except importlib.metadata.PackageNotFoundError:
            version = "(unknown version)"
        return None, f"torch {version} is already installed"
    index = environ.get("KDLAB_TORCH_INDEX", CPU_INDEX)
    if index == "default":
        return None, "KDLAB_TORCH_INDEX=default: torch comes from the default index"
    if not platform.startswith("linux"):
        return None, f"{platform}: PyPI's torch wheels are CPU builds here; torch comes from the default index"
    if has_nvidia_gpu():
        return None, "nvidia-smi lists a GPU: torch (CUDA build) comes from the default index"
    timeout = float(environ.get("KDLAB_TORCH_PROBE_TIMEOUT", PROBE_TIMEOUT))
    start = time.perf_counter()
    reachable, why = index_reachable(index, timeout)
    seconds = time.perf_counter() - start
    if not reachable:
        return None, (f"no NVIDIA GPU, but {index} cannot be reached ({why}, {seconds:.2f} s): "
                      "torch comes from the default index")
    return (["install", "--quiet", "torch", "torchvision", "--index-url", index],
            f"no NVIDIA GPU: CPU-only torch and torchvision from {index}")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    arguments, reason = plan()
    print(f"install_torch: {reason}")
    if arguments is None:
        return 0
    command = [sys.executable, "-m", "pip", *arguments]
    print("install_torch: " + " ".join(command))
    if "--dry-run" in argv:
        return 0
    return subprocess.run(command).returncode


if __name__ == "__main__":
    sys.exit(main())
