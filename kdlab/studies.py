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
   :class:`AblatedTeacher`, which hands any fixed-temperature method a teacher whose *tempered* distribution
   is the ablated one: it replaces v by T * log A(softmax(v / T)), whose softmax at temperature T is exactly
   A(softmax(v / T)).
2. The studies as data (``STUDIES``: grids for mnist10k and for CIFAR-100) and one runner per study that
   calls :func:`kdlab.sweep` and returns its tidy DataFrame (plus a "study" column and the study's own
   columns, e.g. "teacher" or "ablation").
3. Summaries and verdicts: :func:`summarize` (mean and std over seeds) and ``conclude_<study>`` functions
   that compare the measured means against the paper's claim and say whether they agree, using the seed
   spread, so that no conclusion in the notebook is written by hand.
"""
from __future__ import annotations

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
    batch, num_classes = probs.shape
    # Non-target classes in their natural order (target first), and the same classes in a random order
    # (target first): scattering the second onto the first is a uniformly random bijection of the others.
    natural = torch.arange(num_classes, device=probs.device, dtype=probs.dtype).expand(batch, num_classes).clone()
    natural.scatter_(1, targets[:, None], -1.0)
    slots = natural.argsort(dim=1)
    keys = torch.rand(batch, num_classes, generator=generator).to(probs.device)
    keys.scatter_(1, targets[:, None], -1.0)
    sources = keys.argsort(dim=1)
    return torch.empty_like(probs).scatter_(1, slots, probs.gather(1, sources))


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


ABLATIONS = ("none", "shuffle", "flatten", "top_k")
"""Names understood by :class:`AblatedTeacher` ("none" leaves the teacher as it is)."""


class AblatedTeacher(nn.Module):
    """Wrap a method (e.g. ``kdlab.get_method("kd", temperature=4)``) so it sees an ablated teacher.

    With the method's temperature T and teacher logits v, the method is called with the logits
    v' = T * log A(softmax(v / T)) (probabilities floored at 1e-12 so that the log stays finite), and
    softmax(v' / T) = A(softmax(v / T)): every term that uses the *tempered* teacher (KD's KL) now distils
    the ablated distribution, everything else (CE on the labels, the weights, T^2) is unchanged.

    Args:
        method: a kdlab method with a fixed scalar ``hparams["temperature"]`` (kd, ttm, ...).
        ablation: one of ``ABLATIONS``: "shuffle", "flatten", "top_k" or "none".
        k: for "top_k", how many classes to keep.
        seed: seeds the permutations of "shuffle" (a fresh permutation for every call).
    Follows the Method contract: ``forward(student_logits, teacher_logits, targets, epoch) -> dict``.
    """

    def __init__(self, method: nn.Module, ablation: str, k: int = 3, seed: int = 0):
        super().__init__()
        if not isinstance(method, nn.Module) or "temperature" not in getattr(method, "hparams", {}):
            raise TypeError(f"method must be a kdlab method with a temperature (e.g. get_method('kd')), got {method!r}")
        if ablation not in ABLATIONS:
            raise ValueError(f"ablation must be one of {ABLATIONS}, got {ablation!r}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        self.method = method
        self.ablation = ablation
        self.k = k
        self.generator = torch.Generator().manual_seed(seed)
        suffix = {"none": "", "shuffle": "+shuffle", "flatten": "+flatten", "top_k": f"+top{k}"}[ablation]
        self.name = method.name + suffix
        self.hparams = {**method.hparams, "ablation": ablation, **({"k": k} if ablation == "top_k" else {})}
        self.uses_temperature = True
        self.needs_teacher = True

    @property
    def last_temperatures(self):
        return getattr(self.method, "last_temperatures", None)

    def ablate(self, teacher_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The ablated tempered teacher distribution A(softmax(v / T)), shape (B, K)."""
        probs = tempered_softmax(teacher_logits.detach().float(), float(self.method.hparams["temperature"]))
        if self.ablation == "shuffle":
            return shuffle_non_target(probs, targets, self.generator)
        if self.ablation == "flatten":
            return flatten_non_target(probs, targets)
        if self.ablation == "top_k":
            return truncate_top_k(probs, min(self.k, probs.shape[1]))
        return probs

    def forward(self, student_logits, teacher_logits, targets, epoch):
        if self.ablation == "none":
            return self.method(student_logits, teacher_logits, targets, epoch)
        temperature = float(self.method.hparams["temperature"])
        ablated = self.ablate(teacher_logits, targets).clamp_min(1e-12)
        return self.method(student_logits, (temperature * ablated.log()).to(teacher_logits.dtype), targets, epoch)


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
