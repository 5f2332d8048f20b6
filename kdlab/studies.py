"""Frank & Davis (2026), "A Unified Revisit of Temperature in Classification-Based KD", as runnable studies.

The paper asks how the best temperature depends on the rest of the training set-up. kdlab reproduces its
*studies* (not its numbers, which we do not have) on any dataset, through :func:`kdlab.sweep`:

    study         paper figure   question
    "methods"     Fig. 1         KD methods x temperatures: does any method beat a shared fixed T with KL?
    "training"    Figs. 2-3      optimizer x batch size x temperature x training length (early vs final epoch)
    "entropy"     Fig. 4         the tempered teacher vs label smoothing of the same entropy
    "relational"  Fig. 5         teacher distributions with their relational information removed
    "origin"      (teacher)      a teacher trained from scratch vs one pretrained on other classes + fine-tuned
    "granularity" (dataset)      the same task with coarse classes (fine classes grouped) vs fine classes

This file holds three kinds of things:

1. Teacher-distribution ablations (math on distributions p of shape (B, K), with ``targets`` the labels):
   ``shuffle_non_target`` (keep p_y, permute the other K - 1 probabilities), ``flatten_non_target`` (keep
   p_y, spread 1 - p_y uniformly: label smoothing at the teacher's own confidence), ``truncate_top_k``, and
   :class:`AblatedTeacher`, a teacher *model* whose tempered distribution is the ablated one, so that
   ``kdlab.sweep`` and ``kdlab.distill`` can distil it like any teacher.
2. The studies as data (``STUDY_SETTINGS``: grids for mnist10k and for CIFAR-100) and :func:`run_study`,
   which sends a study's grid to :func:`kdlab.sweep` and returns its tidy DataFrame (plus a "study" column
   and the study's own columns, e.g. "teacher" or "ablation"). ``kdlab study NAME`` runs the same from the
   command line and writes ``<NAME>.csv``, which :func:`study_results` loads instead of running.
3. Summaries and verdicts: :func:`summarize` (mean and std over seeds) and ``conclude_<study>`` functions
   that compare the measured means against the paper's claim and say whether they agree, using the seed
   spread, so that no conclusion in the notebook is written by hand. The rule: two settings differ when
   their mean accuracies are further apart than the sum of their standard deviations over seeds.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
from numbers import Real
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from kdlab.temperature import entropy, smoothing_for_entropy, tempered_softmax

__all__ = [
    # teacher-distribution ablations and entropy matching
    "shuffle_non_target",
    "flatten_non_target",
    "truncate_top_k",
    "ABLATIONS",
    "AblatedTeacher",
    "sorted_distribution",
    "label_smoothing_distribution",
    "entropy_matched_smoothing",
    "DIGIT_GROUPS",
    "CIFAR100_SUPERCLASSES",
    "coarsen",
    # the studies and their runners
    "STUDY_NAMES",
    "STUDY_SETTINGS",
    "study_settings",
    "run_study",
    "study_results",
    # summaries and verdicts
    "Verdict",
    "summarize",
    "summary_table",
    "differ",
    "best_temperature",
    "conclude_methods",
    "conclude_optimizers",
    "conclude_training_length",
    "conclude_entropy",
    "conclude_relational",
    "conclude_best_temperature_shift",
]


# ----------------------------------------------------------------------------------------------------------
# 1. Teacher-distribution ablations

def shuffle_non_target(probs: torch.Tensor, targets: torch.Tensor, generator: torch.Generator | None = None):
    """Keep the target probability p_y and randomly permute the K - 1 non-target probabilities, per sample.

    The entropy and the target confidence are unchanged; only *which* wrong classes the teacher finds
    similar to the image (its "dark knowledge", the relational information) is destroyed.
    ``generator`` (a CPU ``torch.Generator``) makes the permutations reproducible.
    """
    _check_probs_and_targets(probs, targets)
    return _permute_non_target(probs, targets, generator)


def _permute_non_target(values, targets, generator):
    """Randomly permute the non-target entries of each row of ``values`` (B, K); the target entry stays."""
    batch, num_classes = values.shape
    # Non-target classes in their natural order (target first), and the same classes in a random order
    # (target first): scattering the second onto the first is a uniformly random bijection of the others.
    natural = torch.arange(num_classes, device=values.device, dtype=torch.float64).expand(batch, num_classes).clone()
    natural.scatter_(1, targets[:, None], -1.0)
    slots = natural.argsort(dim=1)
    keys = torch.rand(batch, num_classes, generator=generator, dtype=torch.float64).to(values.device)
    keys.scatter_(1, targets[:, None], -1.0)
    sources = keys.argsort(dim=1)
    return torch.empty_like(values).scatter_(1, slots, values.gather(1, sources))


def flatten_non_target(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Keep p_y and give every other class (1 - p_y) / (K - 1): label smoothing at the teacher's confidence.

    This removes all relational information but keeps, per sample, how sure the teacher is.
    """
    _check_probs_and_targets(probs, targets)
    num_classes = probs.shape[1]
    confidence = probs.gather(1, targets[:, None])
    flat = ((1 - confidence) / (num_classes - 1)).expand_as(probs).clone()
    return flat.scatter_(1, targets[:, None], confidence)


def truncate_top_k(probs: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest probabilities of each sample, set the rest to 0 and renormalise.

    k = 1 is the teacher's hard (arg-max) label; k = K changes nothing. Keeps the relational information
    about the k - 1 most similar classes only.
    """
    if not isinstance(probs, torch.Tensor) or probs.dim() != 2 or not probs.is_floating_point():
        raise ValueError(f"probs must be a floating-point tensor of shape (B, K), got {_describe(probs)}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= probs.shape[1]:
        raise ValueError(f"k must be an int in [1, K={probs.shape[1]}], got {k!r}")
    kept, indices = probs.topk(k, dim=1)
    truncated = torch.zeros_like(probs).scatter_(1, indices, kept)
    return truncated / truncated.sum(dim=1, keepdim=True)


ABLATIONS = ("shuffle", "flatten", "top_k")
"""The teacher ablations of :class:`AblatedTeacher`."""

_FAR_BELOW = 1e4  # logit gap that makes a class's tempered probability exactly 0 in float32 for T <= 1000


class AblatedTeacher(nn.Module):
    """A teacher model whose (tempered) distribution has its relational information removed.

    ``AblatedTeacher(teacher, ablation)`` is itself a model: images -> logits v', built from the teacher's
    logits v so that any method distilling it at temperature T sees the ablated distribution
    A(softmax(v / T)). The "target" class is the teacher's own arg-max (a model sees images, not labels;
    for a well-trained teacher it is the label on nearly every training image):

    - "shuffle": the non-target logits are permuted at random per image. Because softmax(v / T) permutes
      with v, this is ``shuffle_non_target`` at *every* temperature; the permutation is drawn with a
      generator seeded by ``seed``.
    - "top_k": the logits outside the k largest are pushed 10^4 below the maximum, so their tempered
      probability is exactly 0 and the rest is renormalised: ``truncate_top_k`` at every temperature.
    - "flatten": v' = T * log flatten_non_target(softmax(v / T)), whose softmax at T keeps the teacher's
      confidence p_T,y and spreads 1 - p_T,y evenly: label smoothing at the teacher's own confidence.
      This one depends on T, so it needs ``temperature`` (and is only meaningful at that temperature).

    Args:
        teacher: the trained teacher (an ``nn.Module`` mapping images to logits).
        ablation: one of ``ABLATIONS``.
        k: classes kept by "top_k".
        temperature: the distillation temperature, required by "flatten" (ignored by the others).
        seed: seeds the permutations of "shuffle".
    """

    def __init__(self, teacher: nn.Module, ablation: str, k: int = 3, temperature=None, seed: int = 0):
        super().__init__()
        if not isinstance(teacher, nn.Module):
            raise TypeError(f"teacher must be an nn.Module (a trained teacher), got {type(teacher).__name__}")
        if ablation not in ABLATIONS:
            raise ValueError(f"ablation must be one of {ABLATIONS}, got {ablation!r}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}")
        if ablation == "flatten":
            if isinstance(temperature, bool) or not isinstance(temperature, Real) or not (
                    math.isfinite(temperature) and temperature > 0):
                raise ValueError(f"temperature must be a finite number > 0 for ablation 'flatten', got {temperature!r}")
            temperature = float(temperature)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        self.teacher = teacher
        self.ablation = ablation
        self.k = k
        self.temperature = temperature
        self.seed = seed
        self._generator = torch.Generator().manual_seed(seed)
        # The ablation's settings, stored as a buffer so that they belong to the model's state: two ablated
        # teachers differ in their state_dict (kdlab.sweep fingerprints teachers by it to reuse saved runs).
        code = [ABLATIONS.index(ablation), k, temperature or 0.0, seed]
        self.register_buffer("ablation_settings", torch.tensor(code, dtype=torch.float64), persistent=True)

    def extra_repr(self) -> str:
        detail = {"shuffle": f"seed={self.seed}", "top_k": f"k={self.k}", "flatten": f"temperature={self.temperature}"}
        return f"ablation={self.ablation!r}, {detail[self.ablation]}"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.ablate_logits(self.teacher(images))

    def ablate_logits(self, teacher_logits: torch.Tensor) -> torch.Tensor:
        """The ablated logits v' for teacher logits v of shape (B, K)."""
        logits = teacher_logits.float()
        targets = logits.argmax(dim=1)
        if self.ablation == "shuffle":
            return _permute_non_target(logits, targets, self._generator).to(teacher_logits.dtype)
        if self.ablation == "top_k":
            k = min(self.k, logits.shape[1])
            kept = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, logits.topk(k, dim=1).indices, True)
            floor = logits.amax(dim=1, keepdim=True) - _FAR_BELOW
            return torch.where(kept, logits, floor)
        flat = flatten_non_target(tempered_softmax(logits.double(), self.temperature), targets)
        return (self.temperature * flat.clamp_min(1e-300).log()).to(teacher_logits.dtype)


# ----------------------------------------------------------------------------------------------------------
# Study 4: the tempered teacher beside label smoothing of equal entropy

def sorted_distribution(probs: torch.Tensor, top: int | None = None) -> torch.Tensor:
    """Average over samples of each sample's probabilities sorted in decreasing order, first ``top`` of them.

    Frank & Davis's Fig. 4: "average sorted temperature-scaled softmax distributions ... (top-20 classes)".
    """
    if not isinstance(probs, torch.Tensor) or probs.dim() != 2 or not probs.is_floating_point():
        raise ValueError(f"probs must be a floating-point tensor of shape (B, K), got {_describe(probs)}")
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top < 1):
        raise ValueError(f"top must be None or an int >= 1, got {top!r}")
    ranked = probs.sort(dim=1, descending=True).values.mean(dim=0)
    return ranked if top is None else ranked[:top]


def label_smoothing_distribution(num_classes: int, smoothing) -> torch.Tensor:
    """The label-smoothing target sorted in decreasing order: [1 - eps + eps/K, eps/K, ..., eps/K]."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if isinstance(smoothing, bool) or not isinstance(smoothing, Real) or not 0 <= smoothing <= 1:
        raise ValueError(f"smoothing must be a number in [0, 1], got {smoothing!r}")
    target = torch.full((num_classes,), smoothing / num_classes, dtype=torch.float64)
    target[0] += 1 - smoothing
    return target


def entropy_matched_smoothing(teacher_logits: torch.Tensor, temperatures) -> pd.DataFrame:
    """For each temperature T: the teacher's mean entropy H(softmax(v / T)) and the label-smoothing epsilon
    whose target has that entropy (``kdlab.smoothing_for_entropy``).

    Returns a DataFrame with columns "temperature", "teacher_entropy" (nats, mean over samples),
    "teacher_confidence" (mean of the largest tempered probability), "smoothing" (epsilon) and
    "smoothing_confidence" (1 - eps + eps / K, the smoothed target's largest probability).
    """
    if not isinstance(teacher_logits, torch.Tensor) or teacher_logits.dim() != 2:
        raise ValueError(f"teacher_logits must be a tensor of shape (B, K), got {_describe(teacher_logits)}")
    temperatures = _as_temperature_list(temperatures)
    num_classes = teacher_logits.shape[1]
    rows = []
    for temperature in temperatures:
        probs = tempered_softmax(teacher_logits.detach().double(), temperature)
        mean_entropy = min(float(entropy(probs).mean()), math.log(num_classes))
        eps = smoothing_for_entropy(num_classes, mean_entropy)
        rows.append({
            "temperature": temperature,
            "teacher_entropy": mean_entropy,
            "teacher_confidence": float(probs.amax(dim=1).mean()),
            "smoothing": eps,
            "smoothing_confidence": 1 - eps + eps / num_classes,
        })
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------------------
# Study 6: coarse-grained versions of a task

DIGIT_GROUPS = ((4, 9), (3, 5), (1, 7), (0, 6), (2, 8))
"""Five groups of two digits that are often confused with each other (MNIST's usual confusions), used as
coarse classes for mnist10k, like CIFAR-100's superclasses group similar fine classes."""

CIFAR100_SUPERCLASSES = {
    "aquatic_mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "fish": ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    "flowers": ("orchid", "poppy", "rose", "sunflower", "tulip"),
    "food_containers": ("bottle", "bowl", "can", "cup", "plate"),
    "fruit_and_vegetables": ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    "household_electrical_devices": ("clock", "keyboard", "lamp", "telephone", "television"),
    "household_furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "large_carnivores": ("bear", "leopard", "lion", "tiger", "wolf"),
    "large_man-made_outdoor_things": ("bridge", "castle", "house", "road", "skyscraper"),
    "large_natural_outdoor_scenes": ("cloud", "forest", "mountain", "plain", "sea"),
    "large_omnivores_and_herbivores": ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),
    "medium_mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "non-insect_invertebrates": ("crab", "lobster", "snail", "spider", "worm"),
    "people": ("baby", "boy", "girl", "man", "woman"),
    "reptiles": ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    "small_mammals": ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    "trees": ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    "vehicles_1": ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    "vehicles_2": ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
}
"""CIFAR-100's 20 superclasses (its "coarse labels"), each grouping 5 of the 100 fine classes by name."""


def coarsen(dataset, groups=None):
    """The same images with coarse labels: fine class c gets the index of the group that contains it.

    ``groups`` is a sequence of groups of fine class indices (or class names), covering every class exactly
    once; by default ``DIGIT_GROUPS`` for 10-class datasets and ``CIFAR100_SUPERCLASSES`` for 100 classes.
    Returns a new Dataset (images shared, not copied) with ``num_classes = len(groups)``.
    """
    if groups is None:
        if dataset.num_classes == 10:
            groups = DIGIT_GROUPS
        elif dataset.num_classes == 100:
            groups = CIFAR100_SUPERCLASSES
        else:
            raise ValueError(f"groups must be given for a dataset with {dataset.num_classes} classes")
    names = list(groups) if isinstance(groups, dict) else ["+".join(str(c) for c in group) for group in groups]
    members = list(groups.values()) if isinstance(groups, dict) else list(groups)
    lookup = torch.full((dataset.num_classes,), -1, dtype=torch.long)
    for coarse, group in enumerate(members):
        for member in group:
            if isinstance(member, str):
                if member not in dataset.classes:
                    raise ValueError(f"groups names the class {member!r}, which is not in dataset.classes")
                member = dataset.classes.index(member)
            if isinstance(member, bool) or not isinstance(member, int) or not 0 <= member < dataset.num_classes:
                raise ValueError(f"groups must hold class indices in [0, {dataset.num_classes}) or names, got {member!r}")
            if lookup[member] >= 0:
                raise ValueError(f"groups must put each class in exactly one group; class {member} appears twice")
            lookup[member] = coarse
    if bool((lookup < 0).any()):
        raise ValueError(f"groups must cover every class; missing {(lookup < 0).nonzero().flatten().tolist()}")
    lookup = lookup.to(dataset.train_targets.device)
    return dataclasses.replace(
        dataset,
        name=f"{dataset.name}-coarse{len(members)}",
        num_classes=len(members),
        classes=names,
        train_targets=lookup[dataset.train_targets],
        test_targets=lookup.to(dataset.test_targets.device)[dataset.test_targets],
    )


# ----------------------------------------------------------------------------------------------------------
# 2. The studies as data, and their runners

STUDY_NAMES = ("methods", "training", "entropy", "relational", "origin", "granularity")

STUDY_SETTINGS = {
    # Sized so that notebook 05 runs every study in about two minutes on 2 CPU cores: a 1,000-image transfer
    # set, mlp64 students, 10 epochs (20 for the training-length study), 3 seeds.
    "mnist10k": {
        "student": "mlp64",
        "transfer_size": 1000,
        "temperatures": (1.0, 2.0, 4.0, 8.0, 16.0),
        "seeds": (0, 1, 2),
        "epochs": 10,
        "methods": ("kd", "ttm", "wttm", "dtkd", "lskd", "dkd"),
        # TTM's CIFAR weight beta = 100 makes SGD diverge at our learning rate (an MLP has no BatchNorm to
        # absorb it): beta = 3, WTTM's default, as for WTTM.
        "method_overrides": {"ttm": {"beta": 3.0}},
        # SGD with the student recipe's settings (kdlab.train.RECIPES); AdamW at its usual 1e-3.
        "optimizers": {"sgd": {}, "adamw": {"lr": 0.001}},
        "batch_sizes": (32, 128),
        "training_epochs": 20,
        "early_epoch": 3,
        "top_k": 3,
        # Study 6 trains its own teachers, cheaply: same architecture, few epochs.
        "teacher_model": "cnn",
        "teacher_epochs": 2,
        "pretrain_epochs": 1,
        "finetune_epochs": 1,
    },
    # The papers' CIFAR-100 setting (RepDistiller recipe: SGD 0.05, batch 64, 240 epochs, step schedule), for
    # a GPU: ``kdlab study NAME --dataset cifar100 --teacher resnet32x4 --student resnet8x4``.
    "cifar100": {
        "student": "resnet8x4",
        "transfer_size": None,
        "temperatures": (1.0, 2.0, 4.0, 8.0, 16.0, 32.0),
        "seeds": (0, 1, 2),
        "epochs": 240,
        "methods": ("kd", "ttm", "wttm", "dtkd", "lskd", "dkd"),
        "method_overrides": {},
        "optimizers": {"sgd": {"lr": 0.05}, "adamw": {"lr": 0.001, "weight_decay": 0.05}},
        "batch_sizes": (64, 256),
        "training_epochs": 240,
        "early_epoch": 60,
        "top_k": 5,
        "teacher_model": "resnet32x4",
        "teacher_epochs": 240,
        "pretrain_epochs": 120,
        "finetune_epochs": 120,
    },
}
"""Grids of every study, per scale. ``run_study(..., **overrides)`` replaces any of these values."""

# DKD and DTKD warm their distillation terms up over 20 of 240 epochs in their papers; kept proportional.
_WARMUP_FRACTION = 20 / 240


def study_settings(scale: str = "mnist10k", **overrides) -> dict:
    """The settings of ``STUDY_SETTINGS[scale]`` with ``overrides`` applied (unknown keys -> ValueError)."""
    if scale not in STUDY_SETTINGS:
        raise ValueError(f"scale must be one of {sorted(STUDY_SETTINGS)}, got {scale!r}")
    settings = dict(STUDY_SETTINGS[scale])
    unknown = sorted(set(overrides) - set(settings))
    if unknown:
        raise ValueError(f"unknown study setting(s) {unknown}; known: {sorted(settings)}")
    settings.update(overrides)
    settings["temperatures"] = tuple(_as_temperature_list(settings["temperatures"]))
    seeds = settings["seeds"]
    if isinstance(seeds, int) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds) \
            or len(seeds) == 0:
        raise ValueError(f"seeds must be a non-empty list of ints >= 0, got {seeds!r}")
    settings["seeds"] = tuple(seeds)
    if not 1 <= settings["early_epoch"] < settings["training_epochs"]:
        raise ValueError(f"early_epoch must lie in [1, training_epochs={settings['training_epochs']}), "
                         f"got {settings['early_epoch']!r}")
    return settings


def run_study(name: str, teacher, dataset="mnist10k", scale: str | None = None, out=None, progress: bool = True,
              device="auto", **overrides) -> pd.DataFrame:
    """Run one of Frank & Davis's studies through :func:`kdlab.sweep`; return the tidy results.

    Args:
        name: one of ``STUDY_NAMES``.
        teacher: the trained teacher (``nn.Module``) or a model name (trained or loaded from the cache by
            ``kdlab.train_teacher``). "origin" and "granularity" train their own teachers as well.
        dataset: a name or a full ``Dataset``; the students learn from ``dataset.transfer_set(transfer_size)``.
        scale: the key of ``STUDY_SETTINGS`` ("mnist10k" or "cifar100"); default from the dataset's name.
        out: a folder for ``sweep``'s resumable files (runs already there are loaded, not trained again, so
            studies that share runs, e.g. KD at the same temperatures, train them once).
        **overrides: any key of ``STUDY_SETTINGS[scale]``, e.g. ``seeds=(0, 1)``, ``epochs=2``.
    Returns the sweep rows of every configuration and epoch, with a "study" column and the study's own
    columns: "teacher" ("origin"), "task" ("granularity"), "target" ("entropy"), "ablation" ("relational"),
    plus "teacher_acc" where the study trains teachers.
    """
    from kdlab.data import Dataset, load_dataset
    from kdlab.train import _resolve_device, train_teacher

    if name not in STUDY_NAMES:
        raise ValueError(f"name must be one of {STUDY_NAMES}, got {name!r}")
    device = _resolve_device(device)
    if isinstance(dataset, str):
        dataset = load_dataset(dataset, device=device)
    elif not isinstance(dataset, Dataset):
        raise TypeError(f"dataset must be a dataset name or a kdlab Dataset, got {type(dataset).__name__}")
    if scale is None:
        scale = "cifar100" if dataset.name.startswith("cifar") else "mnist10k"
    settings = study_settings(scale, **overrides)
    if isinstance(teacher, str):
        teacher, _ = train_teacher(dataset, model=teacher, device=device, progress=progress)
    elif not isinstance(teacher, nn.Module):
        raise TypeError(f"teacher must be an nn.Module or a model name, got {type(teacher).__name__}")
    transfer = dataset.transfer_set(settings["transfer_size"]) if settings["transfer_size"] else dataset
    context = _StudyContext(teacher, dataset, transfer, settings, out, progress, device)
    frame = _RUNNERS[name](context)
    frame.insert(0, "study", name)
    return frame.reset_index(drop=True)


def study_results(name: str, run, directory=None):
    """The results of study ``name``: read from ``<directory>/<name>.csv`` when that file exists, else ``run()``.

    ``directory`` defaults to ``$KDLAB_STUDY_DIR`` or ``runs``; ``kdlab study NAME --out DIR`` writes such
    files (e.g. the CIFAR-100 studies run on a GPU), so a notebook shows them instead of its own small runs.
    Returns ``(frame, source)`` where source is the file path or "computed here".
    """
    if name not in STUDY_NAMES:
        raise ValueError(f"name must be one of {STUDY_NAMES}, got {name!r}")
    if not callable(run):
        raise TypeError(f"run must be a callable returning the study's DataFrame, got {type(run).__name__}")
    folder = Path(directory if directory is not None else os.environ.get("KDLAB_STUDY_DIR", "runs"))
    path = folder / f"{name}.csv"
    if path.is_file():
        return pd.read_csv(path), str(path)
    return run(), "computed here"


@dataclasses.dataclass
class _StudyContext:
    teacher: nn.Module
    dataset: object
    transfer: object
    settings: dict
    out: object
    progress: bool
    device: object
    configs_so_far: int = 0

    def sweep(self, teacher, transfer=None, grid=None, **common):
        from kdlab.sweep import sweep

        grid = {"temperature": list(self.settings["temperatures"]), "seed": list(self.settings["seeds"]),
                **(grid or {})}
        common.setdefault("epochs", self.settings["epochs"])
        frame = sweep(teacher, self.transfer if transfer is None else transfer, student=self.settings["student"],
                      grid=grid, out=self.out, progress=self.progress, device=self.device, **common)
        # Number the configurations across all the sweeps of a study (each sweep counts from 0).
        frame["config"] += self.configs_so_far
        self.configs_so_far = int(frame["config"].max()) + 1
        return frame

    def teacher_model(self, dataset, epochs, model=None, **kwargs):
        """A cheap teacher of ``settings['teacher_model']`` trained on ``dataset``, and its test accuracy."""
        from kdlab.train import evaluate, train_teacher

        teacher, _ = train_teacher(dataset, model=self.settings["teacher_model"] if model is None else model,
                                   epochs=epochs, device=self.device, progress=self.progress, **kwargs)
        return teacher, evaluate(teacher, dataset)


def _run_methods(c: _StudyContext) -> pd.DataFrame:
    """Study 1 (Fig. 1): every method at every temperature, with its paper's defaults except
    ``method_overrides``; DKD's and DTKD's warm-up scaled to the run's length. Methods that share their
    overrides are trained in one sweep."""
    warmup = max(1, round(_WARMUP_FRACTION * c.settings["epochs"]))
    overrides = c.settings["method_overrides"]
    if not isinstance(overrides, dict):
        raise TypeError(f"method_overrides must be a dict method -> {{hyper-parameter: value}}, got {overrides!r}")
    calls = {}
    for method in c.settings["methods"]:
        extra = dict(overrides.get(method, {}))
        if method in ("dtkd", "dkd"):
            extra.setdefault("warmup", warmup)
        calls.setdefault(tuple(sorted(extra.items())), []).append(method)
    return pd.concat([c.sweep(c.teacher, grid={"method": methods}, **dict(extra)) for extra, methods in calls.items()],
                     ignore_index=True)


def _run_training(c: _StudyContext) -> pd.DataFrame:
    """Studies 2-3 (Figs. 2-3): optimizer x batch size x temperature, every epoch of a long run."""
    frames = []
    for optimizer, extra in c.settings["optimizers"].items():
        frames.append(c.sweep(c.teacher, grid={"batch_size": list(c.settings["batch_sizes"])},
                              epochs=c.settings["training_epochs"], optimizer=optimizer, **extra))
    return pd.concat(frames, ignore_index=True).assign(early_epoch=c.settings["early_epoch"])


def _run_entropy(c: _StudyContext) -> pd.DataFrame:
    """Study 4 (Fig. 4): KD at T beside label smoothing whose target has the teacher's mean entropy at T."""
    from kdlab.train import predict

    table = entropy_matched_smoothing(predict(c.teacher, c.transfer.train_images).cpu(), c.settings["temperatures"])
    teacher = c.sweep(c.teacher).assign(target="teacher")
    smoothing = c.sweep(None, grid={"temperature": [1.0], "smoothing": table["smoothing"].tolist()},
                        method="label_smoothing")
    # label_smoothing has no temperature: label each run with the temperature its epsilon was matched to.
    by_smoothing = dict(zip(table["smoothing"].round(12), table["temperature"]))
    smoothing["temperature"] = smoothing["smoothing"].round(12).map(by_smoothing)
    frame = pd.concat([teacher, smoothing.assign(target="label_smoothing")], ignore_index=True)
    return frame.drop(columns="smoothing").merge(table, on="temperature", how="left")


def _run_relational(c: _StudyContext) -> pd.DataFrame:
    """Study 5 (Fig. 5): the full teacher vs teachers with shuffled, flattened or truncated distributions."""
    k = c.settings["top_k"]
    frames = [c.sweep(c.teacher).assign(ablation="none"),
              c.sweep(AblatedTeacher(c.teacher, "shuffle")).assign(ablation="shuffle"),
              c.sweep(AblatedTeacher(c.teacher, "top_k", k=k)).assign(ablation=f"top{k}")]
    for temperature in c.settings["temperatures"]:  # flattening depends on T: one teacher per temperature
        flat = AblatedTeacher(c.teacher, "flatten", temperature=temperature)
        frames.append(c.sweep(flat, grid={"temperature": [temperature]}).assign(ablation="flatten"))
    return pd.concat(frames, ignore_index=True)


def _pretrained_and_finetuned(c: _StudyContext):
    """Teacher origin: pretrained on the first half of the classes, then fine-tuned on all of them."""
    from kdlab.train import evaluate, train_teacher

    num_classes = c.dataset.num_classes
    other_data = c.dataset.transfer_set(exclude_classes=range(num_classes // 2, num_classes))
    pretrained, _ = train_teacher(other_data, model=c.settings["teacher_model"], epochs=c.settings["pretrain_epochs"],
                                  device=c.device, progress=c.progress)
    finetuned = copy.deepcopy(pretrained)
    finetuned, _ = train_teacher(c.dataset, model=finetuned, epochs=c.settings["finetune_epochs"], cache=False,
                                 device=c.device, progress=c.progress)
    return finetuned, evaluate(finetuned, c.dataset)


def _run_origin(c: _StudyContext) -> pd.DataFrame:
    """Study 6a: a teacher trained from scratch vs one pretrained on other classes and fine-tuned."""
    scratch, scratch_acc = c.teacher_model(c.dataset, c.settings["teacher_epochs"])
    finetuned, finetuned_acc = _pretrained_and_finetuned(c)
    return pd.concat([c.sweep(scratch).assign(teacher="scratch", teacher_acc=scratch_acc),
                      c.sweep(finetuned).assign(teacher="pretrained+finetuned", teacher_acc=finetuned_acc)],
                     ignore_index=True)


def _run_granularity(c: _StudyContext) -> pd.DataFrame:
    """Study 6b: the fine task vs a coarse one (fine classes grouped), each with its own teacher."""
    fine, fine_acc = c.teacher_model(c.dataset, c.settings["teacher_epochs"])
    coarse_data = coarsen(c.dataset)
    coarse, coarse_acc = c.teacher_model(coarse_data, c.settings["teacher_epochs"])
    coarse_transfer = coarsen(c.transfer)
    return pd.concat([
        c.sweep(fine).assign(task=f"fine ({c.dataset.num_classes} classes)", teacher_acc=fine_acc),
        c.sweep(coarse, transfer=coarse_transfer).assign(task=f"coarse ({coarse_data.num_classes} groups)",
                                                         teacher_acc=coarse_acc),
    ], ignore_index=True)


_RUNNERS = {
    "methods": _run_methods,
    "training": _run_training,
    "entropy": _run_entropy,
    "relational": _run_relational,
    "origin": _run_origin,
    "granularity": _run_granularity,
}


# ----------------------------------------------------------------------------------------------------------
# 3. Summaries and verdicts: every conclusion is computed from the means and the spread over seeds.
#
# Rule used throughout (stated in the notebook): two settings differ when their mean accuracies are further
# apart than the sum of their standard deviations over seeds, i.e. when the +-1 std error bars do not overlap.

@dataclasses.dataclass(frozen=True)
class Verdict:
    """What a study's numbers say about the paper's claim.

    ``agrees`` is True (the numbers support the claim), False (they contradict it) or None (inconclusive:
    the differences are within the seed spread); ``text`` explains it with the numbers.
    """

    claim: str
    agrees: bool | None
    text: str

    def __str__(self) -> str:
        label = {True: "AGREES", False: "DOES NOT AGREE", None: "INCONCLUSIVE"}[self.agrees]
        return f"Paper's claim: {self.claim}\nOur numbers: {self.text}\nVerdict: {label} (with our set-up)."


def summarize(results: pd.DataFrame, by, metric: str = "test_acc", epoch="last") -> pd.DataFrame:
    """Mean, standard deviation (over seeds; ddof=1, 0 for one seed) and count of ``metric`` per group.

    Args:
        results: a tidy frame with one row per (configuration, seed, epoch), as ``kdlab.sweep`` returns.
        by: the column(s) that define a configuration, e.g. ["method", "temperature"].
        epoch: "last" (each configuration's final epoch), an int (that epoch) or None (rows as they are).
    Returns columns ``by + ["mean", "std", "n"]``, sorted by ``by``.
    """
    if not isinstance(results, pd.DataFrame):
        raise TypeError(f"results must be a pandas DataFrame, got {type(results).__name__}")
    by = [by] if isinstance(by, str) else list(by)
    missing = [c for c in by + [metric] if c not in results.columns]
    if missing:
        raise ValueError(f"results must have the columns {missing} (it has {list(results.columns)})")
    frame = results
    if epoch is not None:
        if "epoch" not in frame.columns:
            raise ValueError("results must have an 'epoch' column when epoch is not None")
        if epoch == "last":
            last = frame.groupby(by, dropna=False)["epoch"].transform("max")
            frame = frame[frame["epoch"] == last]
        elif isinstance(epoch, int) and not isinstance(epoch, bool):
            frame = frame[frame["epoch"] == epoch]
            if frame.empty:
                raise ValueError(f"epoch {epoch} is not in results (epochs: {sorted(results['epoch'].unique())})")
        else:
            raise ValueError(f"epoch must be 'last', an int or None, got {epoch!r}")
    grouped = frame.groupby(by, dropna=False)[metric]
    summary = grouped.agg(mean="mean", std=lambda x: float(x.std(ddof=1)) if len(x) > 1 else 0.0, n="count")
    return summary.reset_index().sort_values(by, kind="stable").reset_index(drop=True)


def summary_table(results: pd.DataFrame, index, columns: str = "temperature", epoch="last") -> pd.DataFrame:
    """The mean ± std table of ``summarize`` as text, ``index`` down and ``columns`` across (for printing)."""
    index = [index] if isinstance(index, str) else list(index)
    summary = summarize(results, index + [columns], epoch=epoch)
    summary["cell"] = [f"{m:.1f} ± {s:.1f}" for m, s in zip(summary["mean"], summary["std"])]
    table = summary.pivot(index=index, columns=columns, values="cell")
    table.columns = [f"{columns} {c:g}" if isinstance(c, float) else f"{columns} {c}" for c in table.columns]
    return table


def differ(mean_a, std_a, mean_b, std_b) -> int:
    """+1 if a is clearly above b, -1 if clearly below, 0 if the +-1 std error bars overlap."""
    gap = float(mean_a) - float(mean_b)
    noise = float(std_a) + float(std_b)
    return 0 if abs(gap) <= noise else (1 if gap > 0 else -1)


def best_temperature(summary: pd.DataFrame) -> tuple[float, list[float]]:
    """(the temperature with the highest mean, every temperature whose error bar overlaps the best one's).

    ``summary`` has one row per temperature with "temperature", "mean", "std" (see :func:`summarize`).
    The second value is the set of temperatures we cannot tell apart from the best with our seeds.
    """
    if summary.empty:
        raise ValueError("summary must have at least one row")
    best = summary.loc[summary["mean"].idxmax()]
    tied = [float(row.temperature) for row in summary.itertuples()
            if differ(best["mean"], best["std"], row.mean, row.std) == 0]
    return float(best["temperature"]), sorted(tied)


def _fmt(row) -> str:
    return f"{row['mean']:.1f} ± {row['std']:.1f}"


def _temps(values) -> str:
    return "{" + ", ".join(f"{t:g}" for t in values) + "}" if values else "{}"


def conclude_methods(results: pd.DataFrame, reference: str = "kd") -> Verdict:
    """Study 1. Claim: a shared fixed temperature with KL (``reference``) is the most robust to the choice of
    temperature and no method consistently beats it.

    "Consistently beats" = clearly above the reference at every temperature. "Most robust" = the reference's
    worst accuracy over the temperatures is not clearly below any other method's worst accuracy.
    """
    claim = "a shared fixed temperature with KL is the most robust, and no method consistently beats it"
    summary = summarize(results, ["method", "temperature"])
    if reference not in set(summary["method"]):
        raise ValueError(f"results must contain the reference method {reference!r}")
    ref = summary[summary["method"] == reference].set_index("temperature")
    beaters, worst = [], {}
    for method, rows in summary.groupby("method", sort=False):
        rows = rows.set_index("temperature")
        worst[method] = rows.loc[rows["mean"].idxmin()]
        if method == reference:
            continue
        common = rows.index.intersection(ref.index)
        wins = [differ(rows.at[t, "mean"], rows.at[t, "std"], ref.at[t, "mean"], ref.at[t, "std"]) for t in common]
        if len(common) and all(w == 1 for w in wins):
            beaters.append(method)
    ref_worst = worst[reference]
    more_robust = [m for m, row in worst.items()
                   if m != reference and differ(row["mean"], row["std"], ref_worst["mean"], ref_worst["std"]) == 1]
    best_other = max((m for m in worst if m != reference), key=lambda m: worst[m]["mean"], default=None)
    text = (f"{reference}'s worst accuracy over T is {_fmt(ref_worst)} %"
            + (f"; the best worst-case among the others is {best_other}'s {_fmt(worst[best_other])} %" if best_other else "")
            + ". " + (f"Clearly more robust than {reference}: {', '.join(more_robust)}. " if more_robust
                      else f"No method is clearly more robust than {reference}. ")
            + (f"Clearly better than {reference} at every temperature: {', '.join(beaters)}." if beaters
               else f"No method is clearly better than {reference} at every temperature."))
    return Verdict(claim, not beaters and not more_robust, text)


def conclude_optimizers(results: pd.DataFrame) -> Verdict:
    """Study 2. Claim: AdamW is more robust to the temperature than SGD.

    Robustness = the range (best minus worst mean accuracy over temperatures) at the final epoch, for each
    batch size. Agrees when AdamW's range is smaller for every batch size and clearly so (by more than the
    largest seed std involved) for at least one; disagrees in the mirror case (SGD's range smaller for every
    batch size, clearly so for one); inconclusive otherwise.
    """
    claim = "AdamW is more robust to the temperature than SGD"
    summary = summarize(results, ["optimizer", "batch_size", "temperature"])
    parts, smaller, clearly = [], [], []
    for batch_size, rows in summary.groupby("batch_size"):
        ranges, noise = {}, float(rows["std"].max())
        for optimizer in ("sgd", "adamw"):
            means = rows[rows["optimizer"] == optimizer]["mean"]
            if means.empty:
                raise ValueError(f"results must have optimizer {optimizer!r} for batch size {batch_size}")
            ranges[optimizer] = float(means.max() - means.min())
        smaller.append(ranges["adamw"] < ranges["sgd"])
        clearly.append(abs(ranges["sgd"] - ranges["adamw"]) > noise)
        parts.append(f"batch {batch_size}: range over T {ranges['adamw']:.1f} points with AdamW vs "
                     f"{ranges['sgd']:.1f} with SGD (largest seed std {noise:.1f})")
    agrees = _all_or_none(smaller, clearly)
    return Verdict(claim, agrees, "; ".join(parts) + ".")


def _all_or_none(holds, decisive) -> bool | None:
    """True when the claim holds in every case and decisively in one, False in the mirror case, else None."""
    if not any(decisive):
        return None
    if all(holds) and any(d for h, d in zip(holds, decisive) if h):
        return True
    if not any(holds):
        return False
    return None


def conclude_training_length(results: pd.DataFrame, early_epoch: int, optimizer: str = "sgd") -> Verdict:
    """Study 3. Claim: with SGD, small temperatures are best early in training and larger ones later.

    For each batch size, compares the best temperature at ``early_epoch`` with the best at the final epoch.
    A comparison is decisive when one epoch's best temperature is clearly worse than the other's best at that
    other epoch. Agrees when the final best is larger for every batch size (decisively for one), disagrees
    when it is never larger (decisively for one), inconclusive otherwise.
    """
    name = {"sgd": "SGD", "adamw": "AdamW"}.get(optimizer, optimizer)
    claim = f"with {name}, small temperatures are best early in training and larger ones later"
    if optimizer != "sgd":
        claim = f"(for contrast; the paper claims this for SGD) {claim}"
    rows = results[results["optimizer"] == optimizer]
    if rows.empty:
        raise ValueError(f"results must contain optimizer {optimizer!r}")
    parts, later_larger, decisive = [], [], []
    for batch_size, group in rows.groupby("batch_size"):
        early = best_temperature(summarize(group, "temperature", epoch=early_epoch))
        final_summary = summarize(group, "temperature")
        final = best_temperature(final_summary)
        last_epoch = int(group["epoch"].max())
        later_larger.append(final[0] > early[0])
        decisive.append(early[0] not in final[1] or final[0] not in early[1])
        parts.append(f"batch {batch_size}: best T {early[0]:g} at epoch {early_epoch} (indistinguishable: "
                     f"{_temps(early[1])}) vs {final[0]:g} at epoch {last_epoch} (indistinguishable: {_temps(final[1])})")
    return Verdict(claim, _all_or_none(later_larger, decisive), "; ".join(parts) + ".")


def conclude_entropy(results: pd.DataFrame) -> Verdict:
    """Study 4. Question: is distilling at temperature T more than label smoothing of the same entropy?

    ``results`` has a "target" column with "teacher" and "label_smoothing" rows per temperature. Agrees
    (the teacher carries more than its entropy) when the teacher is clearly better at some temperatures
    and never clearly worse; disagrees when label smoothing is clearly better at some temperatures and the
    teacher never is; inconclusive otherwise (e.g. everything within the seed spread).
    """
    claim = "the tempered teacher gives the student more than a label-smoothing target of the same entropy"
    summary = summarize(results, ["target", "temperature"])
    teacher = summary[summary["target"] == "teacher"].set_index("temperature")
    smooth = summary[summary["target"] == "label_smoothing"].set_index("temperature")
    outcome = {1: [], 0: [], -1: []}
    for t in teacher.index.intersection(smooth.index):
        outcome[differ(teacher.at[t, "mean"], teacher.at[t, "std"], smooth.at[t, "mean"], smooth.at[t, "std"])].append(t)
    text = (f"the teacher is clearly better at T = {_temps(outcome[1])}, indistinguishable at {_temps(outcome[0])}, "
            f"clearly worse at {_temps(outcome[-1])}.")
    agrees = True if outcome[1] and not outcome[-1] else (False if outcome[-1] and not outcome[1] else None)
    return Verdict(claim, agrees, text)


def conclude_relational(results: pd.DataFrame) -> Verdict:
    """Study 5. Claim (the paper's premise): the teacher's relational information is what helps the student.

    ``results`` has an "ablation" column ("none" = the full teacher). For each ablation, the temperatures at
    which the full teacher is clearly better / worse. Agrees when every ablation is clearly worse at some
    temperature and clearly better at none; disagrees when no ablation is ever clearly worse and some
    ablation is clearly better somewhere; inconclusive otherwise (e.g. everything within the seed spread).
    """
    claim = "removing the teacher's relational information (which wrong classes look alike) hurts the student"
    summary = summarize(results, ["ablation", "temperature"])
    full = summary[summary["ablation"] == "none"].set_index("temperature")
    if full.empty:
        raise ValueError("results must contain the full teacher (ablation 'none')")
    parts, hurts, helps = [], [], []
    for ablation, rows in summary[summary["ablation"] != "none"].groupby("ablation", sort=False):
        rows = rows.set_index("temperature")
        outcome = {1: [], 0: [], -1: []}
        for t in rows.index.intersection(full.index):
            outcome[differ(full.at[t, "mean"], full.at[t, "std"], rows.at[t, "mean"], rows.at[t, "std"])].append(t)
        hurts.append(bool(outcome[1]))
        helps.append(bool(outcome[-1]))
        parts.append(f"{ablation}: worse than the full teacher at T = {_temps(outcome[1])}, better at {_temps(outcome[-1])}")
    if not parts:
        raise ValueError("results must contain at least one ablation besides 'none'")
    agrees = True if all(hurts) and not any(helps) else (False if not any(hurts) and any(helps) else None)
    return Verdict(claim, agrees, "; ".join(parts) + ".")


def conclude_best_temperature_shift(results: pd.DataFrame, column: str, claim: str) -> Verdict:
    """Study 6. Claim: the best temperature depends on ``column`` (e.g. "teacher" origin or "task" granularity).

    Agrees when the best temperatures differ and their sets of indistinguishable-from-best temperatures do
    not overlap; disagrees when the best temperature is the same and it is clearly better than some other
    temperature for every setting (a real peak, in the same place); inconclusive otherwise.
    """
    summary = summarize(results, [column, "temperature"])
    bests, parts = {}, []
    for value, rows in summary.groupby(column, sort=False):
        bests[value] = best_temperature(rows)
        top = rows.loc[rows["mean"].idxmax()]
        parts.append(f"{value}: best T {bests[value][0]:g} ({_fmt(top)} %), indistinguishable: {_temps(bests[value][1])}")
    if len(bests) < 2:
        raise ValueError(f"results must have at least two values in column {column!r}")
    best_values = {b[0] for b in bests.values()}
    tied_sets = [set(b[1]) for b in bests.values()]
    peaked = all(len(tied) < summary["temperature"].nunique() for tied in tied_sets)
    if len(best_values) == 1:
        agrees = False if peaked else None
    elif set.intersection(*tied_sets):
        agrees = None
    else:
        agrees = True
    return Verdict(claim, agrees, "; ".join(parts) + ".")


# ----------------------------------------------------------------------------------------------------------
# Private helpers

def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def _check_probs_and_targets(probs, targets) -> None:
    if not isinstance(probs, torch.Tensor) or probs.dim() != 2 or not probs.is_floating_point():
        raise ValueError(f"probs must be a floating-point tensor of shape (B, K), got {_describe(probs)}")
    if probs.shape[1] < 2:
        raise ValueError(f"probs must have at least 2 classes, got shape {tuple(probs.shape)}")
    if not isinstance(targets, torch.Tensor) or targets.dtype != torch.long or targets.shape != probs.shape[:1]:
        raise ValueError(f"targets must be an int64 tensor of shape ({probs.shape[0]},), got {_describe(targets)}")
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= probs.shape[1]):
        raise ValueError(f"targets must lie in [0, {probs.shape[1]}), got values in [{int(targets.min())}, {int(targets.max())}]")


def _as_temperature_list(temperatures) -> list[float]:
    if isinstance(temperatures, Real) and not isinstance(temperatures, bool):
        temperatures = [temperatures]
    try:
        values = [float(t) for t in temperatures]
    except (TypeError, ValueError):
        raise TypeError(f"temperatures must be a number or a sequence of numbers, got {temperatures!r}") from None
    if not values or not all(math.isfinite(t) and t > 0 for t in values):
        raise ValueError(f"temperatures must be finite numbers > 0, got {temperatures!r}")
    return values
