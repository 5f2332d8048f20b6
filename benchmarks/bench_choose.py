"""Benchmark: kdlab.choose_temperature against the full grid it replaces, for SGD and AdamW students.

Setup: the recipe's "cnn" teacher (cached), "kd" into "mlp64" on a 1,000-image transfer set of mnist10k, the
recipe's 10 epochs, the nine default candidates (1 to 16) and 5 seeds, on 2 CPU threads. SGD uses the student
recipe (lr 0.01, momentum 0.9); AdamW lr 1e-3 (as kdlab.studies uses it).

For each optimizer, side by side in one process:
  (a) the full grid: one kdlab.sweep of 9 temperatures x 5 seeds x 10 epochs;
  (b) kdlab.choose_temperature with the same candidates and seeds (rounds of 1, 3 and 10 epochs).
It prints the recommended T, the full grid's best T, the paired difference of their final test accuracies in the
full grid (kdlab.compare, 95 % interval over the 5 seeds: "not measurably worse" means the verdict is not
"worse"), the student-epochs of both and their ratio (target <= 1/3), and both wall times. The full grid's run of
the recommended T is the same run choose_temperature's last round trains (same seeds, same protocol; tested in
tests/test_choose.py), so its accuracy is the one the user would get.

    python benchmarks/bench_choose.py            # prints the figures; several minutes on 2 free cores

Measured (2 December 2026, machine shared by other jobs, load average ~35 on 2 cores, so the wall times are noisy):
SGD: full grid best T = 6 (89.88 %); choose_temperature recommends T = 6 (the same run: difference 0); it dropped
T = 1, 1.5, 2 after the 1-epoch round and T = 12, 16 after the 3-epoch round, but T = 3, 4, 6, 8 all reached the
last round, so it cost 335 student-epochs against 450 (ratio 0.74: the <= 1/3 target is NOT met) and 361 s against
631 s of wall time (0.57). AdamW (lr 1e-3): full grid best T = 1 (87.86 %); choose_temperature recommends T = 1
(difference 0); every other candidate was dropped after the 1-epoch round: 110 student-epochs against 450 (0.24,
target met), 419 s against 498 s of wall time (0.84: the full grid is one batched sweep, the rounds are three).
"""
from __future__ import annotations

import argparse
import time

import torch

import kdlab


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--optimizer", nargs="+", default=["sgd", "adamw"], choices=["sgd", "adamw"])
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    data = kdlab.load_dataset("mnist10k")
    teacher, _ = kdlab.train_teacher(data, progress=False)
    transfer = data.transfer_set(1000)
    temperatures = list(kdlab.choose.DEFAULT_TEMPERATURES)
    seeds = list(range(args.seeds))
    settings = {"sgd": {"optimizer": "sgd"}, "adamw": {"optimizer": "adamw", "lr": 1e-3}}
    for name in args.optimizer:
        common = settings[name]
        start = time.perf_counter()
        full = kdlab.sweep(teacher, transfer, grid={"temperature": temperatures, "seed": seeds},
                           epochs=args.epochs, progress=False, **common)
        full_seconds = time.perf_counter() - start
        choice = kdlab.choose_temperature(teacher, transfer, temperatures=temperatures, seeds=seeds,
                                          epochs=args.epochs, progress=False, **common)
        final = full[full["epoch"] == full["epochs"]]
        means = final.groupby("temperature")["test_acc"].mean()
        best = float(means.idxmax())
        print(f"\n{name}: {len(temperatures)} temperatures x {len(seeds)} seeds x {args.epochs} epochs "
              f"(rounds of {', '.join(map(str, choice.budgets))} epochs)")
        print(f"  full grid: best T = {best:g} ({means[best]:.2f} %); "
              f"choose_temperature: T = {choice.temperature:g} ({means[choice.temperature]:.2f} % in the full grid)")
        if choice.temperature == best:
            print("  the recommendation is the full grid's best: difference 0 by construction")
        else:
            row = kdlab.compare(full, by="temperature", baseline=best).set_index("temperature").loc[choice.temperature]
            print("  " + kdlab.describe_comparison(row, f"T = {choice.temperature:g}", f"best T = {best:g}"))
        ratio = choice.student_epochs / choice.full_grid_student_epochs
        print(f"  student-epochs: choose {choice.student_epochs} vs full grid {choice.full_grid_student_epochs} "
              f"(ratio {ratio:.2f}, target <= 0.33)")
        print(f"  wall time: choose {choice.seconds:.1f} s vs full grid {full_seconds:.1f} s "
              f"(ratio {choice.seconds / full_seconds:.2f})")
        dropped = choice.table[choice.table["dropped_in_round"].notna()]
        print(f"  dropped: {', '.join(f'T={t:g} (round {int(r) + 1})' for t, r in zip(dropped.temperature, dropped.dropped_in_round)) or 'none'}")
        print("  " + choice.explain())


if __name__ == "__main__":
    main()
