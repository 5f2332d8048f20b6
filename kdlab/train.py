"""Training: ``train_teacher`` and ``distill``, both the one-student case of ``kdlab.loop.fit``.

The loop (``kdlab.loop``, shared with ``kdlab.sweep``) is the one every knowledge-distillation paper uses
(RepDistiller, mdistiller, TTM, DTKD): one seeded permutation per epoch, the student's logits, the teacher's
(computed once for the training split when the data are not augmented: the same student, many times faster
than running the teacher per batch, which ``reuse_teacher_logits=False`` does), the method's weighted terms,
their sum minimised by a ``torch.optim`` step, every term logged; the schedule and the test metrics once per
epoch.

Training protocol (a sweep's student follows it too, so it equals ``distill``'s):
``torch.manual_seed(seed)`` right before the model is created; ``torch.Generator().manual_seed(seed)``
draws one ``randperm`` per epoch; batches are consecutive slices (the last partial batch is kept);
augmentation (only when ``dataset.augment``) uses ``torch.Generator().manual_seed(seed + 1)``; the
schedule steps once per epoch. Settings come from a recipe (``RECIPES``) and explicit arguments win;
``resolve_recipe`` does that resolution and is what ``kdlab.sweeps`` uses.

Also here: a teacher cache (``$KDLAB_CACHE`` or ``~/.cache/kdlab``) so that a notebook gets its teacher
back in a second, opt-in checkpoints with bit-identical resume on CPU, and DistributedDataParallel when
launched by ``torchrun``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import warnings
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from kdlab.common import (
    RECIPE_METHODS,
    RECIPES,
    atomic_save,
    check_bool,
    check_output_folder,
    check_seed,
    dataset_fingerprint,
    module_fingerprint,
    process_rank,
    recipe_method_overrides,
    remove_stale_temporaries,
    resolve_dataset,
    resolve_device,
    resolve_model,
    resolve_recipe,
    state_fingerprint,
)
from kdlab.data import Dataset, load_dataset
from kdlab.loop import Batches, OneStudent, TeacherLogits, TrainingDiverged, fit, predict
from kdlab.methods import get_method

__all__ = ["RECIPES", "RECIPE_METHODS", "SHIPPED_TEACHERS", "TrainingDiverged", "train_teacher", "distill",
           "evaluate", "predict", "cache_dir"]


# Bump when the layout of cached teacher files changes: old files are then simply not found.
CACHE_FORMAT_VERSION = 1

# Teachers whose weights ship with kdlab (package data in kdlab/_data), keyed by (dataset, model, seed):
# file name and sha256. ``train_teacher`` returns one at once when its training key (dataset contents,
# architecture, recipe settings, seed) equals the one stored in the file; ``pretrained=False`` trains instead.
# The mnist10k "cnn" file was written by ``train_teacher("mnist10k", pretrained=False)`` on the CPU
# (torch 2.14.1, 2 threads): 98.65 % test accuracy after 10 epochs.
SHIPPED_TEACHERS = {
    ("mnist10k", "cnn", 0): {"file": "teacher-mnist10k-cnn-seed0.pt",
                             "sha256": "13853a1e2a74d1a99964df9414617b17b98a59d24a1b19232240805895eefdfe"},
}

# The training settings (RECIPES, RECIPE_METHODS) and their resolution live in kdlab.common.


# ----------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------

def train_teacher(dataset="mnist10k", model="cnn", epochs=None, seed=0, optimizer=None, lr=None,
                  batch_size=None, weight_decay=None, momentum=None, schedule=None, recipe=None,
                  augment=None, device="auto", compile=False, cache=True, checkpoint_dir=None,
                  resume=False, progress=True, pretrained=True):
    """Train a teacher with cross-entropy; return ``(model, history)``.

    dataset: a name for ``kdlab.load_dataset`` or a ``Dataset``. model: a name for ``kdlab.create_model``
    or an ``nn.Module`` (trained in place). Settings left as ``None`` come from the recipe (``RECIPES``);
    ``augment`` is "dataset" (the dataset's own augmentation), "shift" (random shifts of up to 2 pixels,
    the mnist10k recipe) or "none".

    With ``cache=True`` and a model given by name, the weights are stored under ``cache_dir()`` keyed by
    (dataset contents, model name and layers, recipe settings, seed); the next call with the same key
    loads them instead of training (``history.attrs["cached"]`` is then True). A corrupt cache file is reported with a
    warning and the teacher is trained again.

    pretrained: with a model given by name, first look for weights shipped with kdlab (``SHIPPED_TEACHERS``:
    the default ``train_teacher("mnist10k")``, i.e. model "cnn", its recipe and seed 0). They are used when
    their training key equals this call's, so the result is what training would give, with the history
    recorded when the file was made. ``pretrained=False`` never uses them.

    ``history.attrs["source"]`` says where the weights came from: "shipped" (kdlab's file), "cache" (trained
    earlier on this machine) or "trained" (just now).

    history: one row per epoch with "epoch", "ce", "loss", "train_acc", "test_acc" (percent), "lr",
    "seconds"; ``history.attrs["settings"]`` holds the settings used (the recipe's values after the explicit
    arguments). The returned model is in eval mode.
    """
    check_bool(cache, "cache")
    _check_checkpoint_arguments(checkpoint_dir, resume)  # before the cache: an error even on a cache hit
    device = resolve_device(device)
    dataset = resolve_dataset(dataset, device)
    settings = resolve_recipe(recipe, dataset.name, "teacher", epochs=epochs, optimizer=optimizer, lr=lr,
                               batch_size=batch_size, weight_decay=weight_decay, momentum=momentum,
                               schedule=schedule, augment=augment)
    check_seed(seed)
    use_cache = cache and isinstance(model, str)
    model_name = model if isinstance(model, str) else type(model).__name__

    check_bool(pretrained, "pretrained")
    cache_path = None
    if isinstance(model, str) and (use_cache or pretrained):
        cached_model = resolve_model(model, dataset, seed, "model")
        key = {"format": CACHE_FORMAT_VERSION, "dataset": dataset.name,
               "fingerprint": dataset_fingerprint(dataset), "model": model_name,
               "architecture": hashlib.sha256(repr(cached_model).encode()).hexdigest()[:16],
               "recipe": settings, "seed": seed}
        history = _load_shipped_teacher(key, cached_model, device) if pretrained else None
        if use_cache:
            cache_path = _teacher_cache_path(dataset.name, model_name, seed, key)
            remove_stale_temporaries(cache_path.parent)
            if history is None:
                history = _load_cached_teacher(cache_path, key, cached_model, device)
        if _all_ranks_agree(history is not None, device):
            cached_model.to(device).eval()
            history.attrs["settings"] = settings
            return cached_model, history
    # Created (again) after the cache check, so a half-loaded corrupt file cannot leak into training.
    given_module = isinstance(model, nn.Module)
    model = resolve_model(model, dataset, seed, "model")

    model, history = _fit(model, dataset, get_method("ce"), None, settings, seed=seed, device=device,
                          compile=compile, reuse_teacher_logits=True, checkpoint_dir=checkpoint_dir,
                          resume=resume, progress=progress, description=f"teacher {model_name}",
                          run_config={"kind": "teacher", "model": model_name}, reseed=given_module)
    if use_cache and process_rank() == 0:
        _save_cached_teacher(cache_path, key, model, history)
    history.attrs["cache_path"] = str(cache_path) if cache_path else None
    history.attrs["source"] = "trained"
    history.attrs["settings"] = settings
    return model, history


def distill(teacher, dataset="mnist10k", student="mlp64", method="kd", temperature=None, epochs=None,
            seed=0, optimizer=None, lr=None, batch_size=None, weight_decay=None, momentum=None,
            schedule=None, recipe=None, device="auto", compile=False, checkpoint_dir=None, resume=False,
            progress=True, reuse_teacher_logits=True, **method_overrides):
    """Distill ``teacher`` into ``student`` with any method of ``kdlab.methods``; return ``(student, history)``.

    teacher: a trained ``nn.Module`` (put in eval mode, run under ``torch.inference_mode``), a model name
    (then ``train_teacher(dataset, teacher)`` provides it, from the cache when possible), or ``None`` for
    methods that need no teacher ("ce", "label_smoothing").
    dataset: a name or a ``Dataset``, typically a transfer set: ``load_dataset().transfer_set(1000)``.
    student: a name (initialised after ``torch.manual_seed(seed)``) or an ``nn.Module`` (trained in place).
    method: a name from ``kdlab.list_methods()``; ``temperature`` and ``**method_overrides`` (alpha=...,
    beta=...) are passed to ``get_method``, over the recipe's method defaults (``RECIPE_METHODS``: on
    mnist10k TTM uses beta = 3, not the CIFAR 100). Settings left as ``None`` come from the recipe (``RECIPES``).

    reuse_teacher_logits: when the data are not augmented, compute the teacher's logits once for the
    whole training split and index them per batch (the default, same result); ``False`` runs the
    teacher on every batch like the common tutorials do.

    history: one row per epoch with "epoch", one column per loss term (e.g. "ce", "kd"), "loss",
    "train_acc", "test_acc" (percent), "lr", "seconds" and, for methods with per-batch temperatures
    (DTKD, CTKD), "temperature_mean", "temperature_min", "temperature_max". ``history.attrs`` holds
    "settings" (the training settings used) and "method" ({"name", "hparams"}: the method's hyper-parameters
    after the recipe's and the explicit ones). The student is returned in eval mode.
    """
    check_bool(reuse_teacher_logits, "reuse_teacher_logits")
    _check_checkpoint_arguments(checkpoint_dir, resume)
    device = resolve_device(device)
    dataset = resolve_dataset(dataset, device)
    settings = resolve_recipe(recipe, dataset.name, "student", epochs=epochs, optimizer=optimizer, lr=lr,
                               batch_size=batch_size, weight_decay=weight_decay, momentum=momentum,
                               schedule=schedule)
    check_seed(seed)
    if isinstance(method, str):
        if temperature is not None:
            method_overrides = {"temperature": temperature, **method_overrides}
        method_overrides = recipe_method_overrides(recipe, dataset.name, method, method_overrides)
        try:
            method = get_method(method, **method_overrides)
        except ValueError as error:
            raise ValueError(f"method {method!r}: {error}") from None
    elif isinstance(method, nn.Module) and hasattr(method, "needs_teacher"):
        if temperature is not None or method_overrides:
            raise ValueError("temperature and method overrides must be passed with a method name, "
                             "not together with a ready-made method object")
    else:
        raise TypeError(f"method must be a method name (see kdlab.list_methods()) or a Method, "
                        f"got {type(method).__name__}")

    # "ce" / "label_smoothing": no teacher, the student learns from the labels alone
    teacher = resolve_teacher(teacher, dataset, device, progress, needed=method.needs_teacher,
                              reason=f" for method {method.name!r}")

    student_name = student if isinstance(student, str) else type(student).__name__
    given_module = isinstance(student, nn.Module)
    student = resolve_model(student, dataset, seed, "student")
    run_config = {"kind": "distill", "student": student_name, "method": method.name,
                  "hparams": {k: repr(v) for k, v in sorted(method.hparams.items())}}
    student, history = _fit(student, dataset, method, teacher, settings, seed=seed, device=device,
                            compile=compile, reuse_teacher_logits=reuse_teacher_logits,
                            checkpoint_dir=checkpoint_dir, resume=resume, progress=progress,
                            description=f"distill {method.name} -> {student_name}", run_config=run_config,
                            reseed=given_module)
    history.attrs["settings"] = settings
    history.attrs["method"] = {"name": method.name, "hparams": dict(sorted(method.hparams.items()))}
    return student, history


def resolve_teacher(teacher, dataset, device, progress=True, needed=True, reason=""):
    """The teacher on ``device``: an ``nn.Module`` as is, a model name -> ``train_teacher(dataset, name)``
    (from the cache when possible); None when no method ``needed`` one. ``reason`` ends the error message
    for a missing teacher (e.g. " for method 'kd'")."""
    if not needed:
        return None
    if teacher is None:
        raise ValueError(f"teacher must be given{reason}, got None")
    if isinstance(teacher, str):
        teacher, _ = train_teacher(dataset, model=teacher, device=device, progress=progress)
    elif not isinstance(teacher, nn.Module):
        raise TypeError(f"teacher must be an nn.Module, a model name or None, got {type(teacher).__name__}")
    return teacher.to(device)


def evaluate(model, dataset, split="test", batch_size=None):
    """Top-1 accuracy of ``model`` on a split of ``dataset``, in percent (a float in [0, 100]).

    batch_size: images per forward pass (default: 256 on the CPU, 1,024 on a GPU)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(dataset, str):
        dataset = load_dataset(dataset)
    elif not isinstance(dataset, Dataset):
        raise TypeError(f"dataset must be a dataset name or a Dataset, got {type(dataset).__name__}")
    images = dataset.train_images if split == "train" else dataset.test_images
    targets = dataset.train_targets if split == "train" else dataset.test_targets
    logits = predict(model, images, batch_size=batch_size)
    return _accuracy(logits, targets.to(logits.device))


def cache_dir():
    """Folder of the teacher cache: ``$KDLAB_CACHE`` if set, else the user cache folder + ``kdlab``."""
    if os.environ.get("KDLAB_CACHE"):
        return Path(os.environ["KDLAB_CACHE"]).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "kdlab"


# ----------------------------------------------------------------------------------------------------
# The loop: kdlab.loop.fit, for one student
# ----------------------------------------------------------------------------------------------------

def _fit(model, dataset, method, teacher, settings, *, seed, device, compile, reuse_teacher_logits,
         checkpoint_dir, resume, progress, description, run_config, reseed=False):
    """Train ``model`` on ``dataset`` with the loss terms of ``method`` (``kdlab.loop.fit`` with N = 1);
    return ``(model, history)``.

    The global torch RNG (dropout masks) is forked: training draws from it but leaves the caller's stream as
    it was, so what runs afterwards does not depend on whether this model was trained or loaded from the
    cache. ``reseed=True`` (a model passed as an ``nn.Module``, not created here after ``manual_seed(seed)``)
    seeds that stream with ``seed`` first, so fine-tuning a given model is reproducible on its own.
    """
    check_bool(compile, "compile")
    check_bool(progress, "progress")
    _check_checkpoint_arguments(checkpoint_dir, resume)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        if reseed:
            torch.random.default_generator.manual_seed(seed)
            if device.type == "cuda":
                torch.cuda.manual_seed(seed)
        rank, world_size = _init_distributed(device)
        method.to(device)
        students = OneStudent(model, settings, device, extra_params=method.parameters(), compile=compile,
                              world_size=world_size)
        augment = settings.get("augment", "dataset")  # students: always "dataset" (the training protocol)
        if augment == "dataset":
            augment = "crop_flip" if dataset.augment else "none"
        batches = Batches(dataset, teacher, [seed], [0], device, augment=augment, rank=rank, world_size=world_size)
        checkpoint = None
        if checkpoint_dir is not None:  # what made the checkpoint: resuming with another teacher or data is refused
            config = {**run_config, "dataset": dataset.name, "n_train": int(dataset.train_targets.shape[0]),
                      "settings": settings, "seed": seed, "world_size": world_size,
                      "dataset_fingerprint": dataset_fingerprint(dataset),
                      "teacher_fingerprint": module_fingerprint(teacher)}
            checkpoint = {"path": Path(checkpoint_dir) / "checkpoint.pt", "resume": resume,
                          "config": json.dumps(config, sort_keys=True)}
        cached = TeacherLogits(teacher, dataset) if reuse_teacher_logits and augment == "none" else None
        [history] = fit(students, [method], batches, dataset, settings, teacher=teacher, teacher_logits=cached,
                        strict=True, checkpoint=checkpoint, description=description, progress=progress,
                        world_size=world_size)
    model.eval()
    frame = pd.DataFrame(history)
    frame.attrs["cached"] = False
    return model, frame


def _accuracy(logits, targets):
    return 100.0 * (logits.argmax(dim=1) == targets).sum().item() / targets.shape[0]


# ----------------------------------------------------------------------------------------------------
# Distributed (torchrun)
# ----------------------------------------------------------------------------------------------------

def _init_distributed(device):
    """(rank, world_size). Under torchrun (WORLD_SIZE > 1) the process group is created once, with NCCL
    on CUDA and gloo on the CPU; a single process returns (0, 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    import torch.distributed as dist
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _all_ranks_agree(flag, device):
    """True when ``flag`` is True on every rank (trivially the flag itself in a single process)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return flag
    import torch.distributed as dist
    _init_distributed(device)
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item() == 1.0)


# ----------------------------------------------------------------------------------------------------
# Files: atomic writes, teacher cache, checkpoints
# ----------------------------------------------------------------------------------------------------


def _teacher_cache_path(dataset_name, model_name, seed, key):
    key_hash = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{dataset_name}-{model_name}-seed{seed}")
    return cache_dir() / "teachers" / f"{safe}-{key_hash}.pt"


def _load_cached_teacher(path, key, model, device):
    """Load a cached teacher into ``model`` and return its history, or None when there is no usable file.
    A file that cannot be read (truncated, corrupt, other key) is reported with a warning."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        if not isinstance(state, dict) or state.get("format") != CACHE_FORMAT_VERSION:
            raise ValueError("unknown file layout")
        if state.get("key") != json.dumps(key, sort_keys=True):
            raise ValueError("file belongs to another training configuration")
        # Files written since the checksum exists carry it; a changed byte in any weight changes it.
        if "checksum" in state and state["checksum"] != state_fingerprint(state["state_dict"]):
            raise ValueError("its weights do not match the checksum stored beside them (the file was changed "
                             "or damaged)")
        model.load_state_dict(state["state_dict"])
        history = _history_from_lists(state["history"])
    except Exception as error:  # noqa: BLE001 - any unreadable file means: train again
        warnings.warn(f"kdlab: teacher cache file {path} is unreadable ({type(error).__name__}: {error}); "
                      "training the teacher again and overwriting it", RuntimeWarning, stacklevel=3)
        return None
    frame = pd.DataFrame(history)
    frame.attrs["cached"] = True
    frame.attrs["cache_path"] = str(path)
    frame.attrs["source"] = "cache"
    return frame


def _save_cached_teacher(path, key, model, history):
    """Store a trained teacher in the cache with a checksum of its weights. A cache that cannot be written
    (read-only or missing and uncreatable folder, a full disk, a folder where the file should be) only costs
    the next call a retraining: a warning, never an error that would lose the teacher just trained."""
    state_dict = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    try:
        atomic_save({"format": CACHE_FORMAT_VERSION, "key": json.dumps(key, sort_keys=True),
                     "state_dict": state_dict, "checksum": state_fingerprint(state_dict),
                     "history": _history_to_lists(history)}, path)
    except OSError as error:
        warnings.warn(f"kdlab: the teacher could not be stored in the cache ({path}: {error.strerror or error}); "
                      "it is returned but not cached (set $KDLAB_CACHE to a writable folder)", RuntimeWarning,
                      stacklevel=3)
        return False
    return True


def shipped_teacher_path(dataset_name, model_name, seed):
    """Path of the teacher file shipped with kdlab for (dataset, model, seed), or None (``SHIPPED_TEACHERS``)."""
    entry = SHIPPED_TEACHERS.get((dataset_name, model_name, seed))
    return Path(__file__).resolve().parent / "_data" / entry["file"] if entry else None


def _load_shipped_teacher(key, model, device):
    """Load kdlab's shipped weights into ``model`` when their training key equals ``key``; return the recorded
    history, or None (nothing shipped for this key). A file whose sha256 differs is reported and not used."""
    entry = SHIPPED_TEACHERS.get((key["dataset"], key["model"], key["seed"]))
    if entry is None:
        return None
    path = shipped_teacher_path(key["dataset"], key["model"], key["seed"])
    try:
        content = path.read_bytes()
    except OSError as error:
        warnings.warn(f"kdlab: the shipped teacher {path} cannot be read ({error}); training instead",
                      RuntimeWarning, stacklevel=3)
        return None
    if hashlib.sha256(content).hexdigest() != entry["sha256"]:
        warnings.warn(f"kdlab: the shipped teacher {path} does not match its sha256 (damaged install?); "
                      "training instead", RuntimeWarning, stacklevel=3)
        return None
    import io

    state = torch.load(io.BytesIO(content), map_location=device, weights_only=True)
    if state.get("format") != CACHE_FORMAT_VERSION or state.get("key") != json.dumps(key, sort_keys=True):
        return None  # another recipe, dataset or architecture: not the shipped teacher
    model.load_state_dict(state["state_dict"])
    frame = pd.DataFrame(_history_from_lists(state["history"]))
    frame.attrs["cached"] = True
    frame.attrs["cache_path"] = None
    frame.attrs["source"] = "shipped"
    return frame


def _check_checkpoint_arguments(checkpoint_dir, resume):
    """resume without checkpoint_dir is an error, and checkpoint_dir must be a writable folder: both checked
    before any training (and before a cache hit returns), so that no trained epoch is lost to a bad path."""
    check_bool(resume, "resume")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir (the folder holding the checkpoint), got None")
    if checkpoint_dir is not None:
        remove_stale_temporaries(check_output_folder(checkpoint_dir, "checkpoint_dir"))


def _history_to_lists(history):
    """DataFrame -> list of plain dicts (what torch.load(weights_only=True) accepts)."""
    return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()}
            for row in history.to_dict("records")]


def _history_from_lists(rows):
    return [dict(row) for row in rows]
