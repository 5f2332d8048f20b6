"""Tests of kdlab.threads: the CPUs a process may use (affinity, cgroup v1/v2 quotas, CPU_LIMIT) and torch's
thread count set from them at ``import kdlab`` unless the user chose."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kdlab.threads import available_cpus, configure_threads, thread_setting

REPO = Path(__file__).resolve().parents[1]
AFFINITY = len(os.sched_getaffinity(0))


def _cgroup(tmp_path, proc_lines, files):
    """A fake /sys/fs/cgroup tree and /proc/self/cgroup: files maps relative paths to contents."""
    root = tmp_path / "cgroup"
    root.mkdir(parents=True)
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    proc = tmp_path / "proc_self_cgroup"
    proc.write_text("\n".join(proc_lines) + "\n")
    return {"cgroup_root": root, "proc_cgroup": proc}


def test_no_limits_means_the_affinity_mask(tmp_path):
    paths = _cgroup(tmp_path, ["0::/"], {"cpu.max": "max 100000"})
    assert available_cpus(environ={}, **paths) == AFFINITY


@pytest.mark.parametrize("cpu_max, expected", [
    ("100000 100000", 1),   # one CPU
    ("50000 100000", 1),    # half a CPU: at least one thread
    ("150000 100000", 2),   # 1.5 CPUs: rounded up
    ("6400000 100000", None),  # 64 CPUs: the affinity mask is smaller
])
def test_cgroup_v2_quota(tmp_path, cpu_max, expected):
    paths = _cgroup(tmp_path, ["0::/user.slice/session"], {"user.slice/session/cpu.max": cpu_max})
    assert available_cpus(environ={}, **paths) == min(expected or AFFINITY, AFFINITY)


def test_cgroup_v2_quota_of_a_parent_cgroup_counts(tmp_path):
    paths = _cgroup(tmp_path, ["0::/kubepods/pod1/container"], {
        "kubepods/pod1/cpu.max": "100000 100000",
        "kubepods/pod1/container/cpu.max": "max 100000",
    })
    assert available_cpus(environ={}, **paths) == 1


def test_cgroup_v1_quota(tmp_path):
    base = "cpu,cpuacct/docker/abc"
    paths = _cgroup(tmp_path, ["4:cpu,cpuacct:/docker/abc", "3:memory:/docker/abc"], {
        f"{base}/cpu.cfs_quota_us": "100000", f"{base}/cpu.cfs_period_us": "100000"})
    assert available_cpus(environ={}, **paths) == 1
    unlimited = _cgroup(tmp_path / "unlimited", ["4:cpu,cpuacct:/docker/abc"], {
        f"{base}/cpu.cfs_quota_us": "-1", f"{base}/cpu.cfs_period_us": "100000"})
    assert available_cpus(environ={}, **unlimited) == AFFINITY


def test_cgroup_v1_inside_a_container_namespace_reads_the_mount_itself(tmp_path):
    # In a container the path is "/" or names a host folder that is not visible: the mount is the cgroup.
    paths = _cgroup(tmp_path, ["2:cpu,cpuacct:/docker/not-visible"], {
        "cpu,cpuacct/cpu.cfs_quota_us": "50000", "cpu,cpuacct/cpu.cfs_period_us": "100000"})
    assert available_cpus(environ={}, **paths) == 1


@pytest.mark.parametrize("value, expected", [("1", 1), ("0.5", 1), ("1.2", 2), ("64", None), ("", None),
                                             ("many", None), ("-3", None)])
def test_cpu_limit_variable(tmp_path, value, expected):
    paths = _cgroup(tmp_path, ["0::/"], {})
    assert available_cpus(environ={"CPU_LIMIT": value}, **paths) == min(expected or AFFINITY, AFFINITY)


def _child(code, env=None, prefix=()):
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CPU_LIMIT", "KDLAB_NUM_THREADS")}
    environment.update(PYTHONPATH=str(REPO), **(env or {}))
    done = subprocess.run([*prefix, sys.executable, "-c", code], env=environment, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


REPORT = ("import json, torch, kdlab; from kdlab.threads import thread_setting; "
          "print(json.dumps({'torch': torch.get_num_threads(), 'cpus': kdlab.available_cpus(), **thread_setting()}))")


@pytest.mark.slow
@pytest.mark.skipif(AFFINITY < 2, reason="needs 2 CPUs to narrow the affinity mask to 1")
def test_taskset_narrows_the_threads():
    assert shutil.which("taskset"), "taskset (util-linux) is needed for this test"
    report = _child(REPORT, prefix=("taskset", "-c", "0"))
    assert (report["torch"], report["cpus"]) == (1, 1)
    assert "affinity" in report["reason"]


@pytest.mark.slow
@pytest.mark.skipif(AFFINITY < 2, reason="needs 2 CPUs to see CPU_LIMIT lower the count")
def test_import_sets_threads_from_cpu_limit_unless_the_user_chose():
    assert _child(REPORT, env={"CPU_LIMIT": "1"})["torch"] == 1
    plain = _child(REPORT)
    assert plain["torch"] == plain["cpus"] == available_cpus()
    chosen = _child(REPORT, env={"CPU_LIMIT": "1", "OMP_NUM_THREADS": str(AFFINITY)})
    assert chosen["torch"] == AFFINITY and "OMP_NUM_THREADS" in chosen["reason"]
    before = _child("import torch; torch.set_num_threads(1); " + REPORT)  # kdlab would pick AFFINITY
    assert before["torch"] == 1 and "set_num_threads" in before["reason"]
    after = _child("import json, torch, kdlab; torch.set_num_threads(1); print(json.dumps(torch.get_num_threads()))",
                   env={"CPU_LIMIT": str(AFFINITY)})
    assert after == 1  # set after import kdlab: the user's call wins
    assert _child(REPORT, env={"KDLAB_NUM_THREADS": "1"})["torch"] == 1


def test_configure_threads_is_repeatable_and_reports(monkeypatch):
    threads = torch.get_num_threads()
    try:
        first = configure_threads(environ={"CPU_LIMIT": "1"})
        assert first["threads"] == 1 and torch.get_num_threads() == 1
        again = configure_threads(environ={})  # kdlab's own earlier setting is not "the user's choice"
        assert again["threads"] == available_cpus() == thread_setting()["threads"]
        with pytest.raises(ValueError, match="KDLAB_NUM_THREADS must be a positive integer"):
            configure_threads(environ={"KDLAB_NUM_THREADS": "zero"})
    finally:
        torch.set_num_threads(threads)
