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
"""
from __future__ import annotations

import math
from numbers import Real

import torch.nn.functional as F
from torch import nn

from kdlab.common import (
    check_bool,
    check_bounded_temperature,
    check_logits,
    check_non_negative,
    check_positive,
    check_probability,
    check_targets,
    compute_dtype,
)
from kdlab.losses import (
    LearnableTemperature,
    dkd_loss,
    dtkd_loss,
    dtkd_temperatures,
    kd_loss,
    lskd_loss,
    normkd_loss,
    ttm_loss,
    wttm_loss,
)

__all__ = ["Method", "get_method", "list_methods"]


class Method(nn.Module):
    """A named recipe: ``method(student_logits, teacher_logits, targets, epoch) -> dict[str, Tensor]``.

    Attributes:
        name: the recipe's name, e.g. ``"kd"``.
        hparams: the effective hyper-parameters (defaults updated by the overrides), incl. ``"temperature"``
            for recipes that use one (for CTKD: the initial temperature).
        term_names: the keys of the returned dict, in order.
        uses_temperature / needs_teacher: False for ``"ce"`` and ``"label_smoothing"`` (the trainer may
            then pass ``teacher_logits=None``).
        last_temperatures: detached temperatures of the last call (DTKD: per-sample student temperatures of
            shape (B,); CTKD: the learnable tau, 0-d), None for fixed-temperature recipes.
    Only CTKD has parameters (its temperature's theta); add ``method.parameters()`` to the optimizer and move
    the method to the training device with ``method.to(device)``.
    """

    def __init__(self, name, hparams, terms, term_names, needs_teacher, uses_temperature):
        super().__init__()
        self.name = name
        self.hparams = hparams
        self.term_names = term_names
        self.needs_teacher = needs_teacher
        self.uses_temperature = uses_temperature
        self.last_temperatures = None
        self._terms = terms
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
        return self._terms(self, student_logits, teacher_logits, targets, epoch)

    def warmup_factor(self, epoch) -> float:
        """min(epoch / warmup, 1), the factor on the distillation terms (1 when warmup is 0)."""
        warmup = self.hparams.get("warmup", 0)
        return 1.0 if warmup == 0 else min(epoch / warmup, 1.0)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, hparams={self.hparams}"


# ----------------------------------------------------------------------------------------------------------
# The recipes. Each returns the weighted terms; ``m.hparams`` holds the hyper-parameters.

def _cross_entropy(student_logits, targets, smoothing=0.0):
    logits = student_logits.to(compute_dtype(student_logits.dtype))
    return F.cross_entropy(logits, targets, label_smoothing=smoothing)


def _ce_terms(m, student_logits, teacher_logits, targets, epoch):
    """Plain cross-entropy H(y, q): the no-teacher baseline."""
    return {"ce": m.hparams["ce_weight"] * _cross_entropy(student_logits, targets)}


def _label_smoothing_terms(m, student_logits, teacher_logits, targets, epoch):
    """Cross-entropy against (1 - eps) onehot(y) + eps / K (Szegedy et al. 2016): a teacher-free soft target."""
    ce = _cross_entropy(student_logits, targets, m.hparams["smoothing"])
    return {"ce": m.hparams["ce_weight"] * ce}


def _kd_terms(m, student_logits, teacher_logits, targets, epoch):
    """Hinton (2015), eq. 1: (1 - lambda) H(y, q) + lambda T^2 D(p^t_T || q_T); lambda = 0.9, T = 4.

    RepDistiller flags: ce_weight = ``-r`` (0.1), kd_weight = ``-a`` (0.9), temperature = ``--kd_T`` (4).
    """
    hp = m.hparams
    kd = kd_loss(student_logits, teacher_logits, hp["temperature"])
    return {
        "ce": hp["ce_weight"] * _cross_entropy(student_logits, targets),
        "kd": m.warmup_factor(epoch) * hp["kd_weight"] * kd,
    }


def _ttm_terms(m, student_logits, teacher_logits, targets, epoch):
    """TTM (Zheng & Yang 2024), eq. 2: H(y, q) + beta D(p^t_T || q).

    Official flags: ce_weight = ``-r`` (1), beta = ``-b`` (100), temperature = 1 / ``--ttm_l`` (0.1 -> 10);
    resnet32x4 -> resnet8x4 values of the paper's Table 8.
    """
    hp = m.hparams
    ttm = ttm_loss(student_logits, teacher_logits, hp["temperature"])
    return {
        "ce": hp["ce_weight"] * _cross_entropy(student_logits, targets),
        "ttm": m.warmup_factor(epoch) * hp["beta"] * ttm,
    }


def _wttm_terms(m, student_logits, teacher_logits, targets, epoch):
    """WTTM (Zheng & Yang 2024), eq. 23: H(y, q) + beta U_{1/T}(p^t) D(p^t_T || q).

    Official flags: ce_weight = ``-r`` (1), beta = ``-b`` (3), temperature = 1 / ``--ttm_l`` (0.1 -> 10);
    resnet32x4 -> resnet8x4 values of the paper's Table 8.
    """
    hp = m.hparams
    wttm = wttm_loss(student_logits, teacher_logits, hp["temperature"])
    return {
        "ce": hp["ce_weight"] * _cross_entropy(student_logits, targets),
        "wttm": m.warmup_factor(epoch) * hp["beta"] * wttm,
    }


def _dtkd_terms(m, student_logits, teacher_logits, targets, epoch):
    """DTKD (Wei & Bai 2024), official code: CE + min(epoch / 20, 1) (alpha L_DTKD + beta tau^2 KD(tau)).

    Official config: alpha = ``DTKD.ALPHA`` (3), beta = ``DTKD.BETA`` (1), ce_weight = ``DTKD.CE_WEIGHT`` (1),
    temperature = ``DTKD.T`` (4), warmup = ``DTKD.WARMUP`` (20). ``detach=False`` lets gradients flow through
    the student's temperature, as the official code does.
    """
    hp = m.hparams
    _, student_t = dtkd_temperatures(student_logits, teacher_logits, hp["temperature"], detach=True)
    m.last_temperatures = student_t.reshape(-1)
    warm = m.warmup_factor(epoch)
    dtkd = dtkd_loss(student_logits, teacher_logits, hp["temperature"], detach=hp["detach"])
    kd = kd_loss(student_logits, teacher_logits, hp["temperature"])
    return {
        "ce": hp["ce_weight"] * _cross_entropy(student_logits, targets),
        "dtkd": warm * hp["alpha"] * dtkd,
        "kd": warm * hp["beta"] * kd,
    }


def _lskd_terms(m, student_logits, teacher_logits, targets, epoch):
    """Logit-standardised KD (Sun et al. 2024): 0.1 CE + 9 tau^2 KL(Z(v) / tau || Z(z) / tau), tau = 2.

    Official flags: temperature = ``--base-temp`` (2), kd_weight = ``--kd-weight`` (9), ce_weight from the KD
    config (0.1).
    """
    hp = m.hparams
    lskd = lskd_loss(student_logits, teacher_logits, hp["temperature"])
    return {
        "ce": hp["ce_weight"] * _cross_entropy(student_logits, targets),
        "lskd": m.warmup_factor(epoch) * hp["kd_weight"] * lskd,
    }


def _normkd_terms(m, student_logits, teacher_logits, targets, epoch):
    """NormKD (Chi et al. 2023): 0.1 CE + 0.9 mean_b (T_norm s(v_b))^2 KL, per-sample T = T_norm * std(logits).

    Official config (gizi1/NormKD ``mdistiller/engine/cfg.py``): temperature = ``NormKD.TEMPERATURE_NORM`` (2.0),
    ce_weight = ``NormKD.LOSS.CE_WEIGHT`` (0.1), kd_weight = ``NormKD.LOSS.KD_WEIGHT`` (0.9).
    """
    hp = m.hparams
    normkd = normkd_loss(student_logits, teacher_logits, hp["temperature"])
    return {
        "ce": hp["ce_weight"] * _cross_entropy(student_logits, targets),
        "normkd": m.warmup_factor(epoch) * hp["kd_weight"] * normkd,
    }


def _dkd_terms(m, student_logits, teacher_logits, targets, epoch):
    """DKD (Zhao et al. 2022), mdistiller: CE + min(epoch / 20, 1) (alpha TCKD + beta NCKD), T = 4.

    mdistiller config: alpha = ``DKD.ALPHA`` (1), beta = ``DKD.BETA`` (8), ce_weight = ``DKD.CE_WEIGHT`` (1),
    temperature = ``DKD.T`` (4), warmup = ``DKD.WARMUP`` (20).
    """
    hp = m.hparams
    warm = m.warmup_factor(epoch)
    tckd = dkd_loss(student_logits, teacher_logits, targets, hp["alpha"], 0.0, hp["temperature"])
    nckd = dkd_loss(student_logits, teacher_logits, targets, 0.0, hp["beta"], hp["temperature"])
    return {
        "ce": hp["ce_weight"] * _cross_entropy(student_logits, targets),
        "tckd": warm * tckd,
        "nckd": warm * nckd,
    }


def _ctkd_terms(m, student_logits, teacher_logits, targets, epoch):
    """CTKD (Li et al. 2023): 0.1 CE + 0.9 tau^2 KL with tau learnable behind a gradient-reversal layer.

    Official flags: ``-r 0.1 -a 0.9``, t_min = ``--t_start`` (1), t_span = ``--t_end`` (20), decay_epochs =
    ``--decay_loops`` (10); temperature is the initial tau (theta = 1 gives 15.62).
    """
    hp = m.hparams
    temperature = m.temperature_module(epoch)
    m.last_temperatures = temperature.detach()
    kd = kd_loss(student_logits, teacher_logits, temperature)
    return {
        "ce": hp["ce_weight"] * _cross_entropy(student_logits, targets),
        "kd": m.warmup_factor(epoch) * hp["kd_weight"] * kd,
    }


# name: (terms function, term names, defaults, needs_teacher / uses_temperature)
_CTKD_INITIAL_TEMPERATURE = 1.0 + 20.0 / (1.0 + math.exp(-1.0))  # t_min + t_span sigmoid(theta = 1) = 15.62
_RECIPES = {
    "ce": (_ce_terms, ("ce",), {"ce_weight": 1.0}, False),
    "label_smoothing": (_label_smoothing_terms, ("ce",), {"smoothing": 0.1, "ce_weight": 1.0}, False),
    "kd": (_kd_terms, ("ce", "kd"), {"temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9, "warmup": 0}, True),
    "ttm": (_ttm_terms, ("ce", "ttm"), {"temperature": 10.0, "ce_weight": 1.0, "beta": 100.0, "warmup": 0}, True),
    "wttm": (_wttm_terms, ("ce", "wttm"), {"temperature": 10.0, "ce_weight": 1.0, "beta": 3.0, "warmup": 0}, True),
    "dtkd": (
        _dtkd_terms,
        ("ce", "dtkd", "kd"),
        {"temperature": 4.0, "ce_weight": 1.0, "alpha": 3.0, "beta": 1.0, "warmup": 20, "detach": False},
        True,
    ),
    "lskd": (_lskd_terms, ("ce", "lskd"), {"temperature": 2.0, "ce_weight": 0.1, "kd_weight": 9.0, "warmup": 0}, True),
    "dkd": (
        _dkd_terms,
        ("ce", "tckd", "nckd"),
        {"temperature": 4.0, "ce_weight": 1.0, "alpha": 1.0, "beta": 8.0, "warmup": 20},
        True,
    ),
    "ctkd": (
        _ctkd_terms,
        ("ce", "kd"),
        {
            "temperature": _CTKD_INITIAL_TEMPERATURE,
            "ce_weight": 0.1,
            "kd_weight": 0.9,
            "t_min": 1.0,
            "t_span": 20.0,
            "decay_epochs": 10,
            "warmup": 0,
        },
        True,
    ),
    "normkd": (_normkd_terms, ("ce", "normkd"), {"temperature": 2.0, "ce_weight": 0.1, "kd_weight": 0.9, "warmup": 0},
               True),
}


def list_methods() -> dict:
    """Every recipe name -> a dict of its default hyper-parameters (see the module docstring for sources).

    Example: ``list_methods()["kd"] == {"temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9, "warmup": 0}``.
    CTKD's ``temperature`` is the initial value of its learnable temperature.
    """
    return {name: dict(defaults) for name, (_, _, defaults, _) in _RECIPES.items()}


def get_method(name: str, **overrides) -> Method:
    """The recipe ``name`` with its paper's defaults, updated by ``overrides`` (see :func:`list_methods`).

    Examples: ``get_method("kd", temperature=8)``, ``get_method("ttm", gamma=0.2)`` (= temperature 5),
    ``get_method("dkd", warmup=2)``, ``get_method("dtkd", detach=True)``.
    Raises ValueError for an unknown name or keyword (listing the known ones) and for invalid values.
    """
    if name not in _RECIPES:
        raise ValueError(f"name must be one of {sorted(_RECIPES)}, got {name!r}")
    terms, term_names, defaults, needs_teacher = _RECIPES[name]
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
        hparams[key] = _VALIDATORS[key](value, key)
    if name == "ctkd" and not hparams["t_min"] < hparams["temperature"] < hparams["t_min"] + hparams["t_span"]:
        raise ValueError(
            f"temperature (CTKD's initial temperature) must lie in (t_min, t_min + t_span) = "
            f"({hparams['t_min']}, {hparams['t_min'] + hparams['t_span']}), got {hparams['temperature']}"
        )
    return Method(name, hparams, terms, term_names, needs_teacher, uses_temperature)


# ----------------------------------------------------------------------------------------------------------
# Validation of overrides.


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
