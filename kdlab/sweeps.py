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
* **One optimizer step.** Students with the same optimizer settings form one part: one stacked leaf tensor per
  parameter, trained by a ``torch.optim`` SGD/AdamW (fused kernels where torch has them) and scheduler built
  exactly as ``distill`` builds them, so the learning rate of every epoch is the scheduler's own.
* **One loss call per method.** A method's terms function is written for ONE student (``kdlab.methods``:
  logits (B, K), scalar hyper-parameters). The sweep calls it once for all students of that method through
  ``torch.func.vmap``: hyper-parameters the students share are passed as they are, those that differ as one
  0-d tensor per student (:class:`_BatchedTerms`). So every recipe, built in or added with
  ``kdlab.register_method``, is written once and batched without another edit. Recipes with a learnable
  temperature (CTKD) or recorded per-sample temperatures (DTKD) call their own ``Method`` per student.
* **Autograd throughout.** The closed-form loss gradients and the hand-written MLP backward of earlier
  versions are gone: one source of truth per equation (``kdlab.losses``). Speed is measured side by side by
  ``benchmarks/bench_sweep.py`` (figures in ``benchmarks/README.md``).

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
from torch import nn

from kdlab.data import augment_batch
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
    skip_value_checks,
    tune_cpu_allocator,
)
from kdlab.train import TrainingDiverged, distill, predict, resolve_teacher

__all__ = ["sweep", "expand_grid"]

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
    Inside a group, students are ordered by optimizer settings (one torch.optim optimizer per contiguous part),
    method (one batched loss call per method) and seed (students of one seed share their first layer's product).
    Students that cannot be batched form groups of one."""
    groups = {}
    for config in configs:
        student = config["student"]
        key = (student if isinstance(student, str) else id(student), config["settings"]["batch_size"],
               config["settings"]["epochs"])
        groups.setdefault(key, []).append(config)
    result = []
    for group in groups.values():
        group.sort(key=lambda c: (_optimizer_key(c["settings"]), c["method"], c["seed"], c["config"]))
        if _batchable(group[0]["student"], dataset, device):
            result.append(group)
        else:
            result.extend([config] for config in group)
    return result


def _batchable(student, dataset, device):
    """Whether the students of this architecture train as one batched model.

    * Active dropout (p > 0): no, anywhere. The random masks come from the global RNG in an order a batched
      model cannot reproduce; ``distill`` trains them one by one (same result, not faster).
    * MLPs (Flatten, Linear, ReLU): yes (:class:`_StackedMLP`).
    * Other architectures: on a GPU, yes, through ``vmap`` over ``functional_call`` (BatchNorm included: each
      student normalises by its own batch statistics and updates its own running statistics, exactly as
      alone). On the CPU, no: there ``vmap`` turns the convolutions into grouped ones whose backward is slower
      than separate runs (benchmarks/README.md). ``_VMAP_ON_CPU = True``
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
    students = [_initial_student(config, dataset, device) for config in group]
    skeleton = copy.deepcopy(students[0]).to("meta")
    stacked = _StackedParameters(students, group, device)
    methods = [get_method(config["method"], **config["overrides"]).to(device) for config in group]
    # CTKD's learnable temperature: its own optimizer and schedule with the student's settings, which update
    # it exactly as distill's shared optimizer does (torch.optim updates each tensor on its own).
    for method, config in zip(methods, group):
        if list(method.parameters()):
            stacked.add_optimizer(list(method.parameters()), config["settings"])
    loss_sets = _loss_sets(methods, device)
    seeds = list(dict.fromkeys(config["seed"] for config in group))
    streams = [seeds.index(config["seed"]) for config in group]
    forward = _batched_forward(skeleton, len(seeds) == 1, _stream_runs(streams))
    forward_shared = forward if len(seeds) == 1 else _batched_forward(skeleton, True)
    batches = _GroupBatches(dataset, teacher, teacher_logits.get(), seeds, streams, device,
                            stacked_mlp=isinstance(forward, _StackedMLP))
    histories = [[] for _ in group]
    teacher_was_training = teacher.training if teacher is not None else None
    diverged = set()  # students one of whose loss terms was non-finite at the end of an epoch
    if teacher is not None:
        teacher.eval()
    try:
        for epoch in range(1, group[0]["settings"]["epochs"] + 1):
            start_time = time.perf_counter()
            epoch_lrs = stacked.learning_rates()
            skeleton.train()
            stats = _EpochStats(methods, device)
            for images, targets, teacher_out in batches.epoch(group[0]["settings"]["batch_size"]):
                stacked.zero_grad()
                with autocast(device):
                    student_logits = forward(stacked.joined(), stacked.buffers, images)
                student_logits = student_logits.float()
                terms, loss = _group_terms(loss_sets, student_logits, teacher_out, targets, epoch)
                loss.sum().backward()
                stacked.step()
                stats.add(terms, loss, student_logits, targets)
            stacked.schedule()
            with torch.no_grad():
                test_metrics = _test_metrics(forward_shared, skeleton, stacked.joined(), stacked.buffers, dataset,
                                             device)
            for history, row in zip(histories, stats.rows(epoch, test_metrics, epoch_lrs,
                                                          time.perf_counter() - start_time)):
                history.append(row)
            _mark_diverged(histories, methods, group, diverged, epoch, bar)
            finite_test = [a for a in test_metrics["test_acc"] if math.isfinite(a)]
            bar.update(1)
            bar.set_postfix(best_test_acc=f"{max(finite_test, default=math.nan):.2f}")
    finally:
        if teacher is not None:
            teacher.train(teacher_was_training)
    return _group_frame(group, histories), stacked.unstack(group, students)


def _initial_student(config, dataset, device):
    """A copy of the given module, or the named model created after ``torch.manual_seed(seed)`` (as distill)."""
    student = config["student"]
    student = copy.deepcopy(student) if isinstance(student, nn.Module) else \
        resolve_model(student, dataset, config["seed"], "student")
    return student.to(device).train()


class _StackedParameters:
    """The students' parameters stacked along a leading dimension N, and the torch.optim optimizers that train them.

    Students with the same optimizer settings (kind, lr, momentum, weight decay, schedule; ``sweep`` orders them
    contiguously) form a *part*: one leaf tensor (n, ...) per parameter, one ``torch.optim`` optimizer and one
    scheduler, exactly as ``distill`` builds them for one student (fused kernels where torch has them: the same
    update, one pass over each tensor). ``joined()`` is what the batched forward takes: the parts' leaves
    concatenated along dimension 0 (the leaves themselves when there is one part).
    """

    def __init__(self, students, group, device):
        from torch.func import stack_module_state

        params, self.buffers = stack_module_state(students)
        self.parts, self.optimizers, self.schedulers, self.sizes = [], [], [], []
        for _, run in itertools.groupby(range(len(group)), key=lambda n: _optimizer_key(group[n]["settings"])):
            run = list(run)
            part = params if len(run) == len(group) else \
                {name: value[run[0]:run[-1] + 1].detach().clone().requires_grad_() for name, value in params.items()}
            self.parts.append(part)
            self.sizes.append(len(run))
            self.add_optimizer(list(part.values()), group[run[0]]["settings"], device)
        self._extra = len(self.parts)  # optimizers after this one train method parameters (CTKD)

    def add_optimizer(self, params, settings, device=None):
        fused = device is not None and device.type in ("cpu", "cuda") and all(p.is_floating_point() for p in params)
        optimizer = make_optimizer(params, settings, fused=fused or None)
        self.optimizers.append(optimizer)
        self.schedulers.append(make_scheduler(optimizer, settings))

    def joined(self):
        if len(self.parts) == 1:
            return self.parts[0]
        return {name: torch.cat([part[name] for part in self.parts]) for name in self.parts[0]}

    def learning_rates(self):
        """This epoch's learning rate of every student (the scheduled value, as distill's ``lr`` column)."""
        return [optimizer.param_groups[0]["lr"] for optimizer, size in zip(self.optimizers, self.sizes)
                for _ in range(size)]

    def zero_grad(self):
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)

    def step(self):
        for optimizer in self.optimizers:
            optimizer.step()

    def schedule(self):
        for scheduler in self.schedulers:
            if scheduler is not None:
                scheduler.step()

    def unstack(self, group, students):
        """{config: student} with each student's slice of the trained parameters and buffers copied back."""
        params, trained = self.joined(), {}
        with torch.no_grad():
            for n, (config, student) in enumerate(zip(group, students)):
                for name, param in student.named_parameters():
                    param.copy_(params[name][n])
                for name, buffer in student.named_buffers():
                    buffer.copy_(self.buffers[name][n])
                trained[config["config"]] = student.eval()
        return trained


def _optimizer_key(settings):
    return tuple(repr(settings[key]) for key in ("optimizer", "lr", "momentum", "weight_decay", "schedule", "epochs"))


class _GroupBatches:
    """The batches of one epoch for every student: one shuffling stream per distinct seed, as in distill.

    Each stream's epoch order is gathered once (one copy of the data per epoch instead of one index operation
    per step); the batches are then slices, exactly the images distill's index picks. Yields (images, targets
    (N, B), teacher logits (N, B, K) or None): images are one batch (B, ...) when all students share a seed,
    else the MLP students take the list of the streams' batches and other architectures (N, B, ...).
    """

    def __init__(self, dataset, teacher, cached, seeds, streams, device, stacked_mlp):
        self.dataset, self.teacher, self.cached, self.seeds, self.device = dataset, teacher, cached, seeds, device
        self.stream_of = torch.tensor(streams, device=device)
        self.count, self.stacked_mlp = len(streams), stacked_mlp
        self.generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        self.augment_generators = [torch.Generator().manual_seed(seed + 1) for seed in seeds]

    def epoch(self, batch_size):
        n_train = self.dataset.train_targets.shape[0]
        perms = [torch.randperm(n_train, generator=generator).to(self.device) for generator in self.generators]
        images = [self.dataset.train_images[perm] for perm in perms]
        targets = [self.dataset.train_targets[perm] for perm in perms]
        teacher = [self.cached[perm] for perm in perms] if self.cached is not None else None
        for start in range(0, n_train, batch_size):
            stop = start + batch_size
            batch = [self._images(images[s][start:stop], s) for s in range(len(self.seeds))]
            labels = [stream[start:stop] for stream in targets]
            if self.teacher is None:
                teacher_out = None
            elif teacher is not None:
                teacher_out = [stream[start:stop] for stream in teacher]
            else:
                with torch.inference_mode(), autocast(self.device):
                    teacher_out = [self.teacher(x).float() for x in batch]
                teacher_out = [logits.clone() for logits in teacher_out]  # normal tensors, out of inference mode
                for logits in teacher_out:
                    check_model_logits(logits, self.dataset.num_classes, "teacher")
            yield self._arrange(batch, labels, teacher_out)

    def _images(self, batch, stream):
        if self.dataset.augment:
            return augment_batch(batch, generator=self.augment_generators[stream])
        return batch

    def _arrange(self, batch, labels, teacher_out):
        if len(self.seeds) == 1:
            teacher_n = None if teacher_out is None else teacher_out[0].expand(self.count, -1, -1)
            return batch[0], labels[0].expand(self.count, -1), teacher_n
        images = batch if self.stacked_mlp else torch.stack(batch)[self.stream_of]
        teacher_n = None if teacher_out is None else torch.stack(teacher_out)[self.stream_of]
        return images, torch.stack(labels)[self.stream_of], teacher_n


class _EpochStats:
    """Running sums of every student's terms, loss, correct predictions and temperatures (DTKD, CTKD) over an
    epoch, and the epoch's history rows (the same columns as distill's, "lr" named "epoch_lr")."""

    def __init__(self, methods, device):
        self.methods, self.term_names, self.running, self.seen = methods, None, None, 0
        self.correct = torch.zeros(len(methods), dtype=torch.int64, device=device)
        self.temperatures = [[0.0, 0, math.inf, -math.inf] for _ in methods]

    def add(self, terms, loss, student_logits, targets):
        batch = targets.shape[1]
        self.seen += batch
        if self.term_names is None:
            self.term_names = list(terms)
        values = torch.stack([terms[name] for name in self.term_names] + [loss.detach()])  # one add per step
        self.running = values * batch if self.running is None else self.running.add_(values, alpha=batch)
        self.correct += (student_logits.detach().argmax(dim=-1) == targets).sum(dim=1)
        for method, stats in zip(self.methods, self.temperatures):
            if method.last_temperatures is not None:
                temperatures = method.last_temperatures.detach().float().flatten()
                stats[0] += temperatures.sum()
                stats[1] += temperatures.numel()
                stats[2] = min(stats[2], float(temperatures.min()))
                stats[3] = max(stats[3], float(temperatures.max()))

    def rows(self, epoch, test_metrics, epoch_lrs, seconds):
        means = (self.running.cpu().double() / self.seen).tolist()  # on the CPU: MPS has no float64
        totals = dict(zip(self.term_names + ["loss"], means))
        train_acc = (100.0 * self.correct.cpu().double() / self.seen).tolist()
        rows = []
        for n, (t_sum, t_count, t_min, t_max) in enumerate(self.temperatures):
            row = {"epoch": epoch}
            row.update({name: values[n] for name, values in totals.items() if name != "loss"
                        and not math.isnan(values[n])})
            row.update({"loss": totals["loss"][n], "train_acc": train_acc[n]})
            row.update({name: values[n] for name, values in test_metrics.items()})
            row.update({"epoch_lr": epoch_lrs[n], "seconds": seconds})
            if t_count:
                row.update({"temperature_mean": float(t_sum) / t_count, "temperature_min": t_min,
                            "temperature_max": t_max})
            rows.append(row)
        return rows


def _batched_forward(skeleton, shared_input, runs=None):
    """forward(params, buffers, images) -> logits (N, B, K) of the N stacked students.

    images: (B, C, H, W) seen by every student when ``shared_input``. Otherwise the MLP students take the
    list of the S streams' batches (one per seed) and ``runs``, the (start, stop, stream) ranges of students
    that see each (students are sorted by seed); other architectures take (N, B, C, H, W), one batch each.
    The MLP students (Flatten, Linear, ReLU) get hand-batched layers (:class:`_StackedMLP`). Any other
    architecture runs through ``torch.func.vmap`` over ``functional_call`` (same result, more overhead).
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
    """The forward pass of N stacked MLP students (Flatten, Linear, ReLU); autograd gives the backward.

    The students that see the same batch (one seed's stream) share their first layer: one (B, D) @ (D, n *
    hidden) product (``addmm``) for the n students of a run, instead of n small ones; the next layers are
    ``baddbmm`` over all N students. ``runs``: (start, stop, stream) ranges of students and the index of the
    input batch they see (stop None: to the last student).
    """

    def __init__(self, layers, runs):
        self.layers, self.runs = layers, runs

    def __call__(self, params, buffers, images):
        hidden = list(images) if isinstance(images, (list, tuple)) else [images]  # the streams' batches
        for kind, name in self.layers:
            if kind == "flatten":  # Flatten comes first (see _mlp_layers)
                hidden = [batch.flatten(1) for batch in hidden]
            elif kind == "relu":
                hidden = [batch.relu() for batch in hidden] if isinstance(hidden, list) else hidden.relu()
            else:
                weight, bias = params[name + ".weight"], params.get(name + ".bias")
                if isinstance(hidden, list):  # the first linear layer: one product per run of students
                    hidden = self._first_layer(hidden, weight, bias)
                else:
                    hidden = torch.bmm(hidden, weight.transpose(1, 2)) if bias is None else \
                        torch.baddbmm(bias.unsqueeze(1), hidden, weight.transpose(1, 2))
        return hidden

    def _first_layer(self, streams, weight, bias):
        _, out_features, in_features = weight.shape
        outputs = []
        for start, stop, stream in self.runs:
            w = weight[start:stop].reshape(-1, in_features).t()
            out = streams[stream] @ w if bias is None else torch.addmm(bias[start:stop].reshape(-1), streams[stream], w)
            outputs.append(out.view(out.shape[0], -1, out_features))
        return (outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)).transpose(0, 1)


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


# ----------------------------------------------------------------------------------------------------------
# Loss terms of many students at once: each method's one-student terms function, batched by vmap
# ----------------------------------------------------------------------------------------------------------

def _loss_sets(methods, device):
    """[(start, stop, terms_of)]: contiguous runs of students of one method and ``terms_of(student_logits,
    teacher_logits, targets, epoch)`` -> {term: (n,) tensor} for them: one vmapped call of the method's terms
    (:class:`_BatchedTerms`) when it can be batched, else one ``Method`` call per student (CTKD, DTKD)."""
    sets = []
    for n, method in enumerate(methods):
        if sets and sets[-1][2] == method.name:
            sets[-1][1] = n + 1
        else:
            sets.append([n, n + 1, method.name])
    result = []
    for start, stop, _ in sets:
        members = methods[start:stop]
        terms_of = _BatchedTerms(members, device) if _BatchedTerms.supports(members) else _per_student_terms(members)
        result.append((start, stop, terms_of))
    return result


class _BatchedTerms:
    """The terms of n students of one method from ONE call of its one-student terms function through
    ``torch.func.vmap``: hyper-parameters the students share are passed as they are, those that differ as one
    0-d tensor per student (a float64 column, dimension 0 mapped). Value checks of the losses (temperatures
    > 0, targets in range) are skipped inside: the values were checked when the methods were made."""

    def __init__(self, methods, device):
        hparams = [method.hparams for method in methods]
        self.terms = methods[0].terms
        self.varying = [key for key in hparams[0] if len({repr(h[key]) for h in hparams}) > 1]
        self.fixed = {key: value for key, value in hparams[0].items() if key not in self.varying}
        wide = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
        self.columns = [torch.tensor([float(h[key]) for h in hparams], dtype=wide, device=device)
                        for key in self.varying]
        self._calls = {}

    @staticmethod
    def supports(methods):
        """Batchable methods whose differing hyper-parameters are all numbers (a flag cannot be a tensor)."""
        if not all(method.batchable and not list(method.parameters()) for method in methods):
            return False
        first = methods[0].hparams
        return all(isinstance(method.hparams[key], (int, float)) and not isinstance(method.hparams[key], bool)
                   for method in methods for key in first if method.hparams[key] != first[key])

    def __call__(self, student_logits, teacher_logits, targets, epoch):
        from torch.func import vmap

        no_teacher = teacher_logits is None
        if no_teacher not in self._calls:
            def one(student, teacher, target, epoch, *values):
                return self.terms(student, teacher, target, epoch, **self.fixed, **dict(zip(self.varying, values)))

            in_dims = (0, None if no_teacher else 0, 0, None, *([0] * len(self.varying)))
            self._calls[no_teacher] = vmap(one, in_dims=in_dims)
        with skip_value_checks():
            terms = self._calls[no_teacher](student_logits, teacher_logits, targets, epoch, *self.columns)
        return {name: value.float() for name, value in terms.items()}


def _per_student_terms(methods):
    def terms_of(student_logits, teacher_logits, targets, epoch):
        results = [method(student_logits[n], None if teacher_logits is None else teacher_logits[n], targets[n], epoch)
                   for n, method in enumerate(methods)]
        return {term: torch.stack([result[term] for result in results]) for term in results[0]}
    return terms_of


def _group_terms(loss_sets, student_logits, teacher_logits, targets, epoch):
    """Every student's weighted terms and loss.

    Returns (terms, loss): terms maps a term name to an (N,) tensor (NaN for students whose method has no
    such term, for logging only); loss is the (N,) tensor of each student's sum of terms (what it minimises).
    """
    count = student_logits.shape[0]
    pieces, losses = {}, []
    for start, stop, terms_of in loss_sets:
        whole = start == 0 and stop == count
        teacher = None if teacher_logits is None else (teacher_logits if whole else teacher_logits[start:stop])
        values = terms_of(*((student_logits, teacher, targets) if whole else
                            (student_logits[start:stop], teacher, targets[start:stop])), epoch)
        for term, value in values.items():
            pieces.setdefault(term, []).append((start, stop, value.detach()))
        losses.append(sum(values.values()))
    if len(loss_sets) == 1:
        return {term: parts[0][2] for term, parts in pieces.items()}, losses[0]
    terms = {}
    for term, parts in pieces.items():
        filled, position = [], 0
        for start, stop, value in parts:
            if start > position:
                filled.append(torch.full((start - position,), math.nan, device=value.device))
            filled.append(value)
            position = stop
        if position < count:
            filled.append(torch.full((count - position,), math.nan, device=student_logits.device))
        terms[term] = torch.cat(filled)
    return terms, torch.cat(losses)


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

def _mark_diverged(histories, methods, group, diverged, epoch, bar):
    """Mark (and report once) each student whose newest history row has a non-finite loss term; the others
    train on. A NaN term is left out of the row (NaN there means "not a term of this method"), so the total
    loss, which sums the terms, catches it."""
    for n, (history, method, config) in enumerate(zip(histories, methods, group)):
        if n not in diverged:
            row = history[-1]
            term = diverged_term(row, [name for name in row if name in method.term_names] + ["loss"])
            if term is not None:
                diverged.add(n)
                _report_divergence(bar, config, epoch, term)
        if n in diverged:
            history[-1]["diverged"] = True


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


