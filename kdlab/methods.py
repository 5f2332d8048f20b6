"""Named distillation recipes: which losses, with which weights, at which temperature.

``get_method(name, **overrides)`` returns a :class:`Method`, a small ``nn.Module`` called as
``method(student_logits, teacher_logits, targets, epoch)`` (epoch 1-based). It returns a dict of named,
*already weighted* scalar loss terms, e.g. ``{"ce": 0.1 * CE, "kd": 0.9 * KD}``; the trainer minimises
``sum(terms.values())`` and logs each term. ``list_methods()`` shows every name with its defaults.

Defaults are each paper's CIFAR-100 setting (resnet32x4 -> resnet8x4 where the paper tunes per pair):

    name             terms             defaults                                      source
    ce               ce                ce_weight 1                                   plain cross-entropy
    label_smoothing  ce                smoothing 0.1                                 Szegedy et al. 2016
    kd               ce, kd            T 4, ce 0.1, kd 0.9                           Hinton 2015; CRD/mdistiller
    ttm              ce, ttm           T 10 (gamma 0.1), ce 1, beta 100              TTM Table 8 (res32x4->8x4)
    wttm             ce, wttm          T 10 (gamma 0.1), ce 1, beta 3                TTM Table 8 (res32x4->8x4)
    dtkd             ce, dtkd, kd      tau 4, alpha 3, beta 1, ce 1, warm-up 20      DTKD code, mdistiller cfg
    lskd             ce, lskd          tau 2, ce 0.1, kd 9                           LS-KD code (tools/train.py)
    dkd              ce, tckd, nckd    T 4, alpha 1, beta 8, ce 1, warm-up 20        DKD (mdistiller cfg)
    ctkd             ce, kd            tau in (1, 21) learnable, ce 0.1, kd 0.9      CTKD code
    normkd           ce, normkd        T_norm 2, ce 0.1, kd 0.9                      NormKD code (mdistiller cfg)

Every temperature lies in (0, ``kdlab.common.MAX_TEMPERATURE`` = 1e4] (a ValueError beyond).
Every teacher-based recipe accepts ``warmup`` (epochs): its distillation terms are multiplied by
min(epoch / warmup, 1) (0 = no warm-up); the CE term never is. For a short run, e.g. 10 epochs on
mnist10k, pass a smaller warm-up: ``get_method("dkd", warmup=2)``. ``"ttm"`` and ``"wttm"`` also accept the
official flag ``gamma`` (= 1 / temperature) instead of ``temperature``.

How to add a method (``kdlab.register_method``; the recipes below are registered the same way):

    def my_terms(student_logits, teacher_logits, targets, epoch, temperature, ce_weight, kd_weight):
        # ONE student: logits (B, K), targets (B,), each hyper-parameter a scalar; returns weighted scalars
        return {"ce": ce_weight * kdlab.losses.cross_entropy(student_logits, targets),
                "kd": kd_weight * kdlab.kd_loss(student_logits, teacher_logits, temperature)}

    kdlab.register_method("my_kd", my_terms, {"temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9})
    kdlab.distill(teacher, transfer, method="my_kd", temperature=2)       # one student
    kdlab.sweep(teacher, transfer, method="my_kd", grid={"temperature": [1, 2, 4]})  # batched by vmap

Use only torch operations on the hyper-parameters (no ``if temperature > 1``, no ``float(...)``): the sweep
calls the function once for all its students through ``torch.func.vmap``, each hyper-parameter that differs
between them then a 0-d tensor. ``needs_teacher=False`` for a method that uses only the labels.
"""
from __future__ import annotations

import math
from numbers import Real

import torch
from torch import nn

from kdlab.common import (
    check_bool,
    check_bounded_temperature,
    check_logits,
    check_non_negative,
    check_positive,
    check_probability,
    check_targets,
)
from kdlab.losses import (
    LearnableTemperature,
    cross_entropy,
    dkd_loss,
    dtkd_loss,
    dtkd_temperatures,
    kd_loss,
    lskd_loss,
    normkd_loss,
    ttm_loss,
    wttm_loss,
)

__all__ = ["Method", "get_method", "list_methods", "register_method", "unregister_method", "warmup_factor"]


class Method(nn.Module):
    """A named recipe: ``method(student_logits, teacher_logits, targets, epoch) -> dict[str, Tensor]``.

    Attributes:
        name: the recipe's name, e.g. ``"kd"``.
        hparams: the effective hyper-parameters (defaults updated by the overrides), incl. ``"temperature"``
            for recipes that use one (for CTKD: the initial temperature).
        terms: the recipe's terms function for one student, ``terms(student_logits, teacher_logits, targets,
            epoch, **hparams)``; ``kdlab.sweeps`` batches it over many students.
        term_names: the keys of the returned dict, in order.
        uses_temperature / needs_teacher: False for ``"ce"`` and ``"label_smoothing"`` (the trainer may
            then pass ``teacher_logits=None``).
        batchable: whether ``terms`` may be batched over students with ``torch.func.vmap`` (every recipe).
        learned: names of hyper-parameters learned in training (CTKD: "temperature"); ``hparams_at(epoch)``
            gives them as tensors. record: None or the function giving the temperatures to log.
        last_temperatures: detached temperatures of the last call (DTKD: per-sample student temperatures of
            shape (B,); CTKD: the learnable tau, 0-d), None for fixed-temperature recipes.
    Only CTKD has parameters (its temperature's theta); add ``method.parameters()`` to the optimizer and move
    the method to the training device with ``method.to(device)``.
    """

    def __init__(self, name, hparams, recipe):
        super().__init__()
        self.name = name
        self.hparams = hparams
        self.terms = recipe.terms
        self.term_names = recipe.term_names
        self.needs_teacher = recipe.needs_teacher
        self.uses_temperature = "temperature" in hparams
        self.batchable = recipe.batchable
        self.record = recipe.record  # (student_logits, teacher_logits, **hparams) -> the temperatures to log
        self.learned = ("temperature",) if name == "ctkd" else ()
        self.last_temperatures = None
        if name == "ctkd":
            self.temperature_module = LearnableTemperature(
                t_min=hparams["t_min"],
                t_span=hparams["t_span"],
                init=_logit((hparams["temperature"] - hparams["t_min"]) / hparams["t_span"]),
                decay_epochs=hparams["decay_epochs"],
            )

    def forward(self, student_logits, teacher_logits, targets, epoch):
        check_logits(student_logits, "student_logits", exact_dim=2)
        if self.needs_teacher and teacher_logits is None:
            raise ValueError(f"teacher_logits must be a tensor of shape (B, K) for method {self.name!r}, got None")
        targets = check_targets(targets, student_logits)
        if isinstance(epoch, bool) or not isinstance(epoch, Real) or not math.isfinite(epoch) or epoch < 0:
            raise ValueError(f"epoch must be a finite number >= 0 (1-based epoch index), got {epoch!r}")
        hparams = self.hparams_at(epoch)
        if self.record is not None:
            self.last_temperatures = self.record(student_logits, teacher_logits, **hparams).detach()
        return self.terms(student_logits, teacher_logits, targets, epoch, **hparams)

    def hparams_at(self, epoch):
        """The hyper-parameters of this epoch: ``hparams`` with the learned ones (``learned``: CTKD's
        temperature, from its ``LearnableTemperature``) as tensors that carry gradients to the method's parameters."""
        if not self.learned:
            return self.hparams
        return dict(self.hparams, temperature=self.temperature_module(epoch))

    def warmup_factor(self, epoch) -> float:
        """min(epoch / warmup, 1), the factor on the distillation terms (1 when warmup is 0)."""
        return warmup_factor(epoch, self.hparams.get("warmup", 0))

    def extra_repr(self) -> str:
        return f"name={self.name!r}, hparams={self.hparams}"


def warmup_factor(epoch, warmup):
    """min(epoch / warmup, 1) (1 when warmup is 0): the factor on a recipe's distillation terms.

    ``warmup`` may be a number or a tensor (inside the sweep's vmap: one warm-up per student)."""
    if isinstance(warmup, torch.Tensor):
        return torch.where(warmup == 0, 1.0, (epoch / warmup.clamp(min=1e-12)).clamp(max=1.0))
    return 1.0 if warmup == 0 else min(epoch / warmup, 1.0)


# ----------------------------------------------------------------------------------------------------------
# The recipes, each for one student: logits (B, K), targets (B,), scalar hyper-parameters -> weighted terms.

def _ce_terms(student_logits, teacher_logits, targets, epoch, ce_weight):
    """Plain cross-entropy H(y, q): the no-teacher baseline."""
    return {"ce": ce_weight * cross_entropy(student_logits, targets)}


def _label_smoothing_terms(student_logits, teacher_logits, targets, epoch, smoothing, ce_weight):
    """Cross-entropy against (1 - eps) onehot(y) + eps / K (Szegedy et al. 2016): a teacher-free soft target."""
    return {"ce": ce_weight * cross_entropy(student_logits, targets, smoothing)}


def _kd_terms(student_logits, teacher_logits, targets, epoch, temperature, ce_weight, kd_weight, warmup):
    """Hinton (2015), eq. 1: (1 - lambda) H(y, q) + lambda T^2 D(p^t_T || q_T); lambda = 0.9, T = 4.

    RepDistiller flags: ce_weight = ``-r`` (0.1), kd_weight = ``-a`` (0.9), temperature = ``--kd_T`` (4).
    """
    return {
        "ce": ce_weight * cross_entropy(student_logits, targets),
        "kd": warmup_factor(epoch, warmup) * kd_weight * kd_loss(student_logits, teacher_logits, temperature),
    }


def _ttm_terms(student_logits, teacher_logits, targets, epoch, temperature, ce_weight, beta, warmup):
    """TTM (Zheng & Yang 2024), eq. 2: H(y, q) + beta D(p^t_T || q).

    Official flags: ce_weight = ``-r`` (1), beta = ``-b`` (100), temperature = 1 / ``--ttm_l`` (0.1 -> 10);
    resnet32x4 -> resnet8x4 values of the paper's Table 8.
    """
    return {
        "ce": ce_weight * cross_entropy(student_logits, targets),
        "ttm": warmup_factor(epoch, warmup) * beta * ttm_loss(student_logits, teacher_logits, temperature),
    }


def _wttm_terms(student_logits, teacher_logits, targets, epoch, temperature, ce_weight, beta, warmup):
    """WTTM (Zheng & Yang 2024), eq. 23: H(y, q) + beta U_{1/T}(p^t) D(p^t_T || q).

    Official flags: ce_weight = ``-r`` (1), beta = ``-b`` (3), temperature = 1 / ``--ttm_l`` (0.1 -> 10);
    resnet32x4 -> resnet8x4 values of the paper's Table 8.
    """
    return {
        "ce": ce_weight * cross_entropy(student_logits, targets),
        "wttm": warmup_factor(epoch, warmup) * beta * wttm_loss(student_logits, teacher_logits, temperature),
    }


def _dtkd_terms(student_logits, teacher_logits, targets, epoch, temperature, ce_weight, alpha, beta, warmup,
                detach):
    """DTKD (Wei & Bai 2024), official code: CE + min(epoch / 20, 1) (alpha L_DTKD + beta tau^2 KD(tau)).

    Official config: alpha = ``DTKD.ALPHA`` (3), beta = ``DTKD.BETA`` (1), ce_weight = ``DTKD.CE_WEIGHT`` (1),
    temperature = ``DTKD.T`` (4), warmup = ``DTKD.WARMUP`` (20). ``detach=False`` lets gradients flow through
    the student's temperature, as the official code does.
    """
    warm = warmup_factor(epoch, warmup)
    return {
        "ce": ce_weight * cross_entropy(student_logits, targets),
        "dtkd": warm * alpha * dtkd_loss(student_logits, teacher_logits, temperature, detach=detach),
        "kd": warm * beta * kd_loss(student_logits, teacher_logits, temperature),
    }


def _lskd_terms(student_logits, teacher_logits, targets, epoch, temperature, ce_weight, kd_weight, warmup):
    """Logit-standardised KD (Sun et al. 2024): 0.1 CE + 9 tau^2 KL(Z(v) / tau || Z(z) / tau), tau = 2.

    Official flags: temperature = ``--base-temp`` (2), kd_weight = ``--kd-weight`` (9), ce_weight from the KD
    config (0.1).
    """
    return {
        "ce": ce_weight * cross_entropy(student_logits, targets),
        "lskd": warmup_factor(epoch, warmup) * kd_weight * lskd_loss(student_logits, teacher_logits, temperature),
    }


def _normkd_terms(student_logits, teacher_logits, targets, epoch, temperature, ce_weight, kd_weight, warmup):
    """NormKD (Chi et al. 2023): 0.1 CE + 0.9 mean_b (T_norm s(v_b))^2 KL, per-sample T = T_norm * std(logits).

    Official config (gizi1/NormKD ``mdistiller/engine/cfg.py``): temperature = ``NormKD.TEMPERATURE_NORM`` (2.0),
    ce_weight = ``NormKD.LOSS.CE_WEIGHT`` (0.1), kd_weight = ``NormKD.LOSS.KD_WEIGHT`` (0.9).
    """
    normkd = normkd_loss(student_logits, teacher_logits, temperature)
    return {
        "ce": ce_weight * cross_entropy(student_logits, targets),
        "normkd": warmup_factor(epoch, warmup) * kd_weight * normkd,
    }


def _dkd_terms(student_logits, teacher_logits, targets, epoch, temperature, ce_weight, alpha, beta, warmup):
    """DKD (Zhao et al. 2022), mdistiller: CE + min(epoch / 20, 1) (alpha TCKD + beta NCKD), T = 4.

    mdistiller config: alpha = ``DKD.ALPHA`` (1), beta = ``DKD.BETA`` (8), ce_weight = ``DKD.CE_WEIGHT`` (1),
    temperature = ``DKD.T`` (4), warmup = ``DKD.WARMUP`` (20).
    """
    warm = warmup_factor(epoch, warmup)
    return {
        "ce": ce_weight * cross_entropy(student_logits, targets),
        "tckd": warm * alpha * dkd_loss(student_logits, teacher_logits, targets, 1.0, 0.0, temperature),
        "nckd": warm * beta * dkd_loss(student_logits, teacher_logits, targets, 0.0, 1.0, temperature),
    }


def _ctkd_terms(student_logits, teacher_logits, targets, epoch, temperature, ce_weight, kd_weight, warmup,
                t_min, t_span, decay_epochs):
    """CTKD (Li et al. 2023): 0.1 CE + 0.9 tau^2 KL with tau learnable behind a gradient-reversal layer.

    Official flags: ``-r 0.1 -a 0.9``, t_min = ``--t_start`` (1), t_span = ``--t_end`` (20), decay_epochs =
    ``--decay_loops`` (10); temperature is the initial tau (theta = 1 gives 15.62). ``Method`` passes the
    learnable tau (``LearnableTemperature``, built from t_min, t_span, decay_epochs) as ``temperature``.
    """
    return {
        "ce": ce_weight * cross_entropy(student_logits, targets),
        "kd": warmup_factor(epoch, warmup) * kd_weight * kd_loss(student_logits, teacher_logits, temperature),
    }


# ----------------------------------------------------------------------------------------------------------
# The registry: name -> recipe. register_method adds to it; list_methods and get_method read it.

class _Recipe:
    def __init__(self, terms, term_names, defaults, needs_teacher, batchable, validators, record=None):
        self.terms, self.term_names, self.defaults = terms, term_names, defaults
        self.needs_teacher, self.batchable, self.validators, self.record = needs_teacher, batchable, validators, record


def _dtkd_record(student_logits, teacher_logits, temperature, **hparams):
    """DTKD logs its per-sample student temperatures (B,)."""
    return dtkd_temperatures(student_logits, teacher_logits, temperature, detach=True)[1].reshape(-1)


def _ctkd_record(student_logits, teacher_logits, temperature, **hparams):
    """CTKD logs its learned temperature (0-d)."""
    return temperature


_REGISTRY = {}


def register_method(name, terms, defaults, *, needs_teacher=True, term_names=None):
    """Add the recipe ``name``: ``terms(student_logits, teacher_logits, targets, epoch, **hyperparameters)``
    returns a dict of named, *weighted* scalar terms for ONE student (the module docstring shows how).

    defaults: every hyper-parameter ``terms`` takes, with its default (numbers or True/False); a
    "temperature" key makes it a method with a temperature (swept, shown in tables). needs_teacher: False
    when ``terms`` never looks at ``teacher_logits`` (then None). term_names: the keys ``terms`` returns, in
    order (default: found by one call on a tiny random batch). Registering an existing name replaces it.
    After this, ``get_method(name)``, ``distill(method=name)``, ``sweep(method=name)`` and ``list_methods()``
    know the method; the sweep batches ``terms`` over its students with ``torch.func.vmap``.
    ``unregister_method(name)`` removes it again.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty string, got {name!r}")
    if not callable(terms):
        raise TypeError(f"terms must be a function (student_logits, teacher_logits, targets, epoch, **hp), got {terms!r}")
    if not isinstance(defaults, dict) or not all(isinstance(key, str) for key in defaults):
        raise TypeError(f"defaults must be a dict of hyper-parameter names to default values, got {defaults!r}")
    check_bool(needs_teacher, "needs_teacher")
    validators = {}
    for key, value in defaults.items():
        if key in _VALIDATORS:
            validators[key] = _VALIDATORS[key]
        elif isinstance(value, bool):
            validators[key] = check_bool
        elif isinstance(value, Real) and math.isfinite(value):
            validators[key] = _check_finite
        else:
            raise TypeError(f"defaults[{key!r}] must be a finite number or True/False, got {value!r}")
        validators[key](value, f"defaults[{key!r}]")
    if term_names is None:
        term_names = _discover_term_names(name, terms, defaults, needs_teacher)
    _REGISTRY[name] = _Recipe(terms, tuple(term_names), dict(defaults), needs_teacher, True, validators)


def unregister_method(name):
    """Remove the recipe ``name`` added with ``register_method`` (a built-in name that was replaced gets its
    built-in recipe back). Raises ValueError for an unknown name and for a built-in recipe left as it is."""
    if name not in _REGISTRY:
        raise ValueError(f"name must be a registered method, one of {sorted(_REGISTRY)}, got {name!r}")
    if name in _BUILT_IN:
        if _REGISTRY[name] is _BUILT_IN_RECIPES[name]:
            raise ValueError(f"name {name!r} is a built-in method; only methods added with register_method "
                             "can be removed")
        _REGISTRY[name] = _BUILT_IN_RECIPES[name]
    else:
        del _REGISTRY[name]


def _discover_term_names(name, terms, defaults, needs_teacher):
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(4, 3, generator=generator)
    teacher = torch.randn(4, 3, generator=generator) if needs_teacher else None
    result = terms(student, teacher, torch.tensor([0, 1, 2, 0]), 1, **defaults)
    if not isinstance(result, dict) or not result or not all(
            isinstance(key, str) and isinstance(value, torch.Tensor) and value.dim() == 0
            for key, value in result.items()):
        raise TypeError(f"terms of method {name!r} must return a dict of named scalar (0-d) tensors, got {result!r}")
    return tuple(result)


def list_methods() -> dict:
    """Every recipe name -> a dict of its default hyper-parameters (see the module docstring for sources).

    Example: ``list_methods()["kd"] == {"temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9, "warmup": 0}``.
    CTKD's ``temperature`` is the initial value of its learnable temperature. Methods added with
    ``register_method`` are listed too.
    """
    return {name: dict(recipe.defaults) for name, recipe in _REGISTRY.items()}


def get_method(name: str, **overrides) -> Method:
    """The recipe ``name`` with its paper's defaults, updated by ``overrides`` (see :func:`list_methods`).

    Examples: ``get_method("kd", temperature=8)``, ``get_method("ttm", gamma=0.2)`` (= temperature 5),
    ``get_method("dkd", warmup=2)``, ``get_method("dtkd", detach=True)``.
    Raises ValueError for an unknown name or keyword (listing the known ones) and for invalid values.
    """
    if name not in _REGISTRY:
        raise ValueError(f"name must be one of {sorted(_REGISTRY)}, got {name!r}")
    recipe = _REGISTRY[name]
    defaults = recipe.defaults
    uses_temperature = "temperature" in defaults
    known = set(defaults) | ({"gamma"} if name in ("ttm", "wttm") else set())
    unknown = sorted(set(overrides) - known)
    if unknown:
        hint = " (it does not use a temperature)" if "temperature" in unknown and not uses_temperature else ""
        raise ValueError(f"unknown keyword(s) {unknown} for method {name!r}{hint}; known keywords: {sorted(known)}")
    overrides = dict(overrides)
    if "gamma" in overrides:
        if "temperature" in overrides:
            raise ValueError("give either temperature or gamma (= 1 / temperature), not both")
        overrides["temperature"] = 1.0 / check_positive(overrides.pop("gamma"), "gamma")
    if name == "ctkd" and "temperature" not in overrides:
        t_min = overrides.get("t_min", defaults["t_min"])
        t_span = overrides.get("t_span", defaults["t_span"])
        overrides["temperature"] = check_positive(t_min, "t_min") + check_positive(t_span, "t_span") / (1 + math.exp(-1.0))
    hparams = dict(defaults)
    for key, value in overrides.items():
        hparams[key] = recipe.validators[key](value, key)
    if name == "ctkd" and not hparams["t_min"] < hparams["temperature"] < hparams["t_min"] + hparams["t_span"]:
        raise ValueError(
            f"temperature (CTKD's initial temperature) must lie in (t_min, t_min + t_span) = "
            f"({hparams['t_min']}, {hparams['t_min'] + hparams['t_span']}), got {hparams['temperature']}"
        )
    return Method(name, hparams, recipe)


# ----------------------------------------------------------------------------------------------------------
# Validation of overrides.

def _check_finite(value, name):
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a finite number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return value if isinstance(value, int) else float(value)


def _logit(probability):
    return math.log(probability / (1 - probability))


_VALIDATORS = {
    "temperature": check_bounded_temperature,
    "ce_weight": check_non_negative,
    "kd_weight": check_non_negative,
    "alpha": check_non_negative,
    "beta": check_non_negative,
    "warmup": check_non_negative,
    "detach": check_bool,
    "smoothing": check_probability,
    "t_min": check_positive,
    "t_span": check_positive,
    "decay_epochs": check_positive,
}


# The built-in recipes: (terms, term names, defaults, needs_teacher, batchable); DTKD and CTKD also log
# temperatures (their record functions), CTKD's temperature is learned (Method.hparams_at).
_CTKD_INITIAL_TEMPERATURE = 1.0 + 20.0 / (1.0 + math.exp(-1.0))  # t_min + t_span sigmoid(theta = 1) = 15.62
_BUILT_IN = {
    "ce": (_ce_terms, ("ce",), {"ce_weight": 1.0}, False, True),
    "label_smoothing": (_label_smoothing_terms, ("ce",), {"smoothing": 0.1, "ce_weight": 1.0}, False, True),
    "kd": (_kd_terms, ("ce", "kd"), {"temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9, "warmup": 0}, True, True),
    "ttm": (_ttm_terms, ("ce", "ttm"), {"temperature": 10.0, "ce_weight": 1.0, "beta": 100.0, "warmup": 0}, True, True),
    "wttm": (_wttm_terms, ("ce", "wttm"), {"temperature": 10.0, "ce_weight": 1.0, "beta": 3.0, "warmup": 0}, True,
             True),
    "dtkd": (_dtkd_terms, ("ce", "dtkd", "kd"),
             {"temperature": 4.0, "ce_weight": 1.0, "alpha": 3.0, "beta": 1.0, "warmup": 20, "detach": False}, True,
             True),
    "lskd": (_lskd_terms, ("ce", "lskd"), {"temperature": 2.0, "ce_weight": 0.1, "kd_weight": 9.0, "warmup": 0},
             True, True),
    "dkd": (_dkd_terms, ("ce", "tckd", "nckd"),
            {"temperature": 4.0, "ce_weight": 1.0, "alpha": 1.0, "beta": 8.0, "warmup": 20}, True, True),
    "ctkd": (_ctkd_terms, ("ce", "kd"),
             {"temperature": _CTKD_INITIAL_TEMPERATURE, "ce_weight": 0.1, "kd_weight": 0.9, "t_min": 1.0,
              "t_span": 20.0, "decay_epochs": 10, "warmup": 0}, True, True),
    "normkd": (_normkd_terms, ("ce", "normkd"), {"temperature": 2.0, "ce_weight": 0.1, "kd_weight": 0.9, "warmup": 0},
               True, True),
}
_BUILT_IN_RECIPES = {_name: _Recipe(_terms, _term_names, _defaults, _needs_teacher, _batchable,
                                    {key: _VALIDATORS[key] for key in _defaults},
                                    {"dtkd": _dtkd_record, "ctkd": _ctkd_record}.get(_name))
                     for _name, (_terms, _term_names, _defaults, _needs_teacher, _batchable) in _BUILT_IN.items()}
_REGISTRY.update(_BUILT_IN_RECIPES)
