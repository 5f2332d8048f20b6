"""Temperature sweeps at the speed of one run: many students trained together as one batched model.

Choosing a temperature means a grid: temperatures x seeds x methods x optimizers. Run one ``distill`` per
cell and the grid costs as many runs as it has cells. But the students of a grid are small and all do the
same thing to the same data, so ``sweep`` trains them *together*:

* **One batched model.** N students of the same architecture are stacked into one set of parameters with a
  leading dimension of size N (``torch.func.stack_module_state``) and run as one network with
  ``torch.func.vmap(functional_call(...))``. When all N students see the same batch (same seed), the first
  layer is a single (B, 784) @ (784, N * 64) matrix product instead of N small ones.
* **One pass over each batch.** The teacher's logits are computed once for the training split (as
  ``distill`` does) and shared by all students; each student takes its own loss, the losses are summed and
  one ``backward`` runs for all of them. The students are independent, so the gradient of the sum with
  respect to student n's parameters is exactly student n's own gradient.
* **One optimizer step.** ``torch.optim`` keeps one learning rate per parameter group, so kdlab has its own
  SGD (momentum) and AdamW that update the stacked parameters with per-student hyper-parameters broadcast
  along dimension 0 (:class:`StackedOptimizer`, the same formulas as ``torch.optim.SGD``/``AdamW``).
* **One loss call per method.** The recipes of ``kdlab.methods`` are evaluated for all students of a method
  at once: every recipe is a batch mean of per-sample terms, and ``kdlab.losses`` accepts one temperature
  per sample, so the students' logits are flattened to (N * B, K) with each student's temperature repeated
  B times (:func:`_stacked_terms`, checked term by term against ``Method`` in the tests). Recipes with
  learnable or data-dependent temperatures (CTKD, DTKD) call their own ``Method`` per student.
* **No autograd on the CPU for MLP students.** A step of eight 784-64-10 students on a batch of 64 is about
  0.7 ms of matrix products; building and walking autograd graphs of the network and the loss cost as much
  again. On the CPU the MLP's backward is written out (:class:`_StackedMLP`) and the loss gradients of CE,
  label smoothing, KD, TTM and WTTM are computed in closed form together with the terms
  (:func:`_fused_terms`); both are tested against autograd and finite differences. Other recipes keep
  autograd for the loss only; GPUs (bf16 autocast) and other architectures use autograd throughout.

Measured by ``benchmarks/bench_sweep.py`` (8 temperatures of KD, mlp64, 1,000 images, 10 epochs, 2 CPU
threads): one sweep takes 2.0-2.4x the time of one ``distill`` run and is 16-24x faster than the
tutorial-style loop run 8 times.

Every student follows ``kdlab.train``'s training protocol exactly (``torch.manual_seed(seed)`` before the
model is created, a ``torch.Generator().manual_seed(seed)`` permutation per epoch, the same recipe
defaults, the same schedule), so each student of a sweep ends within float tolerance of the same
configuration trained alone by ``kdlab.distill`` (tested for KD/TTM with SGD/AdamW).

Students are grouped automatically: one group per (student architecture, batch size, epochs). MLP students
are always batched. Other architectures are batched on a GPU (``vmap``; BatchNorm students keep their own
running statistics) and trained one by one on the CPU, where ``vmap``'s grouped convolutions are slower than
separate runs. Students with active dropout, whose random masks come from the global RNG in an order a batched
model cannot reproduce, are always trained by ``kdlab.distill`` one by one; the result is the same.

With ``out=folder`` every finished group is saved atomically to ``folder/groups/<key>.csv`` and the final
table to ``folder/sweep.csv``. Each row carries a ``run_key``, a hash of everything that determines the run
(configuration, epochs, dataset contents, teacher weights); a rerun loads the finished runs instead of
training them again, so an interrupted sweep loses no finished group. Beside each group file, ``<key>.json``
records its row count, column dtypes and a sha256 of its text; a group file that does not match its record
(cut short, rows missing, values garbled) or has none is reported with a warning and trained again. Temporary
files of a write that was killed are removed by the next run; ``out`` must be a writable folder (checked
before anything trains).
"""
from __future__ import annotations

import copy
import hashlib
import io
import itertools
import json
import math
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from kdlab.losses import dkd_loss, kd_loss, lskd_loss, ttm_loss, wttm_loss
from kdlab.methods import get_method, list_methods
from kdlab.stats import calibration
from kdlab.common import (
    SETTING_NAMES,
    atomic_write_text,
    autocast,
    check_bool,
    check_model_logits,
    check_output_folder,
    diverged_term,
    dataset_fingerprint,
    eval_batch_size,
    make_optimizer,
    make_scheduler,
    module_fingerprint,
    recipe_method_overrides,
    remove_stale_temporaries,
    resolve_dataset,
    resolve_device,
    resolve_model,
    resolve_recipe,
    tune_cpu_allocator,
)
from kdlab.train import TrainingDiverged, distill, predict, resolve_teacher

__all__ = ["sweep", "expand_grid", "StackedOptimizer"]

# Bump when the meaning of a saved group file changes: old files are then simply not reused.
_FORMAT_VERSION = 2  # 2: test_nll and test_ece columns
_CONFIG_COLUMNS = ("student", "method", "temperature", "seed", "epochs", "optimizer", "lr", "batch_size",
                   "weight_decay", "momentum", "schedule")


# ----------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------

def sweep(teacher, dataset="mnist10k", student="mlp64", grid=None, epochs=None, out=None, progress=True,
          recipe=None, device="auto", return_students=False, **common):
    """Train every configuration of ``grid`` (a temperature sweep, seeds, methods, ...) as few batched runs.

    teacher: a trained ``nn.Module``, a model name (trained or loaded by ``kdlab.train_teacher``) or None when
    no configuration needs one. dataset: a name or a ``Dataset`` (typically a transfer set). student: a model
    name (each configuration initialised after ``torch.manual_seed(seed)``, as ``distill`` does) or an
    ``nn.Module`` (every configuration starts from a copy of it).

    grid: dict mapping a field to a list of values; the sweep runs their Cartesian product. Fields: "method",
    "temperature", "seed", "optimizer", "lr", "batch_size", "weight_decay", "momentum", "schedule", "epochs",
    "student" (overrides ``student``) and any method hyper-parameter ("beta", "warmup", ...). ``**common`` gives single values of the
    same fields for every configuration (``method="kd"`` is the default). Settings left out come from the
    recipe, exactly as in ``kdlab.distill``. Methods without a temperature ("ce", "label_smoothing") are run
    once per combination of the other fields, with temperature NaN in the table.

    Example: ``sweep(teacher, transfer, grid={"method": ["kd", "ttm"], "temperature": [1, 2, 4, 8],
    "seed": [0, 1, 2]}, epochs=10)`` trains 24 students in one batched run.

    Returns a tidy ``pandas.DataFrame`` with one row per (configuration, epoch): "config" (the configuration's
    number), the configuration fields, "epoch", one column per loss term (NaN where a method has no such term),
    "loss", "train_acc", "test_acc" (percent), "epoch_lr" (the scheduled learning rate of that epoch; "lr" is
    the configuration's base learning rate), "seconds" (wall time of the epoch of the whole group),
    "temperature_mean/min/max" for DTKD and CTKD, "diverged" (True on every row of a run whose loss became
    non-finite: reported in the progress output, the other runs train on) and "run_key". With ``return_students=True`` returns
    ``(frame, students)``, the trained students in configuration order (None for runs loaded from ``out``).

    out: a folder; finished groups are saved there atomically and a rerun skips them (see the module doc).
    progress: show a progress bar over groups x epochs (``False`` silences it).
    """
    check_bool(progress, "progress")
    check_bool(return_students, "return_students")
    folder = None if out is None else check_output_folder(out, "out")  # before any training
    device = resolve_device(device)
    tune_cpu_allocator(device)
    dataset = resolve_dataset(dataset, device)
    if epochs is not None:
        common["epochs"] = epochs
    if not (isinstance(grid, dict) and "student" in grid):  # grid={"student": [...]} varies it instead
        common["student"] = student
    configs = [_resolve_config(raw, dataset, recipe) for raw in expand_grid(grid, **common)]
    configs = _deduplicate(configs)

    teacher = resolve_teacher(teacher, dataset, device, progress,
                              needed=any(config["method_object"].needs_teacher for config in configs),
                              reason=" (some configurations use a method that needs a teacher)")

    fingerprint = {"format": _FORMAT_VERSION, "dataset": dataset_fingerprint(dataset),
                   "teacher": module_fingerprint(teacher)}
    for config in configs:
        config["run_key"] = _run_key(config, fingerprint)

    if folder is not None:
        for place in (folder, folder / "groups"):
            remove_stale_temporaries(place)
    finished = _load_finished(folder) if folder is not None else {}
    todo = [c for c in configs if c["run_key"] not in finished]
    groups = _make_groups(todo, dataset, device)

    from tqdm.auto import tqdm  # a widget in Jupyter, a text bar in a terminal

    total = sum(group[0]["settings"]["epochs"] for group in groups)
    bar = tqdm(total=total, desc=f"sweep ({len(configs)} runs, {len(groups)} groups)", unit="epoch",
               disable=not progress)
    students = {}
    cached_teacher_logits = _TeacherLogits(teacher, dataset)
    try:
        for group in groups:
            if len(group) > 1 or _batchable(group[0]["student"], dataset, device):
                frame, trained = _train_group(group, dataset, teacher, cached_teacher_logits, device, bar)
            else:
                frame, trained = _distill_one(group[0], dataset, teacher, device, bar)
            students.update(trained)
            if folder is not None:
                _save_group(folder, frame)
            for key, rows in frame.groupby("run_key", sort=False):
                finished[key] = rows
    finally:
        bar.close()

    frame = _assemble(configs, finished)
    if folder is not None:
        atomic_write_text(folder / "sweep.csv", frame.to_csv(index=False))
    if return_students:
        return frame, [students.get(config["config"]) for config in configs]
    return frame


def expand_grid(grid=None, **common):
    """The list of configurations (dicts) of ``grid`` x ``common``, in grid order.

    ``grid`` maps a field to a list (or tuple) of values; ``common`` gives single values. A field may not be
    in both. For methods without a temperature ("ce", "label_smoothing") the temperature is dropped and
    duplicates removed, so they are run once, not once per temperature.
    Example: ``expand_grid({"temperature": [1, 4], "seed": [0, 1]}, method="kd")`` -> 4 configurations.
    """
    if grid is None:
        grid = {}
    if not isinstance(grid, dict):
        raise TypeError(f"grid must be a dict mapping a field to a list of values, got {type(grid).__name__}")
    for key, values in grid.items():
        if not isinstance(key, str):
            raise TypeError(f"grid keys must be field names (str), got {key!r}")
        if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple, range)):
            raise TypeError(f"grid[{key!r}] must be a list of values, got {values!r}")
        if len(values) == 0:
            raise ValueError(f"grid[{key!r}] must hold at least one value, got an empty list")
        if key in common:
            raise ValueError(f"field {key!r} is given both in grid and as a keyword; give it once")
    common = {"method": "kd", **common}
    keys = list(grid)
    configs, seen = [], set()
    without_temperature = {name for name, defaults in list_methods().items() if "temperature" not in defaults}
    for values in itertools.product(*(grid[key] for key in keys)):
        config = dict(common)
        config.update(zip(keys, values))
        if config.get("method") in without_temperature:
            config.pop("temperature", None)
        identity = repr(sorted((k, _hashable(v)) for k, v in config.items()))
        if identity not in seen:
            seen.add(identity)
            configs.append(config)
    return configs


# ----------------------------------------------------------------------------------------------------------
# The batched optimizer
# ----------------------------------------------------------------------------------------------------------

class StackedOptimizer:
    """SGD with momentum and AdamW for parameters stacked along dimension 0, one student per slice.

    ``torch.optim`` has one learning rate per parameter group; a stacked parameter of shape (N, ...) holds N
    students that each need their own learning rate, weight decay and even optimizer. The update of each slice
    n uses the formulas of ``torch.optim`` with student n's hyper-parameters (broadcast along dimension 0):

        SGD   (torch.optim.SGD, no dampening, no Nesterov)
              g = grad + weight_decay * p;   b = g (first step) else momentum * b + g;   p = p - lr * b
        AdamW (torch.optim.AdamW, betas (0.9, 0.999), eps 1e-8; decoupled weight decay)
              p = p * (1 - lr * weight_decay);   m = m + (1 - beta1) (g - m);   v = beta2 v + (1 - beta2) g^2
              p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    kinds: "sgd" or "adamw" per student. The students of one kind must be contiguous (``sweep`` sorts them),
    so each kind updates a view of the stacked tensor, not a copy. ``set_lr`` sets this epoch's learning rates.
    """

    def __init__(self, params, kinds, lr, momentum, weight_decay, betas=(0.9, 0.999), eps=1e-8):
        self.params = list(params)
        if not self.params or not all(isinstance(p, torch.Tensor) and p.dim() >= 1 for p in self.params):
            raise TypeError("params must be a non-empty list of tensors stacked along dimension 0")
        count = self.params[0].shape[0]
        if any(p.shape[0] != count for p in self.params):
            raise ValueError("params must all have the same size N along dimension 0 (one slice per student)")
        kinds = list(kinds)
        if len(kinds) != count or any(k not in ("sgd", "adamw") for k in kinds):
            raise ValueError(f"kinds must list 'sgd' or 'adamw' for each of the {count} students, got {kinds!r}")
        self.ranges = []
        for kind, run in itertools.groupby(range(count), key=lambda n: kinds[n]):
            run = list(run)
            if any(kind == existing for existing, _, _ in self.ranges):
                raise ValueError("kinds must be contiguous (all 'sgd' students together), got " + repr(kinds))
            self.ranges.append((kind, run[0], run[-1] + 1))
        self.count = count
        self.betas, self.eps = betas, eps
        self.momentum = self._column(momentum, "momentum")
        self.weight_decay = self._column(weight_decay, "weight_decay")
        self.set_lr(lr)
        self.steps = 0
        self.state = [{} for _ in self.params]

    def _column(self, values, name):
        values = [float(v) for v in (values if isinstance(values, (list, tuple)) else [values] * self.count)]
        if len(values) != self.count or not all(math.isfinite(v) and v >= 0 for v in values):
            raise ValueError(f"{name} must be {self.count} finite numbers >= 0, got {values!r}")
        return values

    def set_lr(self, lr):
        """Per-student learning rates (a number or N numbers) for the next steps."""
        self.lr = self._column(lr, "lr")
        self._columns = {
            "neg_lr": self._tensor([-lr for lr in self.lr]),
            "decay": self._tensor([1 - lr * wd for lr, wd in zip(self.lr, self.weight_decay)]),
            "weight_decay": self._tensor(self.weight_decay),
            "momentum": self._tensor(self.momentum),
        }

    def _tensor(self, values):
        # Per-student factors are computed in float64 from Python floats, as torch.optim does, then rounded
        # once to the parameters' dtype.
        param = self.params[0]
        return torch.tensor(values, dtype=torch.float64).to(param.dtype).to(param.device)  # MPS has no float64

    @staticmethod
    def _along(column, param, start, stop):
        """column[start:stop] shaped (n, 1, 1, ...) to broadcast against param[start:stop]."""
        return column[start:stop].view(-1, *([1] * (param.dim() - 1)))

    def zero_grad(self):
        for param in self.params:
            param.grad = None

    @torch.no_grad()
    def step(self):
        self.steps += 1
        beta1, beta2 = self.betas
        bias_correction1 = 1 - beta1 ** self.steps
        bias_correction2_sqrt = (1 - beta2 ** self.steps) ** 0.5
        columns = self._columns
        if any(kind == "adamw" for kind, _, _ in self.ranges):
            columns = dict(columns, neg_step_size=self._tensor([-lr / bias_correction1 for lr in self.lr]))
        for kind, start, stop in self.ranges:
            if kind == "sgd" and self._fused_sgd(start, stop):
                continue
            for param, state in zip(self.params, self.state):
                if param.grad is None:
                    continue
                p, grad = param[start:stop], param.grad[start:stop]
                decays = any(self.weight_decay[start:stop])
                if kind == "sgd":
                    if decays:
                        grad = grad + self._along(columns["weight_decay"], param, start, stop) * p
                    buffer = state.get(start)
                    if buffer is None:
                        state[start] = buffer = grad.clone()
                    else:
                        buffer.mul_(self._along(columns["momentum"], param, start, stop)).add_(grad)
                    p.addcmul_(buffer, self._along(columns["neg_lr"], param, start, stop))
                else:
                    if decays:
                        p.mul_(self._along(columns["decay"], param, start, stop))
                    if start not in state:
                        state[start] = (torch.zeros_like(p), torch.zeros_like(p))
                    exp_avg, exp_avg_sq = state[start]
                    exp_avg.lerp_(grad, 1 - beta1)
                    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                    denominator = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(self.eps)
                    p.addcdiv_(exp_avg * self._along(columns["neg_step_size"], param, start, stop), denominator)

    def _fused_sgd(self, start, stop):
        """One fused SGD update of students start..stop when they share lr, momentum (> 0) and weight decay:
        PyTorch's own fused kernel (``torch.optim.SGD(fused=True)``), one pass over each tensor instead of
        three or four. Returns False (nothing updated) when it does not apply."""
        global _FUSED_SGD
        if _FUSED_SGD is None or len(set(self.lr[start:stop])) != 1 or len(set(self.momentum[start:stop])) != 1 \
                or len(set(self.weight_decay[start:stop])) != 1 or self.momentum[start] == 0:
            return False
        params = [(param, state) for param, state in zip(self.params, self.state) if param.grad is not None]
        if not params or params[0][0].device.type not in ("cpu", "cuda"):
            return False
        first_step = start not in params[0][1]
        buffers = [torch.empty_like(param[start:stop]) if first_step else state[start] for param, state in params]
        try:
            _FUSED_SGD([param[start:stop] for param, _ in params], [param.grad[start:stop] for param, _ in params],
                       buffers, weight_decay=self.weight_decay[start], momentum=self.momentum[start],
                       lr=self.lr[start], dampening=0.0, nesterov=False, maximize=False, is_first_step=first_step)
        except (RuntimeError, NotImplementedError, TypeError):
            # An older torch (CUDA-only kernel) or another signature: the dispatcher refuses before updating
            # anything, so the formulas of step() take over, now and from then on.
            _FUSED_SGD = None
            return False
        if first_step:
            for (_, state), buffer in zip(params, buffers):
                state[start] = buffer
        return True


# The kernel behind torch.optim.SGD(fused=True) (a private op: used when present, else the formulas above).
_FUSED_SGD = getattr(torch, "_fused_sgd_", None)


# ----------------------------------------------------------------------------------------------------------
# Configurations and groups
# ----------------------------------------------------------------------------------------------------------

def _resolve_config(raw, dataset, recipe):
    """A raw grid cell -> the effective configuration: settings from the recipe, a Method, the seed."""
    raw = dict(raw)
    student = raw.pop("student")
    if not isinstance(student, (str, nn.Module)):
        raise TypeError(f"student must be a model name or an nn.Module, got {type(student).__name__}")
    seed = raw.pop("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    method_name = raw.pop("method")
    if not isinstance(method_name, str):
        raise TypeError(f"method must be a method name (see kdlab.list_methods()), got {method_name!r}")
    explicit = {name: raw.pop(name) for name in SETTING_NAMES if name in raw}
    settings = resolve_recipe(recipe, dataset.name, "student", **explicit)
    given = {k: v for k, v in raw.items() if v is not None}
    overrides = recipe_method_overrides(recipe, dataset.name, method_name, given)
    try:
        method = get_method(method_name, **overrides)
    except (TypeError, ValueError) as error:  # name the grid cell: the message alone may not say which one
        cell = {"method": method_name, **given}
        raise type(error)(f"configuration {cell}: {error}") from None
    return {
        "student": student,
        "student_name": student if isinstance(student, str) else type(student).__name__,
        "seed": seed,
        "method": method_name,
        "method_object": method,
        "overrides": overrides,
        "settings": settings,
        "recipe": recipe,
        "temperature": float(method.hparams["temperature"]) if method.uses_temperature else math.nan,
    }


def _deduplicate(configs):
    """Drop configurations that resolve to the same run (e.g. lr=None and lr=<the recipe's value>)."""
    unique, seen = [], set()
    for config in configs:
        identity = _identity(config)
        if identity not in seen:
            seen.add(identity)
            config["config"] = len(unique)
            unique.append(config)
    return unique


def _identity(config):
    return json.dumps({"student": config["student_name"], "student_id": 0 if isinstance(config["student"], str)
                       else id(config["student"]), "seed": config["seed"], "method": config["method"],
                       "hparams": {k: repr(v) for k, v in sorted(config["method_object"].hparams.items())},
                       "settings": config["settings"]}, sort_keys=True, default=str)


def _make_groups(configs, dataset, device):
    """Configurations that can share a pass: same student architecture, batch size and number of epochs.
    Inside a group, students are ordered by optimizer (contiguous ranges for StackedOptimizer), method
    (one stacked loss call per method) and seed (students of one seed share their first layer's product).
    Students that cannot be batched form groups of one."""
    groups = {}
    for config in configs:
        student = config["student"]
        key = (student if isinstance(student, str) else id(student), config["settings"]["batch_size"],
               config["settings"]["epochs"])
        groups.setdefault(key, []).append(config)
    result = []
    for group in groups.values():
        group.sort(key=lambda c: (c["settings"]["optimizer"], c["method"], c["seed"], c["config"]))
        if _batchable(group[0]["student"], dataset, device):
            result.append(group)
        else:
            result.extend([config] for config in group)
    return result


def _batchable(student, dataset, device):
    """Whether the students of this architecture train as one batched model.

    * Active dropout (p > 0): no, anywhere. The random masks come from the global RNG in an order a batched
      model cannot reproduce; ``distill`` trains them one by one (same result, not faster).
    * MLPs (Flatten, Linear, ReLU): yes (:class:`_StackedMLP`; on two CPU cores 8 students cost ~2x one).
    * Other architectures: on a GPU, yes, through ``vmap`` over ``functional_call`` (BatchNorm included: each
      student normalises by its own batch statistics and updates its own running statistics, exactly as
      alone). On the CPU, no: there ``vmap`` turns the convolutions into grouped ones whose backward is slow,
      and 8 ``small_cnn`` students took 11.5 s batched against 7.7 s one by one. ``_VMAP_ON_CPU = True``
      batches them anyway (the tests use it to check the GPU path's results on the CPU).
    """
    if isinstance(student, str):
        with torch.random.fork_rng(devices=[]):
            student = resolve_model(student, dataset, 0, "student")
    dropout = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
    if any(isinstance(module, dropout) and module.p > 0 for module in student.modules()):
        return False
    return _mlp_layers(student) is not None or device.type != "cpu" or _VMAP_ON_CPU


_VMAP_ON_CPU = False


def _run_key(config, fingerprint):
    student = config["student"]
    description = {
        **fingerprint,
        "student": config["student_name"],
        "student_weights": None if isinstance(student, str) else module_fingerprint(student),
        "seed": config["seed"],
        "method": config["method"],
        "hparams": {k: repr(v) for k, v in sorted(config["method_object"].hparams.items())},
        "settings": config["settings"],
    }
    return hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _config_columns(config):
    settings = config["settings"]
    columns = {
        "config": config["config"],
        "student": config["student_name"],
        "method": config["method"],
        "temperature": config["temperature"],
        "seed": config["seed"],
        "epochs": settings["epochs"],
        "optimizer": settings["optimizer"],
        "lr": settings["lr"],
        "batch_size": settings["batch_size"],
        "weight_decay": settings["weight_decay"],
        "momentum": settings["momentum"],
        "schedule": _schedule_name(settings["schedule"]),
    }
    columns.update({k: v for k, v in config["overrides"].items() if k not in ("temperature", "gamma")})
    return columns


def _schedule_name(schedule):
    if schedule is None:
        return "constant"
    if isinstance(schedule, (list, tuple)):
        return ",".join(str(m) for m in schedule)
    return str(schedule)


# ----------------------------------------------------------------------------------------------------------
# Training one group as one batched model
# ----------------------------------------------------------------------------------------------------------

class _TeacherLogits:
    """The teacher's logits for the whole training split, computed once (as ``distill`` does) and shared by
    every group; None when there is no teacher or the data are augmented (then the teacher runs per batch)."""

    def __init__(self, teacher, dataset):
        self.teacher, self.dataset, self._logits = teacher, dataset, None

    def get(self):
        if self.teacher is None or self.dataset.augment:
            return None
        if self._logits is None:
            was_training = self.teacher.training
            logits = predict(self.teacher, self.dataset.train_images)
            self.teacher.train(was_training)
            check_model_logits(logits, self.dataset.num_classes, "teacher")
            self._logits = logits
        return self._logits


def _train_group(group, dataset, teacher, teacher_logits, device, bar):
    """Train the students of ``group`` together; return (history frame, {config: trained student})."""
    from torch.func import stack_module_state

    count = len(group)
    settings = [config["settings"] for config in group]
    epochs, batch_size = settings[0]["epochs"], settings[0]["batch_size"]

    # Students initialised exactly as distill does, then stacked: params[name] has shape (N, ...).
    students = []
    for config in group:
        student = config["student"]
        student = copy.deepcopy(student) if isinstance(student, nn.Module) else \
            resolve_model(student, dataset, config["seed"], "student")
        students.append(student.to(device).train())
    params, buffers = stack_module_state(students)
    skeleton = copy.deepcopy(students[0]).to("meta")

    methods = [get_method(config["method"], **config["overrides"]).to(device) for config in group]
    optimizer = StackedOptimizer(list(params.values()), [s["optimizer"] for s in settings],
                                 [s["lr"] for s in settings], [s["momentum"] for s in settings],
                                 [s["weight_decay"] for s in settings])
    lr_schedules = [_lr_schedule(s) for s in settings]
    # CTKD's learnable temperature: its own torch.optim optimizer and schedule with the student's settings,
    # which updates it exactly as distill's shared optimizer does (torch.optim updates each tensor alone).
    method_optimizers = []
    for method, s in zip(methods, settings):
        method_params = list(method.parameters())
        if method_params:
            method_optimizer = make_optimizer(method_params, s)
            method_optimizers.append((method_optimizer, make_scheduler(method_optimizer, s)))
    loss_sets = _loss_sets(methods)

    # One shuffling stream per distinct seed, as in distill.
    seeds = list(dict.fromkeys(config["seed"] for config in group))
    stream_of = torch.tensor([seeds.index(config["seed"]) for config in group], device=device)
    generators = {seed: torch.Generator().manual_seed(seed) for seed in seeds}
    augment_generators = {seed: torch.Generator().manual_seed(seed + 1) for seed in seeds}
    shared_input = len(seeds) == 1
    forward = _batched_forward(skeleton, shared_input, _stream_runs(stream_of.tolist()))
    forward_shared = forward if shared_input else _batched_forward(skeleton, True)
    # On the CPU (float32, no autocast) the MLP students skip autograd for the network (see _StackedMLP).
    manual_backward = isinstance(forward, _StackedMLP) and device.type == "cpu"
    fused = manual_backward and all(
        loss_set[4] and loss_set[2] in _FUSED for loss_set in loss_sets)
    cached = teacher_logits.get()
    train_images, train_targets = dataset.train_images, dataset.train_targets
    n_train = train_targets.shape[0]

    from kdlab.data import augment_batch

    histories = [[] for _ in group]
    diverged = {}  # student index -> True once one of its loss terms was non-finite at the end of an epoch
    if teacher is not None:
        teacher_was_training = teacher.training
        teacher.eval()
    try:
        for epoch in range(1, epochs + 1):
            start_time = time.perf_counter()
            epoch_lrs = [schedule[epoch - 1] for schedule in lr_schedules]
            optimizer.set_lr(epoch_lrs)
            skeleton.train()
            perms = [torch.randperm(n_train, generator=generators[seed]).to(device) for seed in seeds]
            # Each stream's epoch order gathered once (one copy of the data per epoch instead of one index
            # operation per step); the batches are then slices, exactly the images distill's index picks.
            epoch_images = [train_images[perm] for perm in perms]
            epoch_targets = [train_targets[perm] for perm in perms]
            epoch_teacher = [cached[perm] for perm in perms] if cached is not None else None
            term_names, running = None, None
            seen = 0
            correct = torch.zeros(count, dtype=torch.int64, device=device)
            temperature_stats = [[0.0, 0, math.inf, -math.inf] for _ in group]
            for start in range(0, n_train, batch_size):
                stop = start + batch_size
                images, targets, teacher_out = [], [], []
                for stream, seed in enumerate(seeds):
                    batch = epoch_images[stream][start:stop]
                    if dataset.augment:
                        batch = augment_batch(batch, generator=augment_generators[seed])
                    images.append(batch)
                    targets.append(epoch_targets[stream][start:stop])
                    if teacher is None:
                        teacher_out.append(None)
                    elif epoch_teacher is not None:
                        teacher_out.append(epoch_teacher[stream][start:stop])
                    else:
                        with torch.inference_mode(), autocast(device):
                            logits = teacher(batch).float()
                        check_model_logits(logits, dataset.num_classes, "teacher")
                        teacher_out.append(logits.clone())
                if shared_input:
                    x = images[0]
                    targets_n = targets[0].expand(count, -1)
                    teacher_n = None if teacher is None else teacher_out[0].expand(count, -1, -1)
                else:
                    # MLPs take the streams' batches as they are (see _StackedMLP), others one batch each.
                    x = images if isinstance(forward, _StackedMLP) else torch.stack(images)[stream_of]
                    targets_n = torch.stack(targets)[stream_of]
                    teacher_n = None if teacher is None else torch.stack(teacher_out)[stream_of]
                optimizer.zero_grad()
                for method_optimizer, _ in method_optimizers:
                    method_optimizer.zero_grad(set_to_none=True)
                if fused:
                    # No autograd at all: the loss gradient in closed form, the network's backward by hand.
                    student_logits = forward.forward_train(params, x)
                    terms, loss_per_student, grad = _group_terms(loss_sets, student_logits, teacher_n, targets_n,
                                                                 epoch, count, fused=True)
                    forward.backward(params, grad)
                elif manual_backward:
                    # Autograd only for the loss (on a leaf copy of the logits), the network by hand.
                    student_logits = forward.forward_train(params, x).requires_grad_()
                    terms, loss_per_student = _group_terms(loss_sets, student_logits, teacher_n, targets_n,
                                                           epoch, count)
                    loss_per_student.sum().backward()
                    forward.backward(params, student_logits.grad)
                else:
                    with autocast(device):
                        student_logits = forward(params, buffers, x)
                    student_logits = student_logits.float()
                    terms, loss_per_student = _group_terms(loss_sets, student_logits, teacher_n, targets_n,
                                                           epoch, count)
                    loss_per_student.sum().backward()
                optimizer.step()
                for method_optimizer, _ in method_optimizers:
                    method_optimizer.step()

                # Running sums of every term and the loss, one (terms + 1, N) tensor: a single add per step.
                batch_count = targets_n.shape[1]
                seen += batch_count
                if term_names is None:
                    term_names = list(terms)
                step_values = torch.stack([terms[name] for name in term_names] + [loss_per_student.detach()])
                running = step_values * batch_count if running is None else running.add_(step_values,
                                                                                          alpha=batch_count)
                correct += (student_logits.detach().argmax(dim=-1) == targets_n).sum(dim=1)
                for n, method in enumerate(methods):
                    temperatures = method.last_temperatures
                    if temperatures is not None:
                        temperatures = temperatures.detach().float().flatten()
                        stats = temperature_stats[n]
                        stats[0] += temperatures.sum()
                        stats[1] += temperatures.numel()
                        stats[2] = min(stats[2], float(temperatures.min()))
                        stats[3] = max(stats[3], float(temperatures.max()))

            for _, scheduler in method_optimizers:
                if scheduler is not None:
                    scheduler.step()
            test_metrics = _test_metrics(forward_shared, skeleton, params, buffers, dataset, device)
            test_acc = test_metrics["test_acc"]
            finite_test = [a for a in test_acc if math.isfinite(a)]
            seconds = time.perf_counter() - start_time
            means = (running.cpu().double() / seen).tolist()  # on the CPU: MPS has no float64
            totals = dict(zip(term_names + ["loss"], means))
            train_acc = (100.0 * correct.cpu().double() / seen).tolist()
            for n, config in enumerate(group):
                row = {"epoch": epoch}
                row.update({name: values[n] for name, values in totals.items() if name != "loss"
                            and not math.isnan(values[n])})
                row["loss"] = totals["loss"][n]
                row["train_acc"] = train_acc[n]
                row.update({name: values[n] for name, values in test_metrics.items()})
                row["epoch_lr"] = epoch_lrs[n]
                row["seconds"] = seconds
                t_sum, t_count, t_min, t_max = temperature_stats[n]
                if t_count:
                    row["temperature_mean"] = float(t_sum) / t_count
                    row["temperature_min"] = t_min
                    row["temperature_max"] = t_max
                histories[n].append(row)
                if n not in diverged:
                    # A NaN term is dropped from the row above (NaN there means "not a term of this method").
                    own = [name for name in term_names if name in methods[n].term_names]
                    term = diverged_term({name: values[n] for name, values in totals.items()}, own + ["loss"])
                    if term is not None:
                        diverged[n] = True
                        _report_divergence(bar, config, epoch, term)
            for n in diverged:
                histories[n][-1]["diverged"] = True
            bar.update(1)
            bar.set_postfix(best_test_acc=f"{max(finite_test, default=math.nan):.2f}")
    finally:
        if teacher is not None:
            teacher.train(teacher_was_training)

    trained = {}
    for n, (config, student) in enumerate(zip(group, students)):
        with torch.no_grad():
            for name, param in student.named_parameters():
                param.copy_(params[name][n])
            for name, buffer in student.named_buffers():
                buffer.copy_(buffers[name][n])
        trained[config["config"]] = student.eval()
    return _group_frame(group, histories), trained


def _batched_forward(skeleton, shared_input, runs=None):
    """forward(params, buffers, images) -> logits (N, B, K) of the N stacked students.

    images: (B, C, H, W) seen by every student when ``shared_input``. Otherwise the MLP students take the
    list of the S streams' batches (one per seed) and ``runs``, the (start, stop, stream) ranges of students
    that see each (students are sorted by seed); other architectures take (N, B, C, H, W), one batch each.
    The MLP students (Flatten, Linear, ReLU) get hand-batched layers (:class:`_StackedMLP`, which can also
    run its own backward pass). Any other architecture runs through ``torch.func.vmap`` over
    ``functional_call`` (same result, more overhead).
    """
    layers = _mlp_layers(skeleton)
    if layers is None:
        from torch.func import functional_call, vmap

        def run_one(p, b, images):
            return functional_call(skeleton, (p, b), (images,))

        return vmap(run_one, in_dims=(0, 0, None if shared_input else 0))
    return _StackedMLP(layers, [(0, None, 0)] if shared_input else runs)


def _stream_runs(streams):
    """[(start, stop, stream)]: the maximal ranges of consecutive students that share an input stream."""
    runs = []
    for n, stream in enumerate(streams):
        if runs and runs[-1][2] == stream:
            runs[-1][1] = n + 1
        else:
            runs.append([n, n + 1, stream])
    return [tuple(run) for run in runs]


class _StackedMLP:
    """N stacked MLP students (Flatten, Linear, ReLU), with a forward and a hand-written backward pass.

    Forward: the students that see the same batch (one seed's stream) share their first layer: one
    (B, D) @ (D, n * hidden) product (``addmm``) for the n students of a run, instead of n small ones; the
    next layers are ``baddbmm`` over all N students. ``runs``: (start, stop, stream) ranges of students and
    the index of the input batch they see (stop None: to the last student).

    Backward (:meth:`backward`): the same products autograd would run, without the autograd graph. On two
    CPU cores a sweep step is small (a few hundred microseconds of matrix products), and the engine's
    bookkeeping was a large share of it: the backward of eight mlp64 students on a batch of 64 took ~0.9 ms
    through autograd and takes ~0.5 ms here (of which 0.35 ms is the first layer's product). For a linear layer y = x W^T + b of student n with
    upstream gradient g (B, out): dW = g^T x, db = sum_b g, dx = g W; a ReLU passes g where its output is
    > 0 (autograd's ``threshold_backward``). The tests check every gradient against autograd.
    """

    def __init__(self, layers, runs):
        self.layers, self.runs = layers, runs
        self._saved = None
        # Linear layers whose input is a ReLU output (their input gradient is masked by it).
        self._after_relu = {name for (kind, _), (_, name) in zip(layers, layers[1:]) if kind == "relu"}

    def __call__(self, params, buffers, images):
        return self._run(params, images, save=False)

    def forward_train(self, params, images):
        """Logits (N, B, K), keeping what :meth:`backward` needs. Runs without autograd."""
        with torch.no_grad():
            return self._run(params, images, save=True)

    def _run(self, params, images, save):
        saved = [] if save else None
        hidden = list(images) if isinstance(images, (list, tuple)) else [images]  # the streams' batches
        for kind, name in self.layers:
            if kind == "flatten":  # Flatten comes first (see _mlp_layers)
                hidden = [batch.flatten(1) for batch in hidden]
            elif kind == "relu":
                hidden = [batch.relu() for batch in hidden] if isinstance(hidden, list) else hidden.relu()
            else:
                if save:
                    saved.append((name, hidden))  # the layer's input (a ReLU output or the streams' images)
                weight, bias = params[name + ".weight"], params.get(name + ".bias")
                if isinstance(hidden, list):  # the first linear layer: one product per run of students
                    count, out_features, in_features = weight.shape
                    outputs = []
                    for start, stop, stream in self.runs:
                        w = weight[start:stop].reshape(-1, in_features).t()
                        out = hidden[stream] @ w if bias is None else \
                            torch.addmm(bias[start:stop].reshape(-1), hidden[stream], w)
                        outputs.append(out.view(out.shape[0], -1, out_features))
                    hidden = (outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)).transpose(0, 1)
                else:
                    hidden = torch.bmm(hidden, weight.transpose(1, 2)) if bias is None else \
                        torch.baddbmm(bias.unsqueeze(1), hidden, weight.transpose(1, 2))
        self._saved = saved
        return hidden

    def backward(self, params, grad):
        """Set ``.grad`` of every stacked parameter from ``grad`` = d(loss)/d(logits), shape (N, B, K)."""
        if self._saved is None:
            raise RuntimeError("backward needs a forward_train call first")
        saved, self._saved = self._saved, None
        grad = grad.to(params[saved[-1][0] + ".weight"].dtype)
        with torch.no_grad():
            for position in range(len(saved) - 1, -1, -1):
                name, layer_input = saved[position]
                weight, bias = params[name + ".weight"], params.get(name + ".bias")
                if bias is not None:
                    bias.grad = grad.sum(dim=1)
                if isinstance(layer_input, list):  # per run: one (n * out, B) @ (B, in) product
                    count, out_features, in_features = weight.shape
                    weight.grad = torch.empty_like(weight)
                    for start, stop, stream in self.runs:
                        part = grad[start:stop]
                        flat = part.transpose(0, 1).reshape(-1, part.shape[0] * out_features)
                        torch.mm(flat.t(), layer_input[stream],
                                 out=weight.grad[start:stop].view(-1, in_features))
                else:
                    weight.grad = torch.bmm(grad.transpose(1, 2), layer_input)
                if position == 0:
                    break
                grad = torch.bmm(grad, weight)  # d(loss)/d(layer input)
                if name in self._after_relu:
                    grad.masked_fill_(layer_input <= 0, 0.0)


def _mlp_layers(model):
    """[(kind, name)] for an ``nn.Sequential`` of Flatten (default dims), Linear and ReLU layers, else None."""
    if not isinstance(model, nn.Sequential):
        return None
    layers = []
    for name, module in model.named_children():
        if type(module) is nn.Flatten and module.start_dim == 1 and module.end_dim == -1 and not layers:
            layers.append(("flatten", name))
        elif type(module) is nn.Linear:
            layers.append(("linear", name))
        elif type(module) is nn.ReLU:
            layers.append(("relu", name))
        else:
            return None
    if not layers or layers[-1][0] != "linear" or not any(kind == "linear" for kind, _ in layers):
        return None
    return layers


def _test_metrics(forward, skeleton, params, buffers, dataset, device):
    """Test accuracy (percent), NLL and ECE of every student, from one batched forward per chunk of test images."""
    skeleton.eval()
    images, targets = dataset.test_images, dataset.test_targets.to(device)
    chunks = []
    with torch.no_grad(), autocast(device):
        chunk = eval_batch_size(device)
        for start in range(0, images.shape[0], chunk):
            chunks.append(forward(params, buffers, images[start:start + chunk].to(device)).float())
    skeleton.train()
    logits = torch.cat(chunks, dim=1)  # (N, test images, K)
    correct = (logits.argmax(dim=-1) == targets).sum(dim=1)
    metrics = {"test_acc": (100.0 * correct.cpu().double() / targets.shape[0]).tolist()}
    metrics.update({f"test_{name}": values for name, values in calibration(logits, targets).items()})
    return metrics


def _lr_schedule(settings):
    """The learning rate of each epoch, from the same torch scheduler ``distill`` builds (exactly its values)."""
    dummy = torch.zeros(1, requires_grad=True)
    optimizer = make_optimizer([dummy], settings)
    scheduler = make_scheduler(optimizer, settings)
    lrs = []
    for _ in range(settings["epochs"]):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # a no-op (no gradient), so that the scheduler sees the usual order
        if scheduler is not None:
            scheduler.step()
    return lrs


# ----------------------------------------------------------------------------------------------------------
# Loss terms of many students at once
# ----------------------------------------------------------------------------------------------------------

def _loss_sets(methods):
    """Contiguous runs of students [start, stop, method name, methods, stacked, cache] that share one loss
    evaluation: one stacked call for recipes in ``_STACKED``, one ``Method`` call per student otherwise."""
    sets = []
    for n, method in enumerate(methods):
        stacked = method.name in _STACKED and not list(method.parameters())
        if sets and stacked and sets[-1][2] == method.name and sets[-1][4]:
            sets[-1][1] = n + 1
            sets[-1][3].append(method)
        else:
            sets.append([n, n + 1, method.name, [method], stacked, {}])
    return sets


def _group_terms(loss_sets, student_logits, teacher_logits, targets, epoch, count, fused=False):
    """Every student's weighted terms and loss.

    Returns (terms, loss): terms maps a term name to an (N,) tensor (NaN for students whose method has no
    such term, for logging only); loss is the (N,) tensor of each student's sum of terms (what it minimises).
    With ``fused=True`` (every set's recipe in ``_FUSED``) returns (terms, loss, grad): the terms from
    :func:`_fused_terms` and grad = d(sum of the losses)/d(student_logits), shape (N, B, K), no autograd.
    """
    grads = []
    if fused and len(loss_sets) == 1:
        _, _, _, methods, _, cache = loss_sets[0]
        values, loss, grad = _fused_terms(methods, student_logits, teacher_logits, targets, epoch, cache)
        return values, loss, grad
    if len(loss_sets) == 1 and loss_sets[0][4]:  # one stacked recipe for the whole group: no stitching
        _, _, _, methods, _, cache = loss_sets[0]
        values = _stacked_terms(methods, student_logits, teacher_logits, targets, epoch, cache)
        loss = sum(values.values())
        return {term: value.detach() for term, value in values.items()}, loss
    pieces, losses = {}, []
    for start, stop, name, methods, stacked, cache in loss_sets:
        teacher = None if teacher_logits is None else teacher_logits[start:stop]
        if fused:
            values, loss, grad = _fused_terms(methods, student_logits[start:stop], teacher, targets[start:stop],
                                              epoch, cache)
            grads.append(grad)
        elif stacked:
            values = _stacked_terms(methods, student_logits[start:stop], teacher, targets[start:stop], epoch,
                                    cache)
        else:
            results = [method(student_logits[n], None if teacher is None else teacher[n - start], targets[n], epoch)
                       for n, method in zip(range(start, stop), methods)]
            values = {term: torch.stack([r[term] for r in results]) for term in results[0]}
        for term, value in values.items():
            pieces.setdefault(term, []).append((start, stop, value))
        losses.append(loss if fused else sum(values.values()))
    terms = {}
    for term, parts in pieces.items():
        filled, position = [], 0
        for start, stop, value in parts:
            if start > position:
                filled.append(torch.full((start - position,), math.nan, device=value.device))
            filled.append(value.detach())
            position = stop
        if position < count:
            filled.append(torch.full((count - position,), math.nan, device=student_logits.device))
        terms[term] = torch.cat(filled)
    if fused:
        return terms, torch.cat(losses), torch.cat(grads)
    return terms, torch.cat(losses)


def _per_student(values, like):
    """A list of per-student numbers as an (M, 1) column (one row per student) in the dtype of ``like``."""
    return torch.tensor(values, dtype=torch.float64).to(like.dtype).to(like.device).view(-1, 1)


def _stacked_terms(methods, student_logits, teacher_logits, targets, epoch, cache=None):
    """The weighted terms of M students of one recipe, each an (M,) tensor, from one call per loss.

    student_logits (M, B, K), teacher_logits (M, B, K), targets (M, B). Every recipe of ``kdlab.methods`` is
    a sum of weight x batch-mean of per-sample losses, so the M students' rows are flattened to (M * B, K),
    each student's temperature is repeated over its B rows (kdlab.losses takes a (rows, 1) temperature), and
    the per-sample losses are averaged back per student. The weights and warm-up are each method's own
    (``hparams``, ``warmup_factor``); the tests compare every recipe here with ``Method`` itself.
    ``cache``: a dict kept between calls for the same students (weight and temperature columns).
    """
    count, batch, num_classes = student_logits.shape
    name = methods[0].name
    hparams = [m.hparams for m in methods]
    cache = {} if cache is None else cache
    flat_student = student_logits.reshape(count * batch, num_classes)
    flat_targets = targets.reshape(count * batch)
    flat_teacher = None if teacher_logits is None else teacher_logits.reshape(count * batch, num_classes)

    def weight(key, warm_up=True):
        """(M,) column of hparams[key] (times the warm-up factor of this epoch)."""
        if (key, epoch, warm_up) not in cache:
            values = [h[key] * (m.warmup_factor(epoch) if warm_up else 1.0) for h, m in zip(hparams, methods)]
            cache[(key, epoch, warm_up)] = _per_student(values, student_logits).view(-1)
        return cache[(key, epoch, warm_up)]

    def per_student(per_sample):
        return per_sample.view(count, batch).mean(dim=1)

    def temperature():
        """One float if all students share it, else an (M * B, 1) column: each student's T over its rows."""
        if ("temperature", batch) not in cache:
            values = [h["temperature"] for h in hparams]
            cache[("temperature", batch)] = values[0] if len(set(values)) == 1 else \
                _per_student(values, student_logits).repeat_interleave(batch, dim=0)
        return cache[("temperature", batch)]

    smoothing = hparams[0].get("smoothing", 0.0) if name == "label_smoothing" else 0.0
    if name == "label_smoothing" and any(h["smoothing"] != smoothing for h in hparams):
        # label_smoothing takes one epsilon per call: evaluate each distinct value on its own rows.
        ce = torch.stack([F.cross_entropy(student_logits[n], targets[n], label_smoothing=h["smoothing"])
                          for n, h in enumerate(hparams)])
    else:
        ce = per_student(F.cross_entropy(flat_student, flat_targets, reduction="none", label_smoothing=smoothing))
    terms = {"ce": weight("ce_weight", warm_up=False) * ce}
    if name in ("ce", "label_smoothing"):
        return terms
    if name == "kd":
        terms["kd"] = weight("kd_weight") * per_student(kd_loss(flat_student, flat_teacher, temperature(), "none"))
    elif name == "ttm":
        terms["ttm"] = weight("beta") * per_student(ttm_loss(flat_student, flat_teacher, temperature(), "none"))
    elif name == "wttm":
        terms["wttm"] = weight("beta") * per_student(wttm_loss(flat_student, flat_teacher, temperature(), "none"))
    elif name == "lskd":
        terms["lskd"] = weight("kd_weight") * per_student(lskd_loss(flat_student, flat_teacher, temperature(), "none"))
    elif name == "dkd":
        tckd = dkd_loss(flat_student, flat_teacher, flat_targets, 1.0, 0.0, temperature(), "none")
        nckd = dkd_loss(flat_student, flat_teacher, flat_targets, 0.0, 1.0, temperature(), "none")
        terms["tckd"] = weight("alpha") * per_student(tckd)
        terms["nckd"] = weight("beta") * per_student(nckd)
    else:  # pragma: no cover - _STACKED lists exactly the names handled above
        raise ValueError(f"no stacked form for method {name!r}")
    return terms


def _fused_terms(methods, student_logits, teacher_logits, targets, epoch, cache):
    """Terms, losses and loss gradient of M students of one recipe in ``_FUSED``, in closed form.

    Returns (terms, loss, grad): terms maps each term name to an (M,) tensor, loss is their sum (M,), grad is
    d(sum of the M losses)/d(student_logits), (M, B, K) float32. Values match :func:`_stacked_terms` and grad
    matches autograd through it (the tests compare both in float64); computing them together skips building
    and walking an autograd graph of ~40 small operations per step. Everything is computed in float64, as in
    ``kdlab.losses``. With q = softmax(z), q_T = softmax(z / T), p_T = softmax(v / T), onehot y, B samples:

        CE with smoothing eps, target t = (1 - eps) y + eps / K:  d/dz = (q - t) / B
        KD   T^2 KL(p_T || q_T):                                   d/dz = T (q_T - p_T) / B   (Hinton et al. 2015)
        TTM  KL(p_T || q):                                         d/dz = (q - p_T) / B       (TTM eq. 20)
        WTTM U KL(p_T || q), U = sum_i softmax(v)_i^(1/T):         d/dz = U (q - p_T) / B     (U is the teacher's)

    each times its recipe weight (and warm-up factor).
    """
    count, batch, num_classes = student_logits.shape
    name = methods[0].name
    z = student_logits.detach().double()
    factors = _fused_factors(methods, epoch, batch, num_classes, z.device, cache)

    log_q = torch.log_softmax(z, dim=-1)
    q = log_q.exp()
    target = factors["eye"][targets]  # one-hot rows, (M, B, K)
    if name == "label_smoothing":
        target = target * factors["keep"] + factors["spread"]
    terms = {"ce": factors["ce"].view(-1) * -(target * log_q).sum(dim=(1, 2))}
    grad = factors["ce"] * (q - target)
    if name in ("kd", "ttm", "wttm"):
        temperature = factors["temperature"]
        v = teacher_logits.detach().double()
        log_p = torch.log_softmax(v / temperature, dim=-1)
        p = log_p.exp()
        if name == "kd":
            log_q_t = torch.log_softmax(z / temperature, dim=-1)
            terms["kd"] = factors["kd_term"].view(-1) * (p * (log_p - log_q_t)).sum(dim=(1, 2))
            grad = grad + factors["kd_grad"] * (log_q_t.exp() - p)
        else:
            per_sample, direction = (p * (log_p - log_q)).sum(dim=-1), q - p
            if name == "wttm":
                power_sum = torch.logsumexp(torch.log_softmax(v, dim=-1) / temperature, dim=-1).exp()
                per_sample, direction = power_sum * per_sample, power_sum.unsqueeze(-1) * direction
            terms[name] = factors["beta"].view(-1) * per_sample.sum(dim=1)
            grad = grad + factors["beta"] * direction
    terms = {term: value.float() for term, value in terms.items()}
    return terms, sum(terms.values()), grad.float()


def _fused_factors(methods, epoch, batch, num_classes, device, cache):
    """The per-student constants of :func:`_fused_terms` as (M, 1, 1) float64 columns, with the batch mean's
    1 / B and this epoch's warm-up folded in; computed once per (epoch, batch size) and kept in ``cache``."""
    key = ("fused", epoch, batch)
    if key not in cache:
        def column(values):
            return torch.tensor(values, dtype=torch.float64, device=device).view(-1, 1, 1)

        hparams = [m.hparams for m in methods]
        warm = [m.warmup_factor(epoch) for m in methods]
        factors = {"eye": torch.eye(num_classes, dtype=torch.float64, device=device),
                   "ce": column([h["ce_weight"] / batch for h in hparams])}
        if methods[0].name == "label_smoothing":
            factors["keep"] = column([1.0 - h["smoothing"] for h in hparams])
            factors["spread"] = column([h["smoothing"] / num_classes for h in hparams])
        if methods[0].name in ("kd", "ttm", "wttm"):
            temperatures = [h["temperature"] for h in hparams]
            factors["temperature"] = column(temperatures)
        if methods[0].name == "kd":
            weights = [h["kd_weight"] * w / batch for h, w in zip(hparams, warm)]
            factors["kd_term"] = column([c * t * t for c, t in zip(weights, temperatures)])
            factors["kd_grad"] = column([c * t for c, t in zip(weights, temperatures)])
        if methods[0].name in ("ttm", "wttm"):
            factors["beta"] = column([h["beta"] * w / batch for h, w in zip(hparams, warm)])
        cache[key] = factors
    return cache[key]


# Recipes whose terms and gradient _fused_terms computes in closed form (the sweep's CPU path for MLPs).
_FUSED = ("ce", "label_smoothing", "kd", "ttm", "wttm")


# Recipes with a stacked form in _stacked_terms; the others (DTKD's per-sample temperatures from a float
# tau, CTKD's learnable temperature) call their Method per student.
_STACKED = ("ce", "label_smoothing", "kd", "ttm", "wttm", "lskd", "dkd")


# ----------------------------------------------------------------------------------------------------------
# Runs that cannot be batched: kdlab.distill, one by one
# ----------------------------------------------------------------------------------------------------------

def _distill_one(config, dataset, teacher, device, bar):
    settings = config["settings"]
    student = config["student"]
    if isinstance(student, nn.Module):
        student = copy.deepcopy(student)
    try:
        model, history = distill(teacher, dataset, student=student, method=config["method"], seed=config["seed"],
                                 recipe=config["recipe"], device=device, progress=False, **settings,
                                 **config["overrides"])
    except TrainingDiverged as error:
        _report_divergence(bar, config, error.epoch, error.term)
        model, history = None, error.history.assign(diverged=True)
    history = history.rename(columns={"lr": "epoch_lr"})
    bar.update(settings["epochs"])
    return _group_frame([config], [history.to_dict("records")]), {config["config"]: model}


# ----------------------------------------------------------------------------------------------------------
# Tables and files
# ----------------------------------------------------------------------------------------------------------

def _report_divergence(bar, config, epoch, term):
    """A diverged run, in the progress output (a warning when the progress bar is off)."""
    what = ", ".join(f"{k}={v}" for k, v in (("method", config["method"]), ("temperature", config["temperature"]),
                                             ("seed", config["seed"]), ("lr", config["settings"]["lr"])))
    message = (f"sweep: run {config['config']} ({what}) diverged at epoch {epoch}: the loss term {term!r} became "
               "non-finite; it is marked diverged=True (try a smaller learning rate); the other runs go on")
    if bar.disable:
        warnings.warn(message, RuntimeWarning, stacklevel=4)
    else:
        bar.write(message, file=sys.stderr)  # beside the bar


def _group_frame(group, histories):
    rows = []
    for config, history in zip(group, histories):
        columns = _config_columns(config)
        diverged = any(row.get("diverged", False) for row in history)
        for row in history:
            rows.append({**columns, **row, "diverged": diverged, "run_key": config["run_key"]})
    return _normalise(pd.DataFrame(rows))


def _normalise(frame):
    """The same column order and dtypes whether a table was just trained or read back from a CSV file."""
    return pd.read_csv(io.StringIO(frame.to_csv(index=False)))


def _assemble(configs, finished):
    """One table in configuration order: config columns, then epoch, terms, loss, accuracies, ..., run_key."""
    frames, config_names = [], ["config", *_CONFIG_COLUMNS]
    for config in configs:
        rows = finished[config["run_key"]].copy()
        rows["config"] = config["config"]
        frames.append(rows)
        config_names += [name for name in _config_columns(config) if name not in config_names]
    frame = pd.concat(frames, ignore_index=True)
    # "diverged": True for every row of a run whose loss became non-finite (runs saved before it existed: False)
    frame["diverged"] = frame["diverged"].fillna(False).astype(bool) if "diverged" in frame else False
    history = [c for c in frame.columns if c not in config_names and c != "run_key"]
    terms = [c for c in history if c not in _HISTORY_COLUMNS]
    ordered = config_names + ["epoch"] + terms + [c for c in _HISTORY_COLUMNS[1:] if c in history] + ["run_key"]
    return frame[ordered].sort_values(["config", "epoch"], kind="stable").reset_index(drop=True)


_HISTORY_COLUMNS = ("epoch", "loss", "train_acc", "test_acc", "test_nll", "test_ece", "epoch_lr", "seconds", "temperature_mean",
                    "temperature_min", "temperature_max", "diverged")


def _load_finished(folder):
    """run_key -> rows of every run saved in ``folder/groups`` that passes ``_check_group``. A group file that
    does not (cut short, rows or epochs missing, garbled values, no record) is reported with a warning and its
    runs are trained again: never silently reused."""
    finished = {}
    for path in sorted((folder / "groups").glob("*.csv")):
        try:
            text = path.read_text(encoding="utf-8")
            frame = pd.read_csv(io.StringIO(text))
            problem = _check_group(path, text, frame)
        except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as error:
            problem = f"it cannot be read ({type(error).__name__}: {error})"
        if problem:
            warnings.warn(f"sweep: the saved group {path} is not reused: {problem}; its runs are trained again",
                          RuntimeWarning, stacklevel=3)
            continue
        for key, rows in frame.groupby("run_key", sort=False):
            finished[key] = rows.reset_index(drop=True)
    return finished


def _check_group(path, text, frame):
    """What is wrong with a saved group file, or None. Its record (``<name>.json``, written with it) gives the
    row count, the column dtypes and a sha256 of the text; every run must have one row per epoch 1..E."""
    record_path = path.with_suffix(".json")
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return f"its record {record_path.name} is missing or unreadable ({type(error).__name__})"
    if not isinstance(record, dict) or hashlib.sha256(text.encode("utf-8")).hexdigest() != record.get("sha256"):
        return "its content differs from what was written (sha256 mismatch: cut short or changed)"
    if len(frame) != record.get("rows"):
        return f"it has {len(frame)} rows, {record.get('rows')} were written"
    dtypes = {column: str(dtype) for column, dtype in frame.dtypes.items()}
    if dtypes != record.get("dtypes"):
        changed = sorted(c for c in set(dtypes) | set(record.get("dtypes") or {})
                         if dtypes.get(c) != (record.get("dtypes") or {}).get(c))
        return f"the types of columns {changed[:5]} changed"
    for column in ("run_key", "epoch", "epochs"):
        if column not in frame.columns:
            return f"it lacks the column {column!r}"
    for key, rows in frame.groupby("run_key", sort=False):
        epochs = sorted(int(e) for e in rows["epoch"])
        complete = list(range(1, int(rows["epochs"].iloc[0]) + 1))
        diverged = "diverged" in rows.columns and bool(rows["diverged"].any())
        if epochs != complete and not (diverged and epochs == complete[:len(epochs)]):
            return f"run {key} has epochs {epochs[:6]}{'...' if len(epochs) > 6 else ''}, expected 1..{complete[-1]}"
    return None


def _save_group(folder, frame):
    """The group's rows as ``groups/<name>.csv`` and its record ``<name>.json`` (rows, dtypes, sha256), both
    atomic; the record last, so a group without a valid record is never reused."""
    keys = sorted(set(frame["run_key"]))
    name = hashlib.sha256(",".join(keys).encode()).hexdigest()[:20]
    (folder / "groups").mkdir(parents=True, exist_ok=True)
    text = frame.to_csv(index=False)
    written = pd.read_csv(io.StringIO(text))
    record = {"rows": len(written), "dtypes": {column: str(dtype) for column, dtype in written.dtypes.items()},
              "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}
    atomic_write_text(folder / "groups" / f"{name}.csv", text)
    atomic_write_text(folder / "groups" / f"{name}.json", json.dumps(record, indent=1) + "\n")


def _hashable(value):
    if isinstance(value, nn.Module):
        return f"module@{id(value)}"
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    return repr(value)


