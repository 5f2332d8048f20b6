"""Benchmark: a temperature sweep (8 temperatures x 1 seed of "kd", mlp64 student, 1,000-image transfer set of
mnist10k, the recipe's 10 epochs) three ways, on 2 CPU threads:

  (a) the tutorial-style loop (a DataLoader over a per-sample Dataset, the teacher run on every batch), 8 times;
  (b) kdlab.distill, 8 times;
  (c) one kdlab.sweep (in a fresh subprocess, so that its peak memory is its own).

(b) and (c) are timed warm, after a one-epoch warm-up call each (lazy imports, first-call kernel selection and
the allocator's first growth cost a fresh process ~1.5 s once; that cold call is printed too). "One distill
run" is the median of the 8 runs of (b); (c) is the median of 3 sweeps (--repeats).

Targets (issue "Temperature sweeps at the speed of one run"): (c) <= 2.5x the wall time of ONE distill run,
>= 15x faster than (a), peak RSS of (c) <= 1.5 GB. It also reports the model FLOPs (c) ran per second against
the fp32 matmul GFLOP/s measured here (aim: >= 40 %).

FLOPs are counted analytically: a linear layer costs 2 * in * out per image forward, as much again for its
weight gradient and for its input gradient (not computed for the first layer, whose input is the image); the
convolutions of the "cnn" teacher 2 * H * W * C_out * C_in * k * k per image (counted by forward hooks).
Test accuracy is evaluated every epoch by (a), (b) and (c) (2,000 test images, forward only).

    python benchmarks/bench_sweep.py            # prints the figures; about a minute on 2 cores
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import tutorial_distill  # noqa: E402  (the same tutorial-style baseline as bench_train.py)

TEMPERATURES = [1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0]


def mlp_forward_flops(model):
    return sum(2 * m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear))


def mlp_training_flops(model):
    """Forward + backward of one image: every layer's forward and weight gradient, and the input gradient of
    every layer but the first (the images need no gradient, so autograd skips it): about 2x the forward."""
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    forward = [2 * m.in_features * m.out_features for m in layers]
    return 2 * sum(forward) + sum(forward[1:])


def cnn_forward_flops(model, image_shape):
    """Multiply-adds x 2 of every Conv2d and Linear layer, for one image (via forward hooks)."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            kernel = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            total += 2 * output[0].numel() * kernel
        elif isinstance(module, torch.nn.Linear):
            total += 2 * module.in_features * module.out_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *image_shape))
    for hook in hooks:
        hook.remove()
    return total


def matmul_gflops(size=1024, repeats=30):
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(5):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best / 1e9


def setup():
    import kdlab

    dataset = kdlab.load_dataset("mnist10k")
    from kdlab.train import train_teacher

    teacher, _ = train_teacher(dataset, "cnn", progress=False)
    transfer = dataset.transfer_set(1000)
    return kdlab, dataset, teacher, transfer


def child_sweep(epochs, threads, repeats):
    """(c), in its own process: prints JSON with the wall and CPU time of each of ``repeats`` sweeps and the
    process's peak RSS (which the repeats do not raise: each sweep frees what it allocated)."""
    torch.set_num_threads(threads)
    kdlab, _, teacher, transfer = setup()
    # Warm-up, as for (b): one epoch of the same grid (lazy imports, first-call kernel selection), so that (b)
    # and (c) are both measured warm. The cold first call is reported too.
    start = time.perf_counter()
    kdlab.sweep(teacher, transfer, student="mlp64", grid={"temperature": TEMPERATURES}, method="kd", epochs=1,
                progress=False)
    cold_seconds = time.perf_counter() - start
    seconds, cpu_seconds = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        frame = kdlab.sweep(teacher, transfer, student="mlp64", grid={"temperature": TEMPERATURES}, method="kd",
                            epochs=epochs, progress=False)
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.process_time() - cpu_start)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    final = frame[frame["epoch"] == epochs]
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_rss_mb": peak_mb,
                      "cold_one_epoch_seconds": cold_seconds,
                      "test_acc": final.set_index("temperature")["test_acc"].to_dict()}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="epochs of every run (default: 10, the recipe's)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2, the class laptop)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed sweeps of (c); the median is compared, as the median of the 8 runs of (b) "
                             "is (default: 3)")
    parser.add_argument("--child-sweep", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_sweep:
        child_sweep(args.epochs, args.threads, args.repeats)
        return
    torch.set_num_threads(args.threads)
    kdlab, dataset, teacher, transfer = setup()
    from kdlab.models import create_model
    from kdlab.train import distill

    runs, epochs = len(TEMPERATURES), args.epochs
    n_train, n_test = transfer.train_targets.shape[0], transfer.test_targets.shape[0]
    student_flops = mlp_forward_flops(create_model("mlp64"))
    train_flops = mlp_training_flops(create_model("mlp64"))
    teacher_flops = cnn_forward_flops(teacher, transfer.input_shape)
    peak = matmul_gflops()
    print(f"machine: torch {torch.__version__}, {torch.get_num_threads()} threads, fp32 matmul 1024^3: "
          f"{peak:.1f} GFLOP/s")
    print(f"work: {runs} temperatures x 1 seed of kd, mlp64 ({student_flops / 1e3:.1f} kFLOP/image forward), "
          f"teacher cnn ({teacher_flops / 1e6:.2f} MFLOP/image), {n_train} transfer images, {n_test} test "
          f"images, {epochs} epochs")

    start = time.perf_counter()
    distill(teacher, transfer, temperature=4.0, epochs=1, progress=False)  # warm-up (lazy imports)
    cold_distill = time.perf_counter() - start

    start, cpu_start = time.perf_counter(), time.process_time()
    tutorial_acc = [tutorial_distill(teacher, transfer, epochs, seed=0, lr=0.01, momentum=0.9, temperature=t)[1]
                    for t in TEMPERATURES]
    seconds_a, cpu_a = time.perf_counter() - start, time.process_time() - cpu_start

    distill_seconds, distill_cpu, distill_acc = [], [], []
    for temperature in TEMPERATURES:
        start, cpu_start = time.perf_counter(), time.process_time()
        _, history = distill(teacher, transfer, temperature=temperature, epochs=epochs, progress=False)
        distill_seconds.append(time.perf_counter() - start)
        distill_cpu.append(time.process_time() - cpu_start)
        distill_acc.append(history["test_acc"].iloc[-1])
    seconds_b, cpu_b = sum(distill_seconds), sum(distill_cpu)
    one_distill = sorted(distill_seconds)[len(distill_seconds) // 2]  # the median single run
    one_distill_cpu = sorted(distill_cpu)[len(distill_cpu) // 2]

    child = subprocess.run([sys.executable, __file__, "--child-sweep", "--epochs", str(epochs),
                            "--threads", str(args.threads), "--repeats", str(args.repeats)],
                           capture_output=True, text=True, check=True)
    result = json.loads(child.stdout.strip().splitlines()[-1])
    seconds_c, cpu_c = statistics.median(result["seconds"]), statistics.median(result["cpu_seconds"])

    # FLOPs that (c) ran: students train (about 2x forward) on every transfer image and evaluate the test set each
    # epoch; the teacher runs once over the transfer set (its logits are cached and shared).
    flops_c = runs * epochs * (n_train * train_flops + n_test * student_flops) + n_train * teacher_flops
    utilisation = flops_c / seconds_c / 1e9 / peak

    print()
    print("                            wall [s]   CPU [s]   (CPU time = user + system of this process; it is")
    print("                                                  what the run costs when other jobs share the cores)")
    print(f"(a) tutorial loop x {runs}:    {seconds_a:8.2f}  {cpu_a:8.2f}")
    print(f"(b) kdlab.distill x {runs}:    {seconds_b:8.2f}  {cpu_b:8.2f}")
    print(f"    one distill run (median) {one_distill:8.3f}  {one_distill_cpu:8.3f}")
    print(f"(c) one kdlab.sweep:        {seconds_c:8.2f}  {cpu_c:8.2f}   peak RSS {result['peak_rss_mb']:.0f} MB"
          f"   (median of {len(result['seconds'])}: " + ", ".join(f"{t:.2f}" for t in result["seconds"]) + " s)")
    print(f"    first calls in a fresh process (1 epoch, untimed warm-ups): distill {cold_distill:.2f} s, "
          f"sweep {result['cold_one_epoch_seconds']:.2f} s")
    print()
    print(f"(c) / one distill run: {seconds_c / one_distill:5.2f} x wall, {cpu_c / one_distill_cpu:5.2f} x CPU"
          "   (target <= 2.5 x)")
    print(f"(a) / (c):             {seconds_a / seconds_c:5.1f} x wall, {cpu_a / cpu_c:5.1f} x CPU   (target >= 15 x)")
    print(f"(b) / (c):             {seconds_b / seconds_c:5.1f} x wall, {cpu_b / cpu_c:5.1f} x CPU")
    print(f"peak RSS of (c):       {result['peak_rss_mb'] / 1024:5.2f} GB (target <= 1.5 GB)")
    print(f"(c) model FLOPs: {flops_c / 1e9:.1f} GFLOP in {seconds_c:.2f} s wall = {flops_c / seconds_c / 1e9:.1f} "
          f"GFLOP/s = {100 * utilisation:.0f} % of the measured fp32 matmul peak {peak:.1f} GFLOP/s (aim >= 40 %)")
    print(f"    per CPU second: {flops_c / cpu_c / 1e9:.1f} GFLOP/s per CPU-s = "
          f"{100 * flops_c / cpu_c / 1e9 / (peak / args.threads):.0f} % of the per-thread peak")
    print()
    print("final test accuracy [%] per temperature:")
    print("  T        " + " ".join(f"{t:6g}" for t in TEMPERATURES))
    print("  tutorial " + " ".join(f"{a:6.2f}" for a in tutorial_acc))
    print("  distill  " + " ".join(f"{a:6.2f}" for a in distill_acc))
    print("  sweep    " + " ".join(f"{result['test_acc'][str(t)]:6.2f}" for t in TEMPERATURES))


if __name__ == "__main__":
    main()
