"""Temperature sweeps at the speed of one run: many students trained together as one batched model.

Choosing a temperature means a grid: temperatures x seeds x methods x optimizers. Run one ``distill`` per
cell and the grid costs as many runs as it has cells. But the students of a grid are small and all do the
same thing to the same data, so ``sweep`` trains them *together*:

* **One batched model, one loop.** N students of the same architecture are stacked into one set of
  parameters with a leading dimension N (``kdlab.loop.StackedStudents``): a model like any other, whose
  forward gives logits (N, B, K), trained by the same loop as one student (``kdlab.loop.fit``; ``distill``
  is its N = 1 case). When all N students see the same batch (same seed), the first layer is a single
  (B, 784) @ (784, N * 64) matrix product instead of N small ones.
* **One pass over each batch.** The teacher's logits are computed once for the training split and shared by
  every group; the students' losses are summed and one ``backward`` runs for all of them (the students are
  independent, so each gets exactly its own gradient). Students with the same optimizer settings share one
  ``torch.optim`` optimizer over their stacked parameters.
* **One loss call per method.** A method's terms function, written for ONE student, is called once for all
  students of that method through ``torch.func.vmap`` (``kdlab.loop.BatchedTerms``), every recipe included
  (CTKD's learned temperatures and DTKD's logged ones too). Speed: ``benchmarks/bench_sweep.py``.

Every student follows the training protocol of ``kdlab.loop`` (``torch.manual_seed(seed)`` before the
model is created, a ``torch.Generator().manual_seed(seed)`` permutation per epoch, the same recipe
defaults, the same schedule), so each student of a sweep ends within float tolerance of the same
configuration trained alone by ``kdlab.distill`` (tested).

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
import warnings

import pandas as pd
import torch
from torch import nn

from kdlab.methods import get_method, list_methods
from kdlab.common import (
    SETTING_NAMES,
    atomic_write_text,
    check_bool,
    check_output_folder,
    dataset_fingerprint,
    module_fingerprint,
    recipe_method_overrides,
    remove_stale_temporaries,
    resolve_dataset,
    resolve_device,
    resolve_model,
    resolve_recipe,
    tune_cpu_allocator,
)
from kdlab.loop import Batches, StackedStudents, TeacherLogits, TrainingDiverged, fit, mlp_layers, optimizer_key
from kdlab.train import distill, resolve_teacher

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

    students = _train_groups(groups, dataset, teacher, device, folder, finished, progress, len(configs))
    frame = _assemble(configs, finished)
    if folder is not None:
        atomic_write_text(folder / "sweep.csv", frame.to_csv(index=False))
    if return_students:
        return frame, [students.get(config["config"]) for config in configs]
    return frame


def _train_groups(groups, dataset, teacher, device, folder, finished, progress, runs):
    """Train every group (batched, or by distill when it cannot be), save each to ``folder`` as it finishes
    and add its rows to ``finished``; return {config: trained student}."""
    from tqdm.auto import tqdm  # a widget in Jupyter, a text bar in a terminal

    total = sum(group[0]["settings"]["epochs"] for group in groups)
    bar = tqdm(total=total, desc=f"sweep ({runs} runs, {len(groups)} groups)", unit="epoch", disable=not progress)
    students, teacher_logits = {}, TeacherLogits(teacher, dataset)
    try:
        for group in groups:
            if len(group) > 1 or _batchable(group[0]["student"], dataset, device):
                frame, trained = _train_group(group, dataset, teacher, teacher_logits, device, bar)
            else:
                frame, trained = _distill_one(group[0], dataset, teacher, device, bar)
            students.update(trained)
            if folder is not None:
                _save_group(folder, frame)
            for key, rows in frame.groupby("run_key", sort=False):
                finished[key] = rows
    finally:
        bar.close()
    return students


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
        group.sort(key=lambda c: (optimizer_key(c["settings"]), c["method"], c["seed"], c["config"]))
        if _batchable(group[0]["student"], dataset, device):
            result.append(group)
        else:
            result.extend([config] for config in group)
    return result


def _batchable(student, dataset, device):
    """Whether the students of this architecture train as one batched model.

    * Active dropout (p > 0): no, anywhere. The random masks come from the global RNG in an order a batched
      model cannot reproduce; ``distill`` trains them one by one (same result, not faster).
    * MLPs (Flatten, Linear, ReLU): yes (``kdlab.loop.StackedMLP``).
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
    return mlp_layers(student) is not None or device.type != "cpu" or _VMAP_ON_CPU


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

def _train_group(group, dataset, teacher, teacher_logits, device, bar):
    """Train the students of ``group`` together (``kdlab.loop.fit`` on a ``StackedStudents``); return
    (history frame, {config: trained student})."""
    students = [_initial_student(config, dataset, device) for config in group]
    seeds = list(dict.fromkeys(config["seed"] for config in group))
    streams = [seeds.index(config["seed"]) for config in group]
    model = StackedStudents(students, [config["settings"] for config in group], streams, device)
    methods = [get_method(config["method"], **config["overrides"]).to(device) for config in group]
    # CTKD's learnable temperature: its own optimizer and schedule with the student's settings, which update
    # it exactly as distill's shared optimizer does (torch.optim updates each tensor on its own).
    for method, config in zip(methods, group):
        if list(method.parameters()):
            model.add_optimizer(list(method.parameters()), config["settings"])
    batches = Batches(dataset, teacher, seeds, streams, device, augment="crop_flip" if dataset.augment else "none",
                      takes_streams=model.takes_streams)
    histories = fit(model, methods, batches, dataset, group[0]["settings"], teacher=teacher,
                    teacher_logits=teacher_logits, strict=False, bar=bar,
                    on_diverged=lambda n, epoch, term: _report_divergence(bar, group[n], epoch, term))
    return _group_frame(group, histories), {config["config"]: student
                                            for config, student in zip(group, model.trained())}


def _initial_student(config, dataset, device):
    """A copy of the given module, or the named model created after ``torch.manual_seed(seed)`` (as distill)."""
    student = config["student"]
    student = copy.deepcopy(student) if isinstance(student, nn.Module) else \
        resolve_model(student, dataset, config["seed"], "student")
    return student.to(device).train()


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
        for row in history:  # the row's "lr" is the epoch's scheduled one; the config's "lr" is the base value
            row = {("epoch_lr" if key == "lr" else key): value for key, value in row.items()}
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


