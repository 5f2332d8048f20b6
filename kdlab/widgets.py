"""Interactive explorers for the notebooks: sliders (ipywidgets) that redraw a matplotlib figure.

Every builder follows the same contract, so a notebook cell is one call and a unit test is a few lines:

    explorer = temperature_explorer(teacher_logits)     # an ipywidgets.VBox, ready to display
    explorer.sliders["temperature"].value = 100.0         # moving a slider redraws ...
    explorer.state["entropy"]                            # ... and records what was computed
    explorer.figure                                      # the matplotlib Figure that was drawn

- ``.sliders``: dict name -> slider; each slider's ``description`` is its name, so a person (or a browser
  test) finds it by the label shown next to it.
- ``.figure``: one ``matplotlib.figure.Figure``, created without pyplot (no global state) and redrawn in
  place on every change.
- ``.state``: dict of the numbers behind the last drawing (tensors in float64, floats, lists).
- ``.output``: the ``ipywidgets.Output`` holding the rendered PNG of the figure; a redraw replaces it.

How to add a builder: validate the inputs, make the sliders, write a ``draw(figure, **slider_values)``
function that clears the figure, draws it and returns the state dict, and return
``_explorer(sliders, draw, figsize)``. All the maths comes from ``kdlab.temperature``/``kdlab.losses``.
"""
from __future__ import annotations

import base64
import io
import math

import ipywidgets
import torch
from matplotlib.figure import Figure

from kdlab.losses import dtkd_temperatures, kd_loss, lskd_loss, standardize, ttm_loss
from kdlab.temperature import entropy, power_sum, power_transform, renyi_entropy, sharpness, tempered_softmax

__all__ = ["temperature_explorer", "power_transform_explorer", "renyi_explorer", "dtkd_explorer",
           "entropy_matching_explorer", "affine_invariance_explorer"]

_HIGHLIGHT = "#D55E00"  # the target (or arg-max) class
_BAR = "#0072B2"
_MUTED = "#999999"


# ----------------------------------------------------------------------------------------------------------
# Builders.

def temperature_explorer(teacher_logits, images=None, class_names=None, targets=None):
    """Slide the temperature (log scale, 0.1 to 100) and watch one teacher distribution soften.

    Draws, for the sample chosen with the "sample" slider: its image (when ``images`` is given), the
    tempered distribution p_T = softmax(v / T) with its entropy H(p_T) in the title, and the "dark
    knowledge": how the probability left for the *other* classes is shared among them,
    p_T,j / sum_{k != y} p_T,k = softmax(v_{-y} / T)_j, sorted from largest to smallest. The ranking never
    changes with T (softmax is monotone); T only decides how much of it the student gets to see.

    Args:
        teacher_logits: tensor (N, K) of teacher logits.
        images: optional tensor (N, C, H, W) or (N, H, W) shown next to the distribution.
        class_names: optional list of K names (default "0" ... "K-1").
        targets: optional tensor (N,) of labels; the highlighted class is the label, else the teacher's arg-max.

    Returns an ipywidgets.VBox with ``.sliders`` ("temperature", "sample"), ``.figure``, ``.output`` and
    ``.state``: "temperature", "sample", "target", "probs" (K,), "entropy", "max_entropy" (log K),
    "ranking" (class indices of the non-target classes, most probable first), "dark_knowledge" (their shares,
    same order) and "dark_mass" (1 - p_T of the target).
    """
    logits = _check_logits(teacher_logits, "teacher_logits")
    num_samples, num_classes = logits.shape
    names = _check_class_names(class_names, num_classes)
    pictures = _check_images(images, num_samples)
    labels = _check_targets(targets, num_samples, num_classes)
    sliders = {
        "temperature": _temperature_slider("temperature", 1.0, -1, 2),
        "sample": _sample_slider(num_samples),
    }

    def draw(figure, temperature, sample):
        row = logits[sample]
        target = int(labels[sample]) if labels is not None else int(row.argmax())
        probs = tempered_softmax(row, temperature)
        others = [k for k in range(num_classes) if k != target]
        shares = tempered_softmax(row[others], temperature)  # = p_T,j / (1 - p_T,target), computed stably
        order = torch.argsort(shares, descending=True, stable=True)
        ranking = [others[int(i)] for i in order]
        state = {
            "temperature": float(temperature),
            "sample": int(sample),
            "target": target,
            "probs": probs,
            "entropy": float(entropy(probs)),
            "max_entropy": math.log(num_classes),
            "ranking": ranking,
            "dark_knowledge": shares[order],
            "dark_mass": float(1.0 - probs[target]),
        }
        axes = _panels(figure, 3, widths=[1, 2.4, 2.4]) if pictures is not None else _panels(figure, 2)
        if pictures is not None:
            _show_image(axes[0], pictures[sample], f"sample {sample}")
            axes = axes[1:]
        colors = [_HIGHLIGHT if k == target else _BAR for k in range(num_classes)]
        axes[0].bar(range(num_classes), probs.tolist(), color=colors)
        axes[0].set_xticks(range(num_classes), names)
        axes[0].set_ylim(0, 1.02)
        axes[0].set_ylabel("probability")
        axes[0].set_title(
            f"T = {temperature:.3g}:  H = {state['entropy']:.3f} nats (max {state['max_entropy']:.2f})", fontsize=10
        )
        axes[1].bar(range(num_classes - 1), state["dark_knowledge"].tolist(), color=_MUTED)
        axes[1].set_xticks(range(num_classes - 1), [names[k] for k in ranking])
        axes[1].set_ylim(0, 1.02)
        axes[1].set_ylabel("share of the non-target mass")
        axes[1].set_title(f"dark knowledge: {state['dark_mass']:.2g} of the mass, ranked", fontsize=10)
        return state

    return _explorer(sliders, draw, figsize=(10, 3.2) if pictures is not None else (8.5, 3.2))


def power_transform_explorer(teacher_logits, class_names=None):
    """Slide gamma and check that the power transform is temperature scaling with T = 1 / gamma.

    TTM (Zheng & Yang 2024, eqs. 6-9): raising p = softmax(v) to the power gamma and renormalising,
    p_hat_i = p_i^gamma / sum_j p_j^gamma, gives exactly softmax(gamma * v) = softmax(v / T). The figure shows
    p, the power-transformed p as bars and softmax(v / T) as dots on top of them, for the sample chosen with
    the "sample" slider; gamma runs from 0.01 to 10 on a log scale (T from 100 to 0.1).

    Args:
        teacher_logits: tensor (N, K) (or (K,) for a single sample).
        class_names: optional list of K names.

    Returns an ipywidgets.VBox with ``.sliders`` ("gamma", "sample"), ``.figure``, ``.output`` and ``.state``:
    "gamma", "temperature" (1 / gamma), "sample", "probs" (p), "power_transformed", "tempered" (softmax(v / T)),
    "max_abs_difference" between the last two, and "power_sum" U_gamma(p) = sum_i p_i^gamma (WTTM's weight).
    """
    logits = _check_logits(teacher_logits, "teacher_logits")
    num_samples, num_classes = logits.shape
    names = _check_class_names(class_names, num_classes)
    sliders = {
        "gamma": _temperature_slider("gamma", 1.0, -2, 1),
        "sample": _sample_slider(num_samples),
    }

    def draw(figure, gamma, sample):
        row = logits[sample]
        probs = torch.softmax(row, dim=-1)
        transformed = power_transform(probs, gamma)
        tempered = tempered_softmax(row, 1.0 / gamma)
        state = {
            "gamma": float(gamma),
            "temperature": 1.0 / float(gamma),
            "sample": int(sample),
            "probs": probs,
            "power_transformed": transformed,
            "tempered": tempered,
            "max_abs_difference": float((transformed - tempered).abs().max()),
            "power_sum": float(power_sum(probs, gamma)),
        }
        left, right = _panels(figure, 2)
        left.bar(range(num_classes), probs.tolist(), color=_MUTED)
        left.set_title("p = softmax(v)", fontsize=10)
        right.bar(range(num_classes), transformed.tolist(), color=_BAR, label=r"$p^\gamma / \sum_j p_j^\gamma$")
        right.plot(range(num_classes), tempered.tolist(), "o", color=_HIGHLIGHT, label=r"softmax$(v / T)$")
        right.legend(loc="best", fontsize=8)
        right.set_title(
            f"gamma = {gamma:.3g} (T = {1 / gamma:.3g}): max |difference| = {state['max_abs_difference']:.1e}",
            fontsize=10,
        )
        for ax in (left, right):
            ax.set_xticks(range(num_classes), names)
            ax.set_ylim(0, 1.02)
        left.set_ylabel("probability")
        return state

    return _explorer(sliders, draw, figsize=(9, 3.2))


def renyi_explorer(student_logits, teacher_logits, class_names=None):
    """Slide the temperature and take TTM's identity (Zheng & Yang 2024, eq. 15) apart, term by term.

        D(p^t_T || q) = T * D(p^t_T || q_T) - (T - 1) * H_{1/T}(q) + (T - 1) * H(p^t_T)

    Left: the four terms for the chosen sample (TTM's loss on the left-hand side, then KD's KL scaled by T,
    the Renyi-entropy term of the student and the teacher's entropy, which is constant for the student) and
    their sum. Right: the gradients with respect to the student logits, KD (with Hinton's T^2) =
    T * (q_T - p^t_T) against TTM = q - p^t_T (eqs. 20-21); their difference is the pull of the Renyi term.

    Args:
        student_logits, teacher_logits: tensors (N, K) (or (K,)).
        class_names: optional list of K names.

    Returns an ipywidgets.VBox with ``.sliders`` ("temperature" 1 to 100, "sample"), ``.figure``,
    ``.output`` and ``.state``: "temperature", "sample", "ttm" (left-hand side), "kd_term", "renyi_term",
    "teacher_term", "right_hand_side", "residual" (lhs - rhs), "kd_gradient", "ttm_gradient" (both (K,)).
    """
    student = _check_logits(student_logits, "student_logits")
    teacher = _check_logits(teacher_logits, "teacher_logits")
    if student.shape != teacher.shape:
        raise ValueError(
            "student_logits and teacher_logits must have the same shape, got "
            f"{tuple(student.shape)} and {tuple(teacher.shape)}"
        )
    num_samples, num_classes = teacher.shape
    names = _check_class_names(class_names, num_classes)
    sliders = {
        "temperature": _temperature_slider("temperature", 4.0, 0, 2),
        "sample": _sample_slider(num_samples),
    }

    def draw(figure, temperature, sample):
        terms = _eq15_terms(student[sample], teacher[sample], temperature)
        left, right = _panels(figure, 2, widths=[1.2, 1])
        labels = [r"$D(p^t_T\|q)$", r"$T\,D(p^t_T\|q_T)$", r"$-(T-1)H_{1/T}(q)$", r"$(T-1)H(p^t_T)$", "sum"]
        values = [terms["ttm"], terms["kd_term"], terms["renyi_term"], terms["teacher_term"], terms["right_hand_side"]]
        left.bar(range(5), values, color=[_HIGHLIGHT, _BAR, _BAR, _BAR, _MUTED])
        left.axhline(0, color="black", linewidth=0.8)
        left.set_xticks(range(5), labels, fontsize=8)
        left.set_ylabel("nats")
        left.set_title(f"eq. 15 at T = {temperature:.3g}: residual {terms['residual']:.1e}", fontsize=10)
        width = 0.4
        positions = torch.arange(num_classes, dtype=torch.float64)
        right.bar((positions - width / 2).tolist(), terms["kd_gradient"].tolist(), width, color=_BAR,
                  label=r"KD: $T(q_T - p^t_T)$")
        right.bar((positions + width / 2).tolist(), terms["ttm_gradient"].tolist(), width, color=_HIGHLIGHT,
                  label=r"TTM: $q - p^t_T$")
        right.axhline(0, color="black", linewidth=0.8)
        right.set_xticks(range(num_classes), names)
        right.legend(fontsize=8)
        right.set_title("gradient w.r.t. the student logits", fontsize=10)
        return {"temperature": float(temperature), "sample": int(sample), **terms}

    return _explorer(sliders, draw, figsize=(10, 3.4))


def dtkd_explorer(teacher_logits, student_logits, temperature=4.0, class_names=None):
    """Scale the teacher's and the student's logits and watch the per-sample temperatures DTKD picks.

    DTKD (Wei & Bai 2024) measures a logit vector's "sharpness" as S(z) = log sum_i exp(z_i) (eq. 2) and
    gives each sample its own pair of temperatures tau + delta (teacher) and tau - delta (student) that
    should make the two sharpnesses equal (eq. 3). Its closed form (eqs. 4-5, ``kdlab.dtkd_temperatures``)
    uses the signed maximum logits x = max v, y = max z:

        T_t = 2x / (x + y) * tau,   T_s = 2y / (x + y) * tau     (T_t + T_s = 2 tau, T_t / T_s = x / y).

    Sliders multiply the teacher logits ("teacher scale") and the student logits ("student scale"), add a
    constant to the student logits ("student shift": softmax does not change, the sharpness does), set the
    reference temperature "tau" and pick the "sample". Panels, for the chosen sample:
    1. the sharpness of teacher and student at tau (plain KD), at DTKD's temperatures, and at the delta that
       really minimises eq. 3's gap (a grid search over -tau < delta < tau, see the author's errata: the
       closed form does not minimise it in general);
    2. the tempered distributions softmax(v / T_t) and softmax(z / T_s) that DTKD's KL compares;
    3. the histograms of T_t and T_s over all samples, the chosen sample marked.
    If x <= 0 or y <= 0 the closed form breaks down (kdlab then uses tau for both, see
    ``kdlab.dtkd_temperatures``); the state's "degenerate" flag says so.

    Args:
        teacher_logits, student_logits: tensors (N, K) (or (K,) for one sample).
        temperature: the initial reference temperature tau (slider range 0.5 to 20).
        class_names: optional list of K names.

    Returns an ipywidgets.VBox with ``.sliders`` ("teacher scale", "student scale", "student shift", "tau",
    "sample"), ``.figure``, ``.output`` and ``.state``: the slider values ("teacher_scale", "student_scale",
    "student_shift", "tau", "sample"), "teacher_max" (x) and "student_max" (y), "degenerate",
    "teacher_temperature" and "student_temperature" (the chosen sample's T_t, T_s), "teacher_temperatures"
    and "student_temperatures" ((N,) for all samples), "teacher_sharpness_before", "student_sharpness_before",
    "gap_before" (both at tau), "teacher_sharpness_after", "student_sharpness_after", "gap_after" (at T_t,
    T_s), "optimal_delta" and "optimal_gap" (eq. 3's minimum on the grid), "teacher_probs", "student_probs"
    (K,) at T_t and T_s.
    """
    teacher = _check_logits(teacher_logits, "teacher_logits")
    student = _check_logits(student_logits, "student_logits")
    if student.shape != teacher.shape:
        raise ValueError(
            "student_logits and teacher_logits must have the same shape, got "
            f"{tuple(student.shape)} and {tuple(teacher.shape)}"
        )
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0.5 <= temperature <= 20:
        raise ValueError(f"temperature must be a number in [0.5, 20] (the tau slider's range), got {temperature!r}")
    num_samples, num_classes = teacher.shape
    names = _check_class_names(class_names, num_classes)
    sliders = {
        "teacher scale": _temperature_slider("teacher scale", 1.0, -2, 2),
        "student scale": _temperature_slider("student scale", 1.0, -2, 2),
        "student shift": ipywidgets.FloatSlider(
            value=0.0, min=-20.0, max=20.0, step=0.5, description="student shift", continuous_update=True,
            style={"description_width": "initial"},
        ),
        "tau": _temperature_slider("tau", float(temperature), math.log10(0.5), math.log10(20)),
        "sample": _sample_slider(num_samples),
    }

    def draw(figure, **values):
        tau, sample = float(values["tau"]), int(values["sample"])
        v = teacher * values["teacher scale"]
        z = student * values["student scale"] + values["student shift"]
        teacher_ts, student_ts = dtkd_temperatures(z, v, tau)
        teacher_t, student_t = float(teacher_ts[sample]), float(student_ts[sample])
        row_v, row_z = v[sample], z[sample]
        before = (float(sharpness(row_v / tau)), float(sharpness(row_z / tau)))
        after = (float(sharpness(row_v / teacher_t)), float(sharpness(row_z / student_t)))
        best_delta, best_gap = _eq3_minimum(row_v, row_z, tau)
        best = (float(sharpness(row_v / (tau + best_delta))), float(sharpness(row_z / (tau - best_delta))))
        state = {
            "teacher_scale": float(values["teacher scale"]),
            "student_scale": float(values["student scale"]),
            "student_shift": float(values["student shift"]),
            "tau": tau,
            "sample": sample,
            "teacher_max": float(row_v.max()),
            "student_max": float(row_z.max()),
            "degenerate": bool(row_v.max() <= 0 or row_z.max() <= 0),
            "teacher_temperature": teacher_t,
            "student_temperature": student_t,
            "teacher_temperatures": teacher_ts.reshape(-1),
            "student_temperatures": student_ts.reshape(-1),
            "teacher_sharpness_before": before[0],
            "student_sharpness_before": before[1],
            "gap_before": abs(before[0] - before[1]),
            "teacher_sharpness_after": after[0],
            "student_sharpness_after": after[1],
            "gap_after": abs(after[0] - after[1]),
            "optimal_delta": best_delta,
            "optimal_gap": best_gap,
            "teacher_probs": tempered_softmax(row_v, teacher_t),
            "student_probs": tempered_softmax(row_z, student_t),
        }
        left, middle, right = _panels(figure, 3, widths=[1.1, 1.3, 1])
        # 1. Sharpness: teacher and student side by side, three settings.
        width = 0.38
        groups = [("KD: both at tau", before), ("DTKD eqs. 4-5", after), ("eq. 3 minimum", best)]
        for index, color, who in ((0, _MUTED, "teacher"), (1, _BAR, "student")):
            offset = (index - 0.5) * width
            left.bar([g + offset for g in range(3)], [pair[index] for _, pair in groups], width, color=color,
                     label=who)
        left.axhline(0, color="black", linewidth=0.8)
        left.set_xticks(range(3), [label for label, _ in groups], fontsize=8)
        left.set_ylabel("sharpness  log-sum-exp")
        left.legend(fontsize=8)
        left.set_title(
            f"gap {state['gap_before']:.3g} -> {state['gap_after']:.3g} (min {best_gap:.2g})", fontsize=10
        )
        # 2. The two distributions DTKD's KL compares.
        positions = torch.arange(num_classes, dtype=torch.float64)
        middle.bar((positions - width / 2).tolist(), state["teacher_probs"].tolist(), width, color=_MUTED,
                   label=f"teacher, T_t = {teacher_t:.3g}")
        middle.bar((positions + width / 2).tolist(), state["student_probs"].tolist(), width, color=_BAR,
                   label=f"student, T_s = {student_t:.3g}")
        middle.set_xticks(range(num_classes), names)
        middle.set_ylim(0, 1.02)
        middle.set_ylabel("probability")
        middle.legend(fontsize=8)
        flag = "  (x <= 0 or y <= 0: both at tau)" if state["degenerate"] else ""
        middle.set_title(f"sample {sample}: x = {state['teacher_max']:.3g}, y = {state['student_max']:.3g}{flag}",
                         fontsize=10)
        # 3. Where this sample sits among all samples' temperatures.
        edges = torch.linspace(0, 2 * tau, 41).tolist()
        right.hist(state["teacher_temperatures"].tolist(), bins=edges, color=_MUTED, alpha=0.7, label="T_t")
        right.hist(state["student_temperatures"].tolist(), bins=edges, color=_BAR, alpha=0.7, label="T_s")
        right.axvline(tau, color="black", linestyle=":", linewidth=1)
        right.axvline(teacher_t, color=_MUTED, linewidth=2)
        right.axvline(student_t, color=_HIGHLIGHT, linewidth=2)
        right.set_xlabel("temperature (0 to 2 tau)")
        right.set_ylabel("samples")
        right.legend(fontsize=8)
        right.set_title(f"all {num_samples} samples (line: sample {sample})", fontsize=10)
        return state

    return _explorer(sliders, draw, figsize=(12, 3.6))


def _eq3_minimum(teacher_row, student_row, tau, steps=4001):
    """DTKD's eq. 3 by brute force: the delta in (-tau, tau) with the smallest |S(v / (tau + d)) - S(z / (tau - d))|.

    A grid of ``steps`` deltas (float64); returns (delta, gap) at the grid minimum.
    """
    deltas = torch.linspace(-tau, tau, steps + 2, dtype=torch.float64)[1:-1].unsqueeze(-1)
    gaps = (sharpness(teacher_row / (tau + deltas)) - sharpness(student_row / (tau - deltas))).abs()
    best = int(gaps.argmin())
    return float(deltas[best]), float(gaps[best])


def entropy_matching_explorer(teacher_logits, top=20):
    """Slide the temperature and compare the teacher with label smoothing of the same entropy (Frank & Davis,
    Fig. 4).

    Bars: the average over samples of the sorted tempered teacher distribution softmax(v / T) (colour) and the
    label-smoothing target [1 - eps + eps / K, eps / K, ...] whose entropy equals the teacher's mean entropy at
    T (grey; eps from ``kdlab.smoothing_for_entropy``), over the ``top`` largest classes. As T grows both flatten;
    what label smoothing can never have is the *shape* of the teacher's tail: which wrong classes it ranks high.

    Args:
        teacher_logits: tensor (N, K) of teacher logits, e.g. of the transfer set.
        top: how many of the sorted classes to show (Frank & Davis show 20).

    Returns an ipywidgets.VBox with ``.sliders`` ("temperature", 0.1 to 100), ``.figure``, ``.output`` and
    ``.state``: "temperature", "teacher_entropy" (mean over samples), "smoothing" (eps), "teacher_sorted" and
    "smoothing_sorted" (the drawn bars), "teacher_confidence" and "smoothing_confidence" (their first bars), and
    "tail_gap" (total variation between the two *sorted* distributions: how differently they spread their mass
    over the ranks. Sorting discards which class is which, so it says nothing about class identity: a teacher
    ranking other classes second has the same sorted profile).
    """
    from kdlab.studies import entropy_matched_smoothing, label_smoothing_distribution, sorted_distribution

    logits = _check_logits(teacher_logits, "teacher_logits")
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ValueError(f"top must be an int >= 1, got {top!r}")
    num_classes = logits.shape[1]
    shown = min(top, num_classes)
    sliders = {"temperature": _temperature_slider("temperature", 4.0, -1, 2)}

    def draw(figure, temperature):
        row = entropy_matched_smoothing(logits, [temperature]).iloc[0]
        teacher = sorted_distribution(tempered_softmax(logits, temperature))
        smooth = label_smoothing_distribution(num_classes, float(row["smoothing"]))
        state = {
            "temperature": float(temperature),
            "teacher_entropy": float(row["teacher_entropy"]),
            "smoothing": float(row["smoothing"]),
            "teacher_sorted": teacher[:shown],
            "smoothing_sorted": smooth[:shown],
            "teacher_confidence": float(teacher[0]),
            "smoothing_confidence": float(smooth[0]),
            "tail_gap": 0.5 * float((teacher - smooth).abs().sum()),
        }
        (ax,) = _panels(figure, 1)
        positions = torch.arange(1, shown + 1, dtype=torch.float64)
        ax.bar((positions - 0.2).tolist(), state["teacher_sorted"].tolist(), 0.4, color=_BAR,
               label="teacher: mean sorted softmax(v / T)")
        ax.bar((positions + 0.2).tolist(), state["smoothing_sorted"].tolist(), 0.4, color=_MUTED,
               label=f"label smoothing, eps = {state['smoothing']:.3f}")
        ax.set_xticks(positions.tolist(), [str(k) for k in range(1, shown + 1)])
        ax.set_xlabel("rank of the class (1 = most probable)")
        ax.set_ylabel("probability")
        ax.set_ylim(0, 1.02)
        ax.legend(loc="upper right", fontsize=8)
        ax.set_title(f"T = {temperature:.3g}: same entropy H = {state['teacher_entropy']:.3f} nats "
                     f"(max {math.log(num_classes):.2f});\nsorted profiles differ by TV = {state['tail_gap']:.3f} (shape over ranks, "
                     f"not class identity)", fontsize=10)
        return state

    return _explorer(sliders, draw, figsize=(7.5, 3.4))


# ----------------------------------------------------------------------------------------------------------
# The shared machinery: every builder ends with ``return _explorer(sliders, draw, figsize)``.

def affine_invariance_explorer(student_logits, teacher_logits, temperature=2.0, class_names=None):
    """Scale and shift the student's logits: KD's loss moves, LS-KD's does not.

    LS-KD (Sun et al. 2024) tempers the z-scored logits Z(x) = (x - mean(x)) / std(x) (``kdlab.standardize``),
    and Z(a z + b) = Z(z) for every a > 0 and b: the student is free to choose the scale and the shift of its
    logits. KD (``kd_loss``) at the same temperature sees a z + b as it is. The sliders "scale" (a, log scale
    0.1 to 10) and "shift" (b, -20 to 20) transform the student's logits of the sample chosen with "sample";
    the panels show a z + b, its z-score beside the z-score of z, and both losses for that sample.

    Args:
        student_logits, teacher_logits: tensors (N, K) (or (K,)). temperature: the shared temperature of both
            losses (LS-KD's base tau; default 2, LS-KD's CIFAR setting). class_names: optional K names.

    Returns an ipywidgets.VBox with ``.sliders`` ("scale", "shift", "sample"), ``.figure``, ``.output`` and
    ``.state``: "scale", "shift", "sample", "transformed" (a z + b), "zscore" (its z-score), "zscore_change"
    (max |Z(a z + b) - Z(z)|), "kd" and "lskd" (the losses of the transformed logits), "kd_untransformed"
    and "lskd_untransformed" (a = 1, b = 0).
    """
    student = _check_logits(student_logits, "student_logits")
    teacher = _check_logits(teacher_logits, "teacher_logits")
    if student.shape != teacher.shape:
        raise ValueError(f"student_logits and teacher_logits must have the same shape, got "
                         f"{tuple(student.shape)} and {tuple(teacher.shape)}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(temperature) \
            or temperature <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    num_samples, num_classes = student.shape
    names = _check_class_names(class_names, num_classes)
    sliders = {
        "scale": _temperature_slider("scale", 1.0, -1, 1),
        "shift": ipywidgets.FloatSlider(value=0.0, min=-20.0, max=20.0, step=0.5, description="shift",
                                        continuous_update=True, style={"description_width": "initial"}),
        "sample": _sample_slider(num_samples),
    }

    def draw(figure, scale, shift, sample):
        row, target = student[sample:sample + 1], teacher[sample:sample + 1]
        transformed = scale * row + shift
        zscore, original = standardize(transformed), standardize(row)
        state = {
            "scale": float(scale), "shift": float(shift), "sample": int(sample),
            "transformed": transformed[0], "zscore": zscore[0],
            "zscore_change": float((zscore - original).abs().max()),
            "kd": float(kd_loss(transformed, target, temperature)),
            "lskd": float(lskd_loss(transformed, target, temperature)),
            "kd_untransformed": float(kd_loss(row, target, temperature)),
            "lskd_untransformed": float(lskd_loss(row, target, temperature)),
        }
        left, middle, right = _panels(figure, 3, widths=[1.2, 1.2, 0.8])
        left.bar(range(num_classes), state["transformed"].tolist(), color=_BAR)
        left.set_title(f"student logits a z + b (a = {scale:.3g}, b = {shift:+.3g})", fontsize=10)
        middle.bar(range(num_classes), state["zscore"].tolist(), color=_BAR, label="Z(a z + b)")
        middle.plot(range(num_classes), original[0].tolist(), "o", color=_HIGHLIGHT, label="Z(z)")
        middle.legend(loc="best", fontsize=8)
        middle.set_title(f"z-scores: max |change| = {state['zscore_change']:.1e}", fontsize=10)
        for ax in (left, middle):
            ax.set_xticks(range(num_classes), names)
            ax.axhline(0, color=_MUTED, linewidth=0.8)
        ratios = [state["kd"] / state["kd_untransformed"], state["lskd"] / state["lskd_untransformed"]]
        right.bar([0, 1], ratios, color=[_MUTED, _BAR])
        right.set_xticks([0, 1], [f"KD\n{state['kd']:.3g}", f"LS-KD\n{state['lskd']:.3g}"])
        right.axhline(1, color=_HIGHLIGHT, linewidth=0.8)
        right.set_yscale("log")
        right.set_title(f"loss / loss at a=1, b=0 (T = {temperature:g})", fontsize=10)
        return state

    return _explorer(sliders, draw, figsize=(11, 3.2))


def _explorer(sliders, draw, figsize):
    """Assemble the VBox every builder returns and draw it once.

    ``draw(figure, **values)`` must clear and redraw ``figure`` and return the state dict. On every slider
    change the figure is redrawn, rendered to PNG and put into the Output widget (replacing the old image),
    so the same code works in a browser, under nbclient and in pytest (no kernel needed).
    """
    figure = Figure(figsize=figsize)  # fixed margins (see _panels): a layout engine would double the redraw time
    output = ipywidgets.Output()
    box = ipywidgets.VBox([ipywidgets.HBox(list(sliders.values())), output])
    box.sliders = sliders
    box.figure = figure
    box.output = output
    box.state = {}

    def redraw(change=None):
        figure.clear()
        state = draw(figure, **{name: slider.value for name, slider in sliders.items()})
        box.state.clear()
        box.state.update(state)
        output.outputs = (_png_output(figure),)

    for slider in sliders.values():
        slider.observe(redraw, names="value")
    redraw()
    return box


def _png_output(figure):
    """A Jupyter display_data message holding the figure as PNG (what ``display(figure)`` would send)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    return {
        "output_type": "display_data",
        "data": {"image/png": base64.b64encode(buffer.getvalue()).decode("ascii"), "text/plain": repr(figure)},
        "metadata": {},
    }


def _temperature_slider(name, value, min_exponent, max_exponent):
    """A log-scale slider from 10**min_exponent to 10**max_exponent (a temperature or a gamma)."""
    return ipywidgets.FloatLogSlider(
        value=value, base=10, min=min_exponent, max=max_exponent, step=0.01, description=name,
        continuous_update=True, readout_format=".3g", style={"description_width": "initial"},
    )


def _sample_slider(num_samples):
    return ipywidgets.IntSlider(
        value=0, min=0, max=num_samples - 1, step=1, description="sample",
        continuous_update=False, style={"description_width": "initial"},
    )


def _panels(figure, count, widths=None):
    """One row of ``count`` axes with fixed margins that leave room for titles and tick labels."""
    grid = figure.subplots(
        1, count, width_ratios=widths, squeeze=False,
        gridspec_kw={"left": 0.07, "right": 0.99, "bottom": 0.16, "top": 0.87, "wspace": 0.28},
    )
    return list(grid[0])


def _show_image(ax, image, title):
    picture = image[0] if image.dim() == 3 and image.shape[0] == 1 else image
    if picture.dim() == 3:  # (C, H, W) colour: rescale to [0, 1] for imshow
        picture = picture.permute(1, 2, 0)
        picture = (picture - picture.min()) / (picture.max() - picture.min()).clamp_min(1e-12)
    ax.imshow(picture.numpy(), cmap="gray")
    ax.set_title(title, fontsize=10)
    ax.axis("off")


def _eq15_terms(student_logits, teacher_logits, temperature):
    """The terms of TTM's eq. 15 and the KD/TTM gradients for one sample (1-D logits), in float64."""
    student = student_logits.to(torch.float64)
    teacher_tempered = tempered_softmax(teacher_logits.to(torch.float64), temperature)
    q = torch.softmax(student, dim=-1)
    q_tempered = tempered_softmax(student, temperature)
    teacher = teacher_logits.to(torch.float64)
    ttm = float(ttm_loss(student[None], teacher[None], temperature))  # D(p^t_T || q)
    kd_term = float(kd_loss(student[None], teacher[None], temperature)) / temperature  # T D(p^t_T || q_T)
    renyi_term = -(temperature - 1.0) * float(renyi_entropy(q, 1.0 / temperature))
    teacher_term = (temperature - 1.0) * float(entropy(teacher_tempered))
    right_hand_side = kd_term + renyi_term + teacher_term
    return {
        "ttm": ttm,
        "kd_term": kd_term,
        "renyi_term": renyi_term,
        "teacher_term": teacher_term,
        "right_hand_side": right_hand_side,
        "residual": ttm - right_hand_side,
        "kd_gradient": temperature * (q_tempered - teacher_tempered),
        "ttm_gradient": q - teacher_tempered,
    }


# ----------------------------------------------------------------------------------------------------------
# Input validation (each error names the argument and what was expected).

def _check_logits(logits, name):
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, K), got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {logits.dtype}")
    if logits.dim() == 1:
        logits = logits.unsqueeze(0)
    if logits.dim() != 2 or logits.shape[0] < 1 or logits.shape[1] < 2:
        raise ValueError(f"{name} must have shape (N, K) with N >= 1 and K >= 2, got {tuple(logits.shape)}")
    if not bool(torch.isfinite(logits).all()):
        raise ValueError(f"{name} must be finite")
    return logits.detach().to("cpu", torch.float64)


def _check_class_names(class_names, num_classes):
    if class_names is None:
        return [str(k) for k in range(num_classes)]
    names = [str(name) for name in class_names]
    if len(names) != num_classes:
        raise ValueError(f"class_names must hold {num_classes} names (one per class), got {len(names)}")
    return names


def _check_images(images, num_samples):
    if images is None:
        return None
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor (N, C, H, W) or (N, H, W), got {type(images).__name__}")
    if images.dim() not in (3, 4) or images.shape[0] != num_samples:
        raise ValueError(
            f"images must have shape (N, C, H, W) or (N, H, W) with N = {num_samples} (one per row of logits), "
            f"got {tuple(images.shape)}"
        )
    return images.detach().to("cpu", torch.float32)


def _check_targets(targets, num_samples, num_classes):
    if targets is None:
        return None
    if not isinstance(targets, torch.Tensor) or targets.is_floating_point():
        raise TypeError("targets must be an integer torch.Tensor of class indices")
    if targets.shape != (num_samples,):
        raise ValueError(f"targets must have shape ({num_samples},), got {tuple(targets.shape)}")
    if num_samples and (int(targets.min()) < 0 or int(targets.max()) >= num_classes):
        raise ValueError(f"targets must be class indices in [0, {num_classes - 1}]")
    return targets.detach().cpu()
