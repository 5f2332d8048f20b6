"""Training figures on mnist10k with 2 CPU threads (a script that prints figures, not a timed test).

    python benchmarks/bench_train.py [--seeds 3] [--epochs 10]

1. Teacher: ``train_teacher()`` on a cold cache (the shipped weights), then ``pretrained=False`` with the
   mnist10k recipe (wall time, test accuracy), then the same call again, which loads it from the cache.
2. Student: ``distill(teacher, transfer_set(1000), method="kd")`` into ``mlp64`` (time and accuracy),
   with the no-teacher baseline ``method="ce"`` for the KD gain.
3. The same distillation the way the common tutorials write it: a per-sample ``torch.utils.data.Dataset``,
   ``DataLoader(batch_size=64, shuffle=True)``, the teacher run on every batch, ``nn.KLDivLoss`` with
   ``reduction="batchmean"`` and a test-set DataLoader after every epoch. Same student, same data,
   same optimizer, loss, epochs and per-epoch evaluation; measured side by side with kdlab in one run.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kdlab  # noqa: E402
from kdlab.models import create_model  # noqa: E402
from kdlab.train import RECIPES  # noqa: E402


class _PerSampleDataset(torch.utils.data.Dataset):
    """What the tutorials use: one (image, label) pair per __getitem__."""

    def __init__(self, images, targets):
        self.images, self.targets = images, targets

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        return self.images[index], self.targets[index]


def tutorial_distill(teacher, transfer, epochs, seed, lr, momentum, temperature=4.0, ce_weight=0.1,
                     kd_weight=0.9):
    """Hinton KD as in the PyTorch tutorial: teacher forward on every batch, DataLoader over samples."""
    torch.manual_seed(seed)
    student = create_model("mlp64", num_classes=10)
    optimizer = torch.optim.SGD(student.parameters(), lr=lr, momentum=momentum)
    train_loader = torch.utils.data.DataLoader(_PerSampleDataset(transfer.train_images, transfer.train_targets),
                                               batch_size=64, shuffle=True)
    test_loader = torch.utils.data.DataLoader(_PerSampleDataset(transfer.test_images, transfer.test_targets),
                                              batch_size=64, shuffle=False)
    cross_entropy, kl_divergence = nn.CrossEntropyLoss(), nn.KLDivLoss(reduction="batchmean")
    teacher.eval()
    for _ in range(epochs):
        student.train()
        for images, targets in train_loader:
            with torch.no_grad():
                teacher_logits = teacher(images)
            student_logits = student(images)
            soft_targets = torch.softmax(teacher_logits / temperature, dim=1)
            soft_predictions = torch.log_softmax(student_logits / temperature, dim=1)
            loss = (ce_weight * cross_entropy(student_logits, targets)
                    + kd_weight * temperature ** 2 * kl_divergence(soft_predictions, soft_targets))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        student.eval()
        correct = total = 0
        with torch.no_grad():
            for images, targets in test_loader:
                correct += (student(images).argmax(1) == targets).sum().item()
                total += len(targets)
        accuracy = 100.0 * correct / total
    return student, accuracy


def _timed(function, *args, **kwargs):
    """(result, wall seconds); the process CPU seconds of the last call are kept in _timed.cpu."""
    start, cpu_start = time.perf_counter(), time.process_time()
    result = function(*args, **kwargs)
    _timed.cpu = time.process_time() - cpu_start
    return result, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="student seeds for the KD comparison")
    parser.add_argument("--epochs", type=int, default=None, help="student epochs (default: the recipe's)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["KDLAB_CACHE"] = tempfile.mkdtemp(prefix="kdlab-bench-cache-")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cache in {os.environ['KDLAB_CACHE']}")

    data = kdlab.load_dataset("mnist10k")
    transfer = data.transfer_set(1000)
    recipe = RECIPES["mnist10k"]
    kdlab.train_teacher(data.transfer_set(100), model="mlp16", epochs=1, cache=False, progress=False)  # warm-up

    print("\n== teacher: train_teacher('mnist10k', model='cnn'), recipe", recipe["teacher"])
    (_, shipped_history), seconds = _timed(kdlab.train_teacher, data, progress=False)
    print(f"cold cache, shipped weights: {seconds:.2f} s, source={shipped_history.attrs['source']}, "
          f"recorded test accuracy {shipped_history['test_acc'].iloc[-1]:.2f} %")
    (teacher, history), seconds = _timed(kdlab.train_teacher, data, pretrained=False, progress=False)
    print(f"pretrained=False: trained in {seconds:.1f} s (CPU time {_timed.cpu:.1f} s); test accuracy "
          f"{history['test_acc'].iloc[-1]:.2f} % (per epoch: {', '.join(f'{a:.2f}' for a in history['test_acc'])})")
    (_, cached_history), seconds = _timed(kdlab.train_teacher, data, pretrained=False, progress=False)
    print(f"second call (cache): {seconds:.2f} s, source={cached_history.attrs['source']}")

    student_settings = dict(recipe["student"])
    if args.epochs is not None:
        student_settings["epochs"] = args.epochs
    print("\n== student mlp64 on a 1,000-image transfer set, recipe", student_settings)
    rows = {"ce (no teacher)": [], "kd (kdlab)": [], "kd (tutorial loop)": []}
    for seed in range(args.seeds):
        (_, history), seconds = _timed(kdlab.distill, None, transfer, method="ce", seed=seed, progress=False,
                                       epochs=student_settings["epochs"])
        rows["ce (no teacher)"].append((seconds, history["test_acc"].iloc[-1]))
        (_, history), seconds = _timed(kdlab.distill, teacher, transfer, method="kd", seed=seed, progress=False,
                                       epochs=student_settings["epochs"])
        rows["kd (kdlab)"].append((seconds, history["test_acc"].iloc[-1]))
        (_, accuracy), seconds = _timed(tutorial_distill, teacher, transfer, student_settings["epochs"], seed,
                                        student_settings["lr"], student_settings["momentum"])
        rows["kd (tutorial loop)"].append((seconds, accuracy))
    for name, values in rows.items():
        times, accuracies = zip(*values)
        spread = f" ± {statistics.stdev(accuracies):.2f}" if len(accuracies) > 1 else ""
        print(f"{name:20s} time {statistics.mean(times):6.2f} s   test accuracy {statistics.mean(accuracies):6.2f}"
              f"{spread} %  ({len(values)} seeds)")
    ratio = (statistics.mean(t for t, _ in rows["kd (tutorial loop)"])
             / statistics.mean(t for t, _ in rows["kd (kdlab)"]))
    gap = (statistics.mean(a for _, a in rows["kd (kdlab)"])
           - statistics.mean(a for _, a in rows["kd (tutorial loop)"]))
    print(f"\nkdlab distill is {ratio:.1f}x faster than the tutorial loop; accuracy difference {gap:+.2f} points")


if __name__ == "__main__":
    main()
