"""What every kdlab module shares: training settings, validators, devices, atomic files and fingerprints.

One place for each of these, so that ``train``, ``sweeps``, ``methods``, ``losses``, ``cli`` and ``studies``
follow one protocol and raise the same errors:

* settings: the recipes (``RECIPES``, ``RECIPE_METHODS``), ``resolve_recipe`` (recipe values overridden by
  explicit arguments, validated), ``make_optimizer`` / ``make_scheduler`` (the training protocol's SGD/AdamW
  and learning-rate schedule);
* devices: ``resolve_device`` ("auto", "cpu", "cuda[:N]", "mps"), ``autocast``, ``tune_cpu_allocator``,
  ``process_rank`` (torchrun), ``resolve_dataset`` / ``resolve_model`` (a name or an object);
* files: ``atomic_write`` / ``atomic_save`` / ``atomic_write_text`` (readers never see a half-written
  file), ``remove_stale_temporaries`` (what a killed write left), ``check_output_folder`` (checked before
  any work), ``dataset_fingerprint`` / ``module_fingerprint`` (cache and resume keys);
* validators: ``check_logits``, ``check_finite_logits``, ``check_model_logits``, ``check_targets``,
  ``check_temperature``, ``check_bounded_temperature`` (``MAX_TEMPERATURE``), ``check_positive``,
  ``check_non_negative``, ``check_probability``, ``check_bool``, ``check_seed``. Each raises a TypeError
  (wrong kind of value) or ValueError (wrong value) that names the argument and says what was expected.

This module imports no other kdlab module at import time (``resolve_dataset``/``resolve_model`` import
``kdlab.data``/``kdlab.models`` when called), so the math modules can use its validators. It is not part
of the API exported by ``kdlab``; its names are public so that kdlab's own modules may share them.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import os
import sys
import tempfile
from numbers import Real
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "RECIPES", "RECIPE_METHODS", "SETTING_NAMES", "AUGMENT_CHOICES", "resolve_recipe", "recipe_method_overrides",
    "make_optimizer", "make_scheduler", "eval_batch_size", "resolve_device", "autocast", "tune_cpu_allocator",
    "process_rank", "resolve_dataset", "resolve_model", "atomic_write", "atomic_save", "atomic_write_text",
    "dataset_fingerprint", "module_fingerprint", "state_fingerprint", "check_bool", "check_seed", "compute_dtype", "check_logits",
    "check_positive", "check_non_negative", "check_probability", "check_temperature", "check_targets",
    "value_checks", "skip_value_checks", "MAX_TEMPERATURE", "check_bounded_temperature", "check_finite_logits",
    "check_model_logits", "diverged_term", "check_output_folder", "remove_stale_temporaries",
]

# Training settings. ``recipe=None`` picks "cifar" for CIFAR datasets and "mnist10k" otherwise;
# any explicit argument (epochs=..., lr=...) overrides the recipe's value.
#
# "cifar" is the CRD / RepDistiller recipe used by the TTM, WTTM, DTKD and CTKD papers for both teachers
# and students: SGD(0.05, momentum 0.9, weight decay 5e-4), batch 64, 240 epochs, LR x0.1 at 150/180/210
# ("step" puts the milestones at 5/8, 3/4 and 7/8 of the epochs, which is exactly 150/180/210 for 240).
#
# "mnist10k" is the class-scale recipe, sized for a 2-core laptop. The "cnn" teacher, 10 epochs on the
# 8,000 training digits with random 2-pixel shifts, reaches 98.95 % test accuracy with seed 0 (98.45 and
# 98.6 with seeds 1 and 2). Distilling it into "mlp64" on a 1,000-image transfer set (10 epochs of
# SGD at lr 0.01; timings in benchmarks/README.md), KD (T = 4) gives
# 89.8 % against 87.6 % for the same student trained on the labels alone (3 seeds, +-0.6). The student
# learning rate is kept small because KD's T^2 factor scales the step: at lr 0.05, T = 8 loses accuracy.
#
# Teachers also have "augment": "dataset" applies the dataset's own augmentation (crop + flip for CIFAR,
# none for MNIST), "shift" moves each digit by up to 2 pixels (never mirrored: a mirrored 2 is not a 2),
# "none" trains on the images as they are. Students always follow the dataset (the training protocol).
RECIPES = {
    "mnist10k": {
        "teacher": {"epochs": 10, "optimizer": "sgd", "lr": 0.05, "batch_size": 64,
                    "weight_decay": 5e-4, "momentum": 0.9, "schedule": "cosine", "augment": "shift"},
        "student": {"epochs": 10, "optimizer": "sgd", "lr": 0.01, "batch_size": 64,
                    "weight_decay": 0.0, "momentum": 0.9, "schedule": None},
    },
    "cifar": {
        "teacher": {"epochs": 240, "optimizer": "sgd", "lr": 0.05, "batch_size": 64,
                    "weight_decay": 5e-4, "momentum": 0.9, "schedule": "step", "augment": "dataset"},
        "student": {"epochs": 240, "optimizer": "sgd", "lr": 0.05, "batch_size": 64,
                    "weight_decay": 5e-4, "momentum": 0.9, "schedule": "step"},
    },
}

# Method hyper-parameters a recipe changes from the papers' defaults (``kdlab.methods``) for its scale of
# training; an explicit argument (beta=...) still wins. "mnist10k": TTM's CIFAR weight beta = 100 makes SGD
# at lr 0.01 diverge on the MLP students: 10 % test accuracy at T = 1-8, 49 % at T = 16 (mlp64, 1,000-image
# transfer set, 10 epochs, 2 seeds). Over beta in {1, 3, 10, 30, 100} x T in {1, 2, 4, 8, 16}, beta = 3 is
# within 0.8 points of the best beta at every T (TTM 89.4-90.5 %); it is also WTTM's own default.
RECIPE_METHODS = {
    "mnist10k": {"ttm": {"beta": 3.0}},
    "cifar": {},
}

SETTING_NAMES = ("epochs", "optimizer", "lr", "batch_size", "weight_decay", "momentum", "schedule")
AUGMENT_CHOICES = ("dataset", "shift", "none")
# Inference chunk sizes. On the CPU, chunks of 256 images keep a conv net's activations in cache (about twice
# as fast as one chunk of 1,024 for the mnist teacher; see benchmarks/README.md). On a GPU, larger chunks fill
# the device.
_EVAL_BATCH = {"cpu": 256}
_EVAL_BATCH_DEFAULT = 1024


def eval_batch_size(device):
    return _EVAL_BATCH.get(torch.device(device).type, _EVAL_BATCH_DEFAULT)


def _recipe_name(recipe, dataset_name):
    """The named recipe behind ``recipe``: None -> by dataset; a dict builds on "mnist10k"."""
    if recipe is None:
        return "cifar" if str(dataset_name).lower().startswith("cifar") else "mnist10k"
    return recipe if isinstance(recipe, str) else "mnist10k"


def recipe_method_overrides(recipe, dataset_name, method_name, explicit):
    """The recipe's method hyper-parameters (``RECIPE_METHODS``) updated by the explicit ones."""
    defaults = RECIPE_METHODS.get(_recipe_name(recipe, dataset_name), {}).get(method_name, {})
    return {**defaults, **explicit}


def resolve_recipe(recipe, dataset_name, role, **explicit):
    """Effective settings: the recipe's values for ``role`` ("teacher"/"student"), overridden by every
    explicit argument that is not None, then validated. Returns a plain dict with the keys
    epochs, optimizer, lr, batch_size, weight_decay, momentum, schedule (and augment for teachers)."""
    if role not in ("teacher", "student"):
        raise ValueError(f"role must be 'teacher' or 'student', got {role!r}")
    known = SETTING_NAMES + (("augment",) if role == "teacher" else ())
    unknown = set(explicit) - set(known)
    if unknown:
        raise TypeError(f"unknown training settings {sorted(unknown)}; known: {list(known)}")
    if recipe is None:
        recipe = _recipe_name(recipe, dataset_name)
    if isinstance(recipe, str):
        if recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {sorted(RECIPES)} or a dict, got {recipe!r}")
        settings = dict(RECIPES[recipe][role])
    elif isinstance(recipe, dict):
        unknown = set(recipe) - set(known)
        if unknown:
            raise ValueError(f"recipe has unknown keys {sorted(unknown)}; known: {list(known)}")
        settings = dict(RECIPES["mnist10k"][role], **recipe)
    else:
        raise TypeError(f"recipe must be None, a recipe name {sorted(RECIPES)} or a dict, "
                        f"got {type(recipe).__name__}")
    settings.update({k: v for k, v in explicit.items() if v is not None})
    _validate_settings(settings)
    if role == "teacher" and settings["augment"] not in AUGMENT_CHOICES:
        raise ValueError(f"augment must be one of {list(AUGMENT_CHOICES)}, got {settings['augment']!r}")
    if isinstance(settings["schedule"], (list, tuple)):
        settings["schedule"] = [int(m) for m in settings["schedule"]]
    settings["lr"] = float(settings["lr"])
    settings["weight_decay"] = float(settings["weight_decay"])
    settings["momentum"] = float(settings["momentum"])
    return settings


def _validate_settings(settings):
    epochs = settings["epochs"]
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    batch_size = settings["batch_size"]
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if settings["optimizer"] not in ("sgd", "adamw"):
        raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {settings['optimizer']!r}")
    for name, low_ok in (("lr", False), ("weight_decay", True), ("momentum", True)):
        value = settings[name]
        if (not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)
                or value < 0 or (value == 0 and not low_ok)):
            expected = "a finite number >= 0" if low_ok else "a finite number > 0"
            raise ValueError(f"{name} must be {expected}, got {value!r}")
    if settings["momentum"] >= 1:
        raise ValueError(f"momentum must be in [0, 1), got {settings['momentum']!r}")
    schedule = settings["schedule"]
    if isinstance(schedule, (list, tuple)):
        if not all(isinstance(m, int) and not isinstance(m, bool) and m >= 1 for m in schedule) \
                or list(schedule) != sorted(schedule):
            raise ValueError(f"schedule milestones must be increasing positive integers, got {schedule!r}")
    elif schedule not in (None, "constant", "cosine", "step"):
        raise ValueError("schedule must be None, 'constant', 'cosine', 'step' or a list of milestone "
                         f"epochs, got {schedule!r}")


def make_optimizer(params, settings, fused=None):
    """SGD (momentum, no Nesterov) or AdamW (default betas/eps), as the training protocol says.

    fused: torch.optim's fused kernels (the same update, one pass over each tensor; ``kdlab.sweeps`` uses
    them for its stacked students); None = torch's default."""
    if settings["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=settings["lr"], momentum=settings["momentum"],
                               weight_decay=settings["weight_decay"], fused=fused)
    return torch.optim.AdamW(params, lr=settings["lr"], weight_decay=settings["weight_decay"], fused=fused)


def _milestones(schedule, epochs):
    """Milestone epochs of a step schedule: "step" = 5/8, 3/4, 7/8 of the epochs (150/180/210 of 240)."""
    if schedule == "step":
        return sorted({max(1, round(epochs * f)) for f in (5 / 8, 6 / 8, 7 / 8)})
    return list(schedule)


def make_scheduler(optimizer, settings):
    """None/"constant" -> None; "cosine" -> CosineAnnealingLR(T_max=epochs); "step"/milestones ->
    MultiStepLR(gamma=0.1). Stepped once per epoch, after the epoch."""
    schedule = settings["schedule"]
    if schedule in (None, "constant"):
        return None
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings["epochs"])
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, _milestones(schedule, settings["epochs"]),
                                                gamma=0.1)


# ----------------------------------------------------------------------------------------------------
# Devices and processes




_ALLOCATOR_TUNED = False


def tune_cpu_allocator(device):
    """Let glibc's malloc keep freed memory for reuse during CPU training (once per process, Linux only).

    A training step frees and reallocates the same few-megabyte tensors (gradients, activations, the teacher's
    feature maps) every step. With glibc's defaults, blocks above a dynamic threshold go back to the kernel
    when freed (munmap, or a heap trim) and come back as fresh zeroed pages, a page fault each. This raises
    the mmap threshold to 32 MB and the trim threshold to 256 MB (``mallopt``), the effect that the PyTorch
    CPU tuning guide gets by preloading jemalloc or tcmalloc (measured in benchmarks/README.md). Set the
    environment variable ``KDLAB_TUNE_MALLOC=0`` to leave the allocator alone.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED or device.type != "cpu" or os.environ.get("KDLAB_TUNE_MALLOC", "1") == "0":
        return
    _ALLOCATOR_TUNED = True
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024)
    libc.mallopt(m_trim_threshold, 256 * 1024 * 1024)


def resolve_device(device):
    """ "auto" -> CUDA when present, else CPU. Under torchrun on CUDA, the GPU of this local rank. "mps" (Apple
    silicon's GPU) is used when asked for (a clear error where it is missing), never picked by "auto"."""
    if isinstance(device, torch.device):
        resolved = device
    elif isinstance(device, str):
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            resolved = torch.device(device)
        except RuntimeError:
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}") from None
    else:
        raise TypeError(f"device must be a string or torch.device, got {type(device).__name__}")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} was asked for but CUDA is not available")
        if resolved.index is None:
            resolved = torch.device("cuda", int(os.environ.get("LOCAL_RANK", torch.cuda.current_device())))
    elif resolved.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            why = ("this torch was built without MPS" if mps is None or not mps.is_built()
                   else "MPS needs Apple silicon and macOS 12.3 or later")
            raise ValueError(f"device {device!r} was asked for but MPS is not available here ({why}); "
                             "use device='cpu' or 'auto'")
    elif resolved.type != "cpu":
        raise ValueError(f"device must be 'auto', 'cpu', 'mps' or a CUDA device, got {device!r}")
    return resolved


def autocast(device):
    """bf16 autocast on CUDA; plain float32 on the CPU (deterministic)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def process_rank():
    import torch.distributed as dist
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def resolve_dataset(dataset, device):
    """A dataset name -> ``kdlab.load_dataset(name)`` on ``device``; a ``Dataset`` -> moved to ``device``."""
    from kdlab.data import Dataset, load_dataset

    if isinstance(dataset, str):
        return load_dataset(dataset, device=str(device))
    if isinstance(dataset, Dataset):
        return dataset.to(device)
    raise TypeError(f"dataset must be a dataset name or a kdlab Dataset, got {type(dataset).__name__}")


def resolve_model(model, dataset, seed, argument):
    """A model name -> ``torch.manual_seed(seed)`` then ``create_model``; an nn.Module is used as is."""
    if isinstance(model, str):
        from kdlab.models import create_model


        torch.manual_seed(seed)
        return create_model(model, num_classes=dataset.num_classes, in_channels=dataset.input_shape[0])
    if isinstance(model, nn.Module):
        return model
    raise TypeError(f"{argument} must be a model name or an nn.Module, got {type(model).__name__}")


# ----------------------------------------------------------------------------------------------------
# Files: atomic writes and fingerprints

def atomic_write(path, write):
    """Call ``write(file)`` on a temporary binary file in the same folder, then os.replace it onto ``path``:
    readers never see a half-written file, and an interrupted write leaves the old file (or none). The file
    gets the mode a plain ``open(path, "w")`` would give (0666 minus the umask: 0644 under umask 022)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The writer's pid is in the temporary's name, so that a later run can tell a file left by a killed
    # writer (removed by ``remove_stale_temporaries``) from one being written right now.
    handle, tmp_name = tempfile.mkstemp(prefix=f"{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates the file 0600; give it the mode open() would: 0666 minus the umask (0644 under 022)
        if hasattr(os, "fchmod"):
            os.fchmod(handle, 0o666 & ~_umask())
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise


_STALE_AGE = 24 * 3600  # seconds: a temporary this old is stale whoever wrote it (another machine's pid)
_UNKNOWN_WRITER_AGE = 600  # seconds: a temporary without a pid in its name (an older kdlab) this old is stale


def remove_stale_temporaries(folder) -> list:
    """Delete the temporaries that ``atomic_write`` left in ``folder`` when its process was killed (kill -9,
    power loss): ``*.<pid>.<random>.tmp`` files whose process no longer runs or that are older than a day, and
    ``*.tmp`` files without a pid older than 10 minutes. Files of a live writer are kept. Returns the removed paths; a folder that does not exist is fine."""
    import time

    folder = Path(folder)
    removed = []
    try:
        candidates = list(folder.glob("*.tmp"))
    except OSError:
        return removed
    for path in candidates:
        parts = path.name.split(".")
        pid = int(parts[-3]) if len(parts) >= 4 and parts[-3].isdigit() else None
        try:
            age = time.time() - path.stat().st_mtime
            if pid is None:  # written by an older kdlab: stale once no write could still be going on
                stale = age > _UNKNOWN_WRITER_AGE
            else:
                stale = age > _STALE_AGE or (pid != os.getpid() and not _process_alive(pid))
            if stale:
                path.unlink()
                removed.append(path)
        except OSError:
            continue  # gone already, or not ours to delete
    return removed


def _process_alive(pid) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def check_output_folder(path, name: str) -> Path:
    """Make sure ``path`` is, or can become, a folder we can write into, before any work is done: a ValueError
    naming ``name`` (e.g. "--out", "checkpoint_dir") when it is an existing file, lies under a file, or is not
    writable (read-only, no permission). Creates nothing: the nearest existing folder is probed with a
    temporary file (which also catches what permission bits do not show, e.g. a read-only mount for root)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a folder path, got {type(path).__name__}")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{name} {str(path)!r} is an existing file, not a folder; give a folder")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{name} {str(path)!r} lies under {str(existing)!r}, which is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ValueError(f"{name} {str(path)!r} cannot be written to ({str(existing)!r}: {reason}); "
                         "give a writable folder") from None
    return path


def _umask():
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_save(obj, path):
    """torch.save, atomically (see atomic_write)."""
    atomic_write(path, lambda file: torch.save(obj, file))


def atomic_write_text(path, text):
    """Write UTF-8 text, atomically (see atomic_write)."""
    atomic_write(path, lambda file: file.write(text.encode("utf-8")))


def dataset_fingerprint(dataset):
    """A hash of what a teacher learns from: sizes, labels and a strided sample of the images, so that a
    transfer set or another subset does not reuse the full dataset's teacher."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr((dataset.name, dataset.num_classes, tuple(dataset.train_images.shape),
                        tuple(dataset.test_images.shape), bool(dataset.augment))).encode())
    digest.update(dataset.train_targets.detach().cpu().numpy().tobytes())
    step = max(1, dataset.train_images.shape[0] // 256)
    digest.update(dataset.train_images[::step].detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def module_fingerprint(module):
    """A hash of a model's weights and buffers (None for None): sweep run keys, resume checks."""
    if module is None:
        return None
    return state_fingerprint(module.state_dict())


def state_fingerprint(state_dict):
    """A hash of every name and tensor of a state_dict: the checksum stored beside cached weights, and what
    ``module_fingerprint`` computes. Any changed byte of any tensor changes it."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in state_dict.items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------------
# Validators: each raises TypeError/ValueError naming the argument and what was expected

def check_bool(value, name):
    """True or False (not 0, 1 or "yes")."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def check_seed(seed):
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float16 / bfloat16 are computed in float32; float32 and float64 as they are."""
    return torch.promote_types(dtype, torch.float32)


def check_logits(tensor, name: str, min_dim: int = 2, exact_dim: int | None = None,
                 num_classes: int | None = None) -> None:
    """A floating-point tensor of logits, classes last; ``exact_dim=2``: shape (B, K); ``num_classes``: K."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if not tensor.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (float16/bfloat16/float32/float64), got {tensor.dtype}")
    if num_classes is not None and (tensor.dim() != 2 or tensor.shape[1] != num_classes):
        raise ValueError(f"{name} must be logits of shape (batch, {num_classes}), got {tuple(tensor.shape)}")
    if exact_dim is not None and tensor.dim() != exact_dim:
        raise ValueError(f"{name} must have shape (B, K) (2-D: batch x classes), got shape {tuple(tensor.shape)}")
    if tensor.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dimension(s) (classes last), got shape {tuple(tensor.shape)}")
    if tensor.shape[-1] == 0:
        raise ValueError(f"{name} must have at least one class in its last dimension, got shape {tuple(tensor.shape)}")


def check_positive(value, name: str) -> float:
    """A finite number > 0, returned as a float."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a finite number > 0, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_non_negative(value, name):
    """A finite number >= 0 (an int stays an int, e.g. a warm-up in epochs)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a finite number >= 0, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value if isinstance(value, int) else float(value)


def check_probability(value, name):
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number in [0, 1], got {type(value).__name__}")
    if not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def check_temperature(temperature, logits: torch.Tensor, name: str = "temperature"):
    """A finite number > 0 (returned as float) or a positive finite float tensor that broadcasts against
    ``logits`` without enlarging it (returned as is)."""
    if not isinstance(temperature, torch.Tensor):
        return check_positive(temperature, name)
    if not temperature.is_floating_point():
        raise TypeError(f"{name} must be a number or a floating-point tensor, got {temperature.dtype}")
    # Broadcasts without enlarging the logits: no more dimensions, each trailing one 1 or equal. (A plain
    # comparison: torch.broadcast_shapes costs ~70 us per call, which adds up over a training run.)
    shape, target = temperature.shape, logits.shape
    if len(shape) > len(target) or any(a != 1 and a != b for a, b in zip(reversed(shape), reversed(target))):
        raise ValueError(
            f"{name} must broadcast against logits of shape {tuple(logits.shape)} without enlarging them "
            f"(e.g. a scalar or shape (B, 1)), got shape {tuple(temperature.shape)}"
        )
    detached = temperature.detach()
    if value_checks() and not bool((torch.isfinite(detached) & (detached > 0)).all()):
        raise ValueError(f"{name} must be finite and > 0 everywhere, got min {float(detached.min())!r}")
    return temperature


MAX_TEMPERATURE = 1e4
"""The largest temperature of a method and of every loss with a T^2 factor (KD, DTKD, LS-KD, NormKD, DKD):
beyond it T^2 * KL has lost its digits in float64 (KL ~ 1/T^2 falls below the rounding of log p), and T^2
overflows near 1e154. TTM and WTTM, without T^2, accept any finite temperature (they tend to their limit)."""


def check_bounded_temperature(temperature, name: str = "temperature"):
    """A temperature in (0, MAX_TEMPERATURE]: a number (returned as float) or a tensor already checked by
    ``check_temperature`` (its largest value is compared; skipped inside ``skip_value_checks``)."""
    if isinstance(temperature, torch.Tensor):
        largest = float(temperature.detach().max()) if value_checks() else 0.0
    else:
        largest = temperature = check_positive(temperature, name)
    if largest > MAX_TEMPERATURE:
        raise ValueError(f"{name} must be at most MAX_TEMPERATURE = {MAX_TEMPERATURE:g} (kdlab.common: beyond it "
                         f"T^2 * KL loses its digits in float64), got {largest!r}")
    return temperature


def check_finite_logits(student_logits, teacher_logits=None) -> None:
    """Logits must be finite: NaN or inf in ``student_logits``, NaN or +inf in ``teacher_logits``, or a teacher
    row of -inf only, is a ValueError naming the tensor. A teacher's -inf logit is allowed (a class of
    probability 0). Skipped inside ``skip_value_checks`` (the values were checked before batching)."""
    if not value_checks():
        return
    if not bool(torch.isfinite(student_logits).all()):
        raise ValueError(f"student_logits must be finite, got {_non_finite(student_logits)}")
    if teacher_logits is None or bool(torch.isfinite(teacher_logits).all()):
        return
    if bool((torch.isnan(teacher_logits) | torch.isposinf(teacher_logits)).any()):
        raise ValueError("teacher_logits must be finite or -inf (a class of probability 0), got "
                         f"{_non_finite(teacher_logits)}")
    if bool(torch.isneginf(teacher_logits).all(dim=-1).any()):
        raise ValueError("teacher_logits must have at least one finite logit per sample, got a row of -inf only")


def check_model_logits(logits, num_classes, who) -> None:
    """What a model returned: logits of shape (batch, num_classes), no NaN and no +inf (a teacher may give a
    class probability 0 with -inf; a student may not). ``who`` ("teacher", "student") names the model."""
    check_logits(logits, f"{who} output", num_classes=num_classes)
    bad = (torch.isnan(logits) | torch.isposinf(logits)) if who == "teacher" else ~torch.isfinite(logits)
    if bool(bad.any()):
        raise ValueError(f"{who} returned non-finite logits ({int(bad.sum())} NaN/inf values in "
                         f"{int(bad.any(dim=1).sum())} of {logits.shape[0]} images): check the {who} model")


def diverged_term(row, names):
    """The first of ``names`` whose value in the history row ``row`` is not finite, or None: how the training
    loops tell that a run diverged."""
    for name in names:
        value = row.get(name)
        if value is not None and not math.isfinite(value):
            return name
    return None


def _non_finite(logits):
    counts = {"NaN": int(torch.isnan(logits).sum()), "+inf": int(torch.isposinf(logits).sum()),
              "-inf": int(torch.isneginf(logits).sum())}
    return ", ".join(f"{count} {kind}" for kind, count in counts.items() if count) + f" in shape {tuple(logits.shape)}"


def check_targets(targets, logits):
    if not isinstance(targets, torch.Tensor):
        raise TypeError(f"targets must be a torch.Tensor of class indices, got {type(targets).__name__}")
    if targets.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"targets must be an integer tensor of class indices, got {targets.dtype}")
    batch, num_classes = logits.shape
    if targets.shape != (batch,):
        raise ValueError(f"targets must have shape (B,) = ({batch},), got {tuple(targets.shape)}")
    if batch and value_checks() and (int(targets.min()) < 0 or int(targets.max()) >= num_classes):
        raise ValueError(
            f"targets must be class indices in [0, {num_classes - 1}], got values in "
            f"[{int(targets.min())}, {int(targets.max())}]"
        )
    return targets.long()


_VALUE_CHECKS = [True]


def value_checks() -> bool:
    """Whether validators look at tensor *values* (targets in range, temperatures > 0); see skip_value_checks."""
    return _VALUE_CHECKS[-1]


@contextlib.contextmanager
def skip_value_checks():
    """Inside, validators check types and shapes but not tensor values.

    For ``torch.func.vmap`` (``kdlab.sweeps`` batches a method's terms over its students): a batched tensor
    cannot be turned into a Python bool, and the values were checked once before batching.
    """
    _VALUE_CHECKS.append(False)
    try:
        yield
    finally:
        _VALUE_CHECKS.pop()
