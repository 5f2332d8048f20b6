"""Benchmark: a temperature sweep (8 temperatures x 1 seed of "kd", mlp64 student) three ways, on 2 CPU threads, in
two regimes: a 1,000-image transfer set of mnist10k x the recipe's 10 epochs ("small") and the full 8,000
training images x 5 epochs ("full"); ``--regime`` picks one:

  (a) the tutorial-style loop (a DataLoader over a per-sample Dataset, the teacher run on every batch), 8 times;
  (b) kdlab.distill, 8 times;
  (c) one kdlab.sweep (in a fresh subprocess, so that its peak memory is its own).

(a), (b) and (c) are timed warm, each after an untimed warm-up run (lazy imports, first-call kernel selection
and the allocator's first growth cost a fresh process ~1.3-1.5 s once, whatever it runs first). The machine's
speed drifts (a shared VM: up to ~30 % over tens of seconds), so (a), (b), (c) and the matmul peak are measured
in rounds, side by side: each round measures the matmul peak, then times one sweep, the 8 distill runs ("one
distill run" = their median) and ONE tutorial run (at the round's temperature, in turn; the 8 runs of (a) do
the same work, so (a) = 8 x that run); every ratio is taken within a round and the median over rounds is
reported. The 8 tutorial runs are also timed once in full, before the rounds, for their accuracies.
(c)'s peak memory is measured in a fresh process that runs one sweep after its warm-up.

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


REGIMES = {"small": (1000, 10), "full": (8000, 5)}  # (training images, epochs): the two regimes of issue 14


def setup(size=1000):
    import kdlab

    dataset = kdlab.load_dataset("mnist10k")
    from kdlab.train import train_teacher

    teacher, _ = train_teacher(dataset, "cnn", progress=False)
    transfer = dataset.transfer_set(size) if size < dataset.train_targets.shape[0] else dataset
    return kdlab, dataset, teacher, transfer


def child_sweep(epochs, threads, size):
    """(c)'s peak memory, in its own process: after a one-epoch warm-up sweep, one full sweep; prints JSON with
    its wall time and the process's peak RSS."""
    torch.set_num_threads(threads)
    kdlab, _, teacher, transfer = setup(size)
    kdlab.sweep(teacher, transfer, student="mlp64", grid={"temperature": TEMPERATURES}, method="kd", epochs=1,
                progress=False)
    start = time.perf_counter()
    kdlab.sweep(teacher, transfer, student="mlp64", grid={"temperature": TEMPERATURES}, method="kd",
                epochs=epochs, progress=False)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_mb}))


def timed(function):
    start, cpu_start = time.perf_counter(), time.process_time()
    result = function()
    return result, time.perf_counter() - start, time.process_time() - cpu_start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs of every run (default: the regime's, 10 for small and 5 for full)")
    parser.add_argument("--regime", choices=["small", "full", "both"], default="both",
                        help="small: 1,000 transfer images x 10 epochs; full: the 8,000 training images x 5 "
                             "epochs; both (default) runs one after the other")
    parser.add_argument("--size", type=int, default=1000, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2, the class laptop)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of [matmul peak, one sweep, 8 distill runs, one tutorial run]; every ratio is taken within a "
                             "round and the median over rounds is reported (default: 3)")
    parser.add_argument("--child-sweep", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_sweep:
        child_sweep(args.epochs, args.threads, args.size)
        return
    torch.set_num_threads(args.threads)
    for regime in (["small", "full"] if args.regime == "both" else [args.regime]):
        size, epochs = REGIMES[regime]
        print(f"\n=== regime {regime}: {size} training images x {args.epochs or epochs} epochs ===")
        run_regime(args, size, args.epochs or epochs)


def run_regime(args, size, epochs):
    kdlab, dataset, teacher, transfer = setup(size)
    from kdlab.models import create_model
    from kdlab.train import distill

    runs = len(TEMPERATURES)
    n_train, n_test = transfer.train_targets.shape[0], transfer.test_targets.shape[0]
    student_flops = mlp_forward_flops(create_model("mlp64"))
    train_flops = mlp_training_flops(create_model("mlp64"))
    teacher_flops = cnn_forward_flops(teacher, transfer.input_shape)
    print(f"machine: torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"work: {runs} temperatures x 1 seed of kd, mlp64 ({student_flops / 1e3:.1f} kFLOP/image forward), "
          f"teacher cnn ({teacher_flops / 1e6:.2f} MFLOP/image), {n_train} transfer images, {n_test} test "
          f"images, {epochs} epochs")

    def one_sweep():
        return kdlab.sweep(teacher, transfer, student="mlp64", grid={"temperature": TEMPERATURES}, method="kd",
                           epochs=epochs, progress=False)

    def distill_all():
        seconds, cpu, accuracy = [], [], []
        for temperature in TEMPERATURES:
            (_, history), wall, used = timed(lambda: distill(teacher, transfer, temperature=temperature,
                                                             epochs=epochs, progress=False))
            seconds.append(wall)
            cpu.append(used)
            accuracy.append(history["test_acc"].iloc[-1])
        return seconds, cpu, accuracy

    def tutorial(temperature, epochs=epochs):  # (a): the recipe's SGD, one seed
        return tutorial_distill(teacher, transfer, epochs, seed=0, lr=0.01, momentum=0.9, temperature=temperature)

    tutorial(4.0, epochs=1)  # warm-up of (a): lazy imports
    tutorial_acc, seconds_a, cpu_a = timed(lambda: [tutorial(t)[1] for t in TEMPERATURES])

    # Warm-ups, after (a) so that the heap is in its final shape: one untimed full run of each (a first
    # sweep right after (a) ran ~40 % slower than the next ones: lazy imports, kernel selection, heap growth).
    one_sweep()
    distill(teacher, transfer, temperature=4.0, epochs=epochs, progress=False)

    # FLOPs that (c) runs: students train (about 2x forward) on every transfer image and evaluate the test set
    # each epoch; the teacher runs once over the transfer set (its logits are cached and shared).
    flops_c = runs * epochs * (n_train * train_flops + n_test * student_flops) + n_train * teacher_flops

    # Rounds: the machine's speed drifts by up to ~30 % over tens of seconds (a shared VM), so every ratio is
    # measured within one round, side by side, and the median over rounds is reported.
    rows = []
    for _ in range(args.rounds):
        peak = matmul_gflops()
        frame, seconds_c, cpu_c = timed(one_sweep)
        distill_seconds, distill_cpu, distill_acc = distill_all()
        _, tutorial_one, tutorial_one_cpu = timed(lambda: tutorial(TEMPERATURES[len(rows) % runs]))
        rows.append({"peak": peak, "sweep": seconds_c, "sweep_cpu": cpu_c,
                     "tutorial": runs * tutorial_one, "tutorial_cpu": runs * tutorial_one_cpu,
                     "one_distill": statistics.median(distill_seconds),
                     "one_distill_cpu": statistics.median(distill_cpu),
                     "distill_total": sum(distill_seconds), "distill_total_cpu": sum(distill_cpu)})
    sweep_acc = frame[frame["epoch"] == epochs].set_index("temperature")["test_acc"]

    child = subprocess.run([sys.executable, __file__, "--child-sweep", "--epochs", str(epochs), "--size", str(size),
                            "--threads", str(args.threads)], capture_output=True, text=True, check=True)
    memory = json.loads(child.stdout.strip().splitlines()[-1])

    def median(key):
        return statistics.median(row[key] for row in rows)

    def median_ratio(top, bottom):
        return statistics.median(row[top] / row[bottom] for row in rows)

    seconds_c, cpu_c = median("sweep"), median("sweep_cpu")
    print()
    print("per round           matmul peak   (c) sweep   one distill (median of 8)   (b) 8 distills   "
          "(c)/one   (b)/(c)   (a)/(c)   model FLOP/s of (c)")
    for n, row in enumerate(rows, 1):
        flops = flops_c / row["sweep"] / 1e9
        print(f"  round {n}:        {row['peak']:7.1f} GF/s   {row['sweep']:7.3f} s   {row['one_distill']:9.3f} s"
              f"                 {row['distill_total']:7.2f} s     {row['sweep'] / row['one_distill']:5.2f}"
              f"     {row['distill_total'] / row['sweep']:5.1f}     {row['tutorial'] / row['sweep']:5.1f}"
              f"    {flops:5.1f} GF/s = "
              f"{100 * flops / row['peak']:3.0f} %")
    print()
    print("                            wall [s]   CPU [s]   (CPU time = user + system of this process; it is")
    print("                                                  what the run costs when other jobs share the cores)")
    print(f"(a) tutorial loop x {runs}:    {median('tutorial'):8.2f}  {median('tutorial_cpu'):8.2f}"
          f"   ({runs} x one run per round, median; all {runs} runs once before the rounds: {seconds_a:.2f} s wall, "
          f"{cpu_a:.2f} s CPU)")
    print(f"(b) kdlab.distill x {runs}:    {median('distill_total'):8.2f}  {median('distill_total_cpu'):8.2f}"
          "   (median over rounds)")
    print(f"    one distill run          {median('one_distill'):8.3f}  {median('one_distill_cpu'):8.3f}")
    print(f"(c) one kdlab.sweep:        {seconds_c:8.2f}  {cpu_c:8.2f}")
    print()
    print(f"(c) / one distill run: {median_ratio('sweep', 'one_distill'):5.2f} x wall, "
          f"{median_ratio('sweep_cpu', 'one_distill_cpu'):5.2f} x CPU   (target <= 2.5 x; median of the rounds' ratios)")
    print(f"(a) / (c):             {median_ratio('tutorial', 'sweep'):5.1f} x wall, "
          f"{median_ratio('tutorial_cpu', 'sweep_cpu'):5.1f} x CPU   (target >= 15 x; median of the rounds' ratios; "
          f"the {runs} runs timed once: {seconds_a / seconds_c:.1f} x wall)")
    print(f"(b) / (c):             {median_ratio('distill_total', 'sweep'):5.1f} x wall, "
          f"{median_ratio('distill_total_cpu', 'sweep_cpu'):5.1f} x CPU")
    print(f"peak RSS of (c):       {memory['peak_rss_mb'] / 1024:5.2f} GB (target <= 1.5 GB; a fresh process that runs "
          f"one sweep after its warm-up, {memory['seconds']:.2f} s)")
    utilisation = statistics.median(flops_c / row["sweep"] / 1e9 / row["peak"] for row in rows)
    print(f"(c) model FLOPs: {flops_c / 1e9:.1f} GFLOP in {seconds_c:.2f} s wall = {flops_c / seconds_c / 1e9:.1f} "
          f"GFLOP/s = {100 * utilisation:.0f} % of the fp32 matmul peak measured in the same round "
          f"(median; aim >= 40 %)")
    print()
    print("final test accuracy [%] per temperature (last round):")
    print("  T        " + " ".join(f"{t:6g}" for t in TEMPERATURES))
    print("  tutorial " + " ".join(f"{a:6.2f}" for a in tutorial_acc))
    print("  distill  " + " ".join(f"{a:6.2f}" for a in distill_acc))
    print("  sweep    " + " ".join(f"{sweep_acc[t]:6.2f}" for t in TEMPERATURES))


if __name__ == "__main__":
    main()
