"""CPU threads: how many CPUs this process may really use, and torch's intra-op thread count set to it.

torch starts one intra-op thread per CPU it sees (``os.sched_getaffinity``), but it does not look at a
container's CPU quota: in a container limited to 1-2 CPUs on a 64-core host (Docker ``--cpus``, Kubernetes,
Binder, which also sets ``CPU_LIMIT``) it starts 64 threads that take turns on 2 CPUs' worth of time, and
every step waits for the slowest. ``benchmarks/bench_threads.py`` measures the difference (figures in
``benchmarks/README.md``).

``available_cpus()`` is the smallest of

* the CPUs in the process's affinity mask (``taskset``, cpusets);
* the cgroup v2 quota, ``cpu.max`` = "quota period" -> ceil(quota / period), of the process's cgroup and of
  every cgroup above it;
* the cgroup v1 quota, ``cpu.cfs_quota_us / cpu.cfs_period_us`` (rounded up; -1 means none), likewise;
* ``CPU_LIMIT`` (a number of CPUs, rounded up), the variable Binder and JupyterHub set;

and at least 1. ``import kdlab`` calls ``configure_threads()``, which sets ``torch.set_num_threads`` to that
number unless the user chose: ``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS`` is set, or ``torch.set_num_threads``
was already called with a count other than torch's default. To choose after ``import kdlab``, call
``torch.set_num_threads(n)``: it wins. ``KDLAB_NUM_THREADS=n`` picks the count kdlab sets.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["available_cpus", "configure_threads", "thread_setting"]

_USER_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
# What configure_threads() did, for config.json and the benchmarks: {"threads": n, "reason": "..."}.
_SETTING = {}


def available_cpus(environ=None, cgroup_root="/sys/fs/cgroup", proc_cgroup="/proc/self/cgroup"):
    """The number of CPUs this process may use: min(affinity, cgroup v1/v2 quota, CPU_LIMIT), at least 1.

    environ, cgroup_root and proc_cgroup are there for the tests (fake cgroup files); the defaults read the
    running process's."""
    environ = os.environ if environ is None else environ
    return min(limit for limit, _ in _limits(environ, Path(cgroup_root), Path(proc_cgroup)))


def _limits(environ, cgroup_root, proc_cgroup):
    """[(cpus, where from)] of every limit found; the affinity (or cpu_count) is always there."""
    if hasattr(os, "sched_getaffinity"):
        found = [(len(os.sched_getaffinity(0)), "affinity")]
    else:
        found = [(os.cpu_count() or 1, "cpu_count")]
    for quota in _cgroup_quotas(cgroup_root, proc_cgroup):
        found.append(quota)
    text = environ.get("CPU_LIMIT", "").strip()
    if text:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value > 0:
            found.append((max(1, math.ceil(value)), "CPU_LIMIT"))
    return found


def _cgroup_quotas(root, proc_cgroup):
    """(cpus, file) for every CPU quota on the process's cgroup path, cgroup v2 and v1."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return []
    quotas = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":  # cgroup v2: "0::/path"
            for folder in _folders(root, path):
                quota = _v2_quota(folder / "cpu.max")
                if quota is not None:
                    quotas.append(quota)
        elif "cpu" in controllers.split(","):  # cgroup v1: "4:cpu,cpuacct:/path"
            for mount in (root / controllers, root / "cpu", root / "cpu,cpuacct"):
                if mount.is_dir():
                    for folder in _folders(mount, path):
                        quota = _v1_quota(folder)
                        if quota is not None:
                            quotas.append(quota)
                    break
    return quotas


def _folders(mount, path):
    """The cgroup folder of ``path`` under ``mount`` and every folder above it up to the mount. In a container
    with its own cgroup namespace the path is "/" and the mount itself is the process's cgroup."""
    parts = [part for part in path.strip().split("/") if part]
    folders = [mount.joinpath(*parts[:depth]) for depth in range(len(parts), -1, -1)]
    return [folder for folder in folders if folder.is_dir()]


def _v2_quota(path):
    try:
        quota, _, period = path.read_text().strip().partition(" ")
    except OSError:
        return None
    if quota == "max":
        return None
    try:
        cpus = int(quota) / int(period or 100000)
    except (ValueError, ZeroDivisionError):
        return None
    return (max(1, math.ceil(cpus)), str(path)) if cpus > 0 else None


def _v1_quota(folder):
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text().strip())
        period = int((folder / "cpu.cfs_period_us").read_text().strip())
    except (OSError, ValueError):
        return None
    if quota <= 0 or period <= 0:
        return None
    return max(1, math.ceil(quota / period)), str(folder / "cpu.cfs_quota_us")


def configure_threads(environ=None):
    """Set torch's intra-op threads to ``available_cpus()`` unless the user chose; return the setting.

    The setting is a dict {"threads": torch's thread count afterwards, "reason": why}; ``thread_setting()``
    returns the last one. Called by ``import kdlab``."""
    import torch

    environ = os.environ if environ is None else environ
    chosen = [name for name in _USER_VARIABLES if environ.get(name, "").strip()]
    current = torch.get_num_threads()
    defaults = {os.cpu_count() or 1}
    if hasattr(os, "sched_getaffinity"):
        defaults.add(len(os.sched_getaffinity(0)))
    if chosen:
        reason = f"{chosen[0]}={environ[chosen[0]]} (the user's choice)"
    elif current not in defaults and current != _SETTING.get("threads"):
        reason = "torch.set_num_threads was called before import kdlab (the user's choice)"
    else:
        explicit = environ.get("KDLAB_NUM_THREADS", "").strip()
        if explicit:
            try:
                wanted = int(explicit)
            except ValueError:
                raise ValueError(f"KDLAB_NUM_THREADS must be a positive integer, got {explicit!r}") from None
            if wanted < 1:
                raise ValueError(f"KDLAB_NUM_THREADS must be a positive integer, got {explicit!r}")
            reason = f"KDLAB_NUM_THREADS={wanted}"
        else:
            limits = _limits(environ, Path("/sys/fs/cgroup"), Path("/proc/self/cgroup"))
            wanted, source = min(limits)
            reason = f"available CPUs ({source}: {wanted})"
        if wanted != current:
            torch.set_num_threads(wanted)
    _SETTING.clear()
    _SETTING.update(threads=torch.get_num_threads(), reason=reason)
    return dict(_SETTING)


def thread_setting():
    """{"threads": torch's current intra-op thread count, "reason": what ``configure_threads`` decided}."""
    import torch

    return {"threads": torch.get_num_threads(), "reason": _SETTING.get("reason", "not configured by kdlab")}
