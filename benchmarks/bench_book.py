"""Time ``make book`` (``scripts/build_book.py``) with a warm teacher cache, part by part.

    .venv/bin/python benchmarks/bench_book.py              # 2 threads, $KDLAB_CACHE (or ~/.cache/kdlab)
    .venv/bin/python benchmarks/bench_book.py --strict     # exit 1 when over the budget

Budget (issue 17): ``make book`` <= 5 minutes (300 s) on 2 CPU cores with a warm teacher cache. The teacher
is first trained or loaded into ``$KDLAB_CACHE`` (not timed: that is what "warm" means), then the build runs
as ``make book`` runs it -- ``scripts/build_book.py`` in a child process, its default ``--jobs`` -- into a
temporary folder, with ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` set to ``--threads``. Printed: the wall time,
the script's own split (teacher, each notebook, all notebooks, Sphinx) and the load average before and after,
since the machine's other jobs change the numbers.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUDGET_SECONDS = 300.0


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="OMP/MKL threads of the build (default: 2)")
    parser.add_argument("--keep", type=Path, help="build into this folder (site/, src/) and keep it (default: a temporary one)")
    parser.add_argument("--strict", action="store_true", help=f"exit 1 when the build takes over {BUDGET_SECONDS:.0f} s")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    sys.path.insert(0, str(ROOT / "scripts"))
    from build_book import WARM_TEACHER

    subprocess.run([sys.executable, "-c", WARM_TEACHER], check=True, env=env, cwd=ROOT)
    with tempfile.TemporaryDirectory(prefix="kdlab-bench-book-") as scratch:
        directory = args.keep.resolve() if args.keep else Path(scratch)
        before = _load()
        started = time.perf_counter()
        done = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_book.py"),
                               "--out", str(Path(directory) / "site"), "--source", str(Path(directory) / "src")],
                              env=env, cwd=ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
        after = _load()
    if done.returncode != 0:
        print((done.stdout + done.stderr)[-4000:], file=sys.stderr)
        print(f"bench_book: the build failed (exit {done.returncode})", file=sys.stderr)
        return 1
    split = re.search(r"^book: .*index\.html \((.*)\)$", done.stdout, re.M)
    print(f"make book, warm teacher cache, {args.threads} threads: {seconds:.0f} s "
          f"(budget {BUDGET_SECONDS:.0f} s: {'within' if seconds <= BUDGET_SECONDS else 'OVER'})")
    print(f"  split: {split.group(1) if split else 'not printed'}")
    print(f"  load average before {before}, after {after} ({os.cpu_count()} CPUs)")
    return 1 if args.strict and seconds > BUDGET_SECONDS else 0


if __name__ == "__main__":
    sys.exit(main())
