"""Time every notebook top to bottom with a cold teacher cache and report its peak memory.

    .venv/bin/python benchmarks/bench_notebooks.py                 # all notebooks/*.ipynb
    .venv/bin/python benchmarks/bench_notebooks.py notebooks/01_temperature.ipynb --strict

Budget (from the issue): each notebook runs in <= 90 s on 2 CPU cores with the teacher cache cold and peaks
at <= 1.5 GB resident memory (Binder gives 2 GB); notebook 05 may take 180 s.

Each notebook runs in its own child process (``--one``) with a fresh, empty ``KDLAB_CACHE``, as on a first
visit (the default teacher then comes from the weights shipped with kdlab; other teachers are trained),
``OMP_NUM_THREADS=2`` and ``MKL_NUM_THREADS=2``. The child executes it with
nbclient and reports the wall time of the execution and the kernel's peak resident memory *during the run*:
one extra cell, appended in memory after the notebook's last cell (never written to the notebook or to
``--keep``), prints the kernel's own ``getrusage(RUSAGE_SELF).ru_maxrss``. The budget applies to that figure.

The column "with exit" is ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` of the child after the kernel has shut
down: the largest waited-for descendant, the kernel included *while it exits*. It is higher by about 150-180 MB
for any notebook that imports torch (measured 2026-12-03 on a one-cell notebook that imports torch and kdlab
and builds one optimizer: 891 MB during the run, still 891 MB in an ``atexit`` handler, 1,068 MB with the exit),
so the growth happens in torch's interpreter teardown after every user cell and ``atexit`` handler has run;
it is printed for comparison with figures measured before this change, which were that number. Numbers
depend on what else the machine is running; run it on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUDGET_SECONDS = {"05": 180.0}
DEFAULT_SECONDS = 90.0
BUDGET_MB = 1536.0
PEAK_TAG = "kdlab-bench-kernel-peak-kb:"
# The probe: the kernel's own peak resident memory so far (ru_maxrss is in kilobytes on Linux).
PEAK_PROBE = f"import resource as _r; print({PEAK_TAG!r}, _r.getrusage(_r.RUSAGE_SELF).ru_maxrss)"


def run_one(path: Path, keep: Path | None = None) -> dict:
    """Execute one notebook in this process's kernel child; return seconds and the kernel's peak RSS.

    With ``keep`` (a directory), the executed notebook is also written there, to read its outputs.
    """
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(PEAK_PROBE))  # in memory only: removed before --keep
    with tempfile.TemporaryDirectory(prefix="kdlab-bench-") as workdir:
        client = NotebookClient(notebook, timeout=1800, kernel_name="python3",
                                resources={"metadata": {"path": workdir}})
        start = time.perf_counter()
        client.execute()
        seconds = time.perf_counter() - start
    probe = notebook.cells.pop()
    printed = "".join(output.get("text", "") for output in probe.get("outputs", []) if output.get("name") == "stdout")
    if PEAK_TAG not in printed:
        raise RuntimeError(f"the peak-memory probe cell printed no {PEAK_TAG!r} line: {printed!r}")
    run_peak_kb = int(printed.split(PEAK_TAG)[1].split()[0])
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        target = keep / path.name
        nbformat.write(notebook, str(target) + ".tmp")
        os.replace(str(target) + ".tmp", target)          # atomic: a stopped run leaves no half-written file
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    # ru_maxrss is in kilobytes on Linux; CPU seconds (user + system) of the kernel are reported as well,
    # since they depend much less than wall time on what else the machine is running.
    return {"seconds": seconds, "peak_mb": run_peak_kb / 1024, "exit_peak_mb": usage.ru_maxrss / 1024,
            "cpu_seconds": usage.ru_utime + usage.ru_stime}


def measure(path: Path, keep: Path | None = None) -> dict:
    """Run ``--one path`` in a child process with a cold cache and 2 threads."""
    with tempfile.TemporaryDirectory(prefix="kdlab-cold-cache-") as cache:
        env = dict(os.environ, KDLAB_CACHE=cache, OMP_NUM_THREADS="2", MKL_NUM_THREADS="2",
                   PYTHONUNBUFFERED="1")
        done = subprocess.run([sys.executable, __file__, "--one", str(path),
                               *(["--keep", str(keep)] if keep else [])], env=env, cwd=ROOT,
                              capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": (done.stderr or done.stdout).strip().splitlines()[-1:] or ["failed"]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--keep", type=Path, help="also write the executed notebooks into this directory")
    parser.add_argument("--strict", action="store_true", help="exit with 1 when a notebook is over budget")
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one, args.keep)))
        return 0
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        parser.error(f"notebooks: no such file: {', '.join(missing)}")
    print("load average (1, 5, 15 min) at the start: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    print(f"{'notebook':<40} {'seconds':>8} {'budget':>7} {'cpu s':>7} {'peak MB':>8} {'budget':>7} "
          f"{'with exit':>9}  status", flush=True)
    over = False
    for path in paths:
        budget = BUDGET_SECONDS.get(path.name[:2], DEFAULT_SECONDS)
        result = measure(path, args.keep)
        if "error" in result:
            over = True
            print(f"{path.name:<40} {'-':>8} {budget:>7.0f} {'-':>7} {'-':>8} {BUDGET_MB:>7.0f} {'-':>9}  "
                  f"FAILED: {result['error'][0]}")
            continue
        ok = result["seconds"] <= budget and result["peak_mb"] <= BUDGET_MB
        over |= not ok
        print(f"{path.name:<40} {result['seconds']:>8.1f} {budget:>7.0f} {result['cpu_seconds']:>7.1f} "
              f"{result['peak_mb']:>8.0f} {BUDGET_MB:>7.0f} {result['exit_peak_mb']:>9.0f}  "
              f"{'ok' if ok else 'OVER BUDGET'}", flush=True)
    print("load average (1, 5, 15 min) at the end: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    return 1 if (over and args.strict) else 0


if __name__ == "__main__":
    sys.exit(main())
