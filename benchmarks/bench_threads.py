"""A teacher epoch beside a competing process: the old thread setting against kdlab's (prints figures).

    python benchmarks/bench_threads.py [--rounds 3]

The situation of a Binder or Docker session: the container may use fewer CPUs than the host shows, and
another process wants the rest. Here the host has all of this machine's CPUs and one competing process spins
on one of them; the container's share is one CPU fewer, told to kdlab the way Binder tells it
(``CPU_LIMIT``). Each configuration trains one epoch of the mnist10k ``cnn`` teacher (recipe settings,
``pretrained=False``, no cache) in a fresh process:

* old: ``OMP_NUM_THREADS`` = every CPU of the machine (what the Makefile forced, and torch's own default,
  which ignores quotas);
* new: kdlab's setting, ``kdlab.threads.available_cpus()`` (affinity, cgroup quota, ``CPU_LIMIT``).

Also without the competing process and without a quota, where both settings are the same count. The
rounds alternate old and new, so drift of the shared machine hits both; the medians and their ratio are
printed.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time, torch, kdlab
from kdlab.threads import thread_setting
data = kdlab.load_dataset("mnist10k")
size = int(sys.argv[1])
train = data if size >= len(data.train_targets) else data.transfer_set(size)
kdlab.train_teacher(data.transfer_set(200), model="cnn", epochs=1, cache=False, pretrained=False, progress=False)
start = time.perf_counter()
kdlab.train_teacher(train, epochs=1, cache=False, pretrained=False, progress=False)
print(json.dumps({"seconds": time.perf_counter() - start, **thread_setting()}))
"""

SPIN = "while True: pass"


def _epoch(env, images):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CPU_LIMIT", "KDLAB_NUM_THREADS"):
        if env.get(name) == "":
            env.pop(name)
    output = subprocess.run([sys.executable, "-c", CHILD, str(images)], env=env, capture_output=True, text=True,
                            check=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


def _compare(label, old_env, new_env, rounds, images):
    times = {"old": [], "new": []}
    threads = {}
    for _ in range(rounds):
        for name, env in (("old", old_env), ("new", new_env)):
            result = _epoch(env, images)
            times[name].append(result["seconds"])
            threads[name] = f"{result['threads']} thread(s): {result['reason']}"
    old, new = statistics.median(times["old"]), statistics.median(times["new"])
    print(f"\n== {label}")
    for name in ("old", "new"):
        print(f"  {name}: {threads[name]}; epoch {', '.join(f'{t:.2f}' for t in times[name])} s "
              f"-> median {statistics.median(times[name]):.2f} s")
    print(f"  old / new = {old / new:.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=8000,
                        help="training images of the timed epoch (default: all 8,000 of mnist10k)")
    args = parser.parse_args()
    cpus = len(os.sched_getaffinity(0))
    print(f"machine: {cpus} CPUs in the affinity mask, {os.cpu_count()} online, load average "
          f"{os.getloadavg()[0]:.1f}; timed epoch on {args.images} images")
    if cpus < 2:
        raise SystemExit("bench_threads needs at least 2 CPUs")
    old = {"OMP_NUM_THREADS": str(cpus), "MKL_NUM_THREADS": str(cpus), "CPU_LIMIT": ""}
    share = {"OMP_NUM_THREADS": "", "MKL_NUM_THREADS": "", "CPU_LIMIT": str(cpus - 1)}
    plain = {"OMP_NUM_THREADS": "", "MKL_NUM_THREADS": "", "CPU_LIMIT": ""}
    spinner = subprocess.Popen([sys.executable, "-c", SPIN])
    try:
        _compare(f"one competing process, container share of {cpus - 1} CPU(s) (CPU_LIMIT={cpus - 1})",
                 old, share, args.rounds, args.images)
    finally:
        spinner.kill()
        spinner.wait()
    _compare("no competing process, no quota (both settings use every CPU)", old, plain, args.rounds, args.images)


if __name__ == "__main__":
    main()
