"""Figures: every figure in the notebooks is one function here, usable outside notebooks too.

Conventions (follow them when you add a figure):
- A figure function takes *data* (tensors, arrays, lists, DataFrames) — never a model or a dataset to
  train — plus keyword options and an optional ``ax`` (or ``axes`` for multi-panel figures) to draw into.
- With ``ax=None`` it makes its own figure with pyplot (so it shows up by itself in a notebook).
- It returns the ``matplotlib.figure.Figure`` it drew on (``fig = kdlab.plots.x(...)``; ``fig.savefig(...)``).
- It is decorated with ``@_styled``, which applies the one kdlab look (:func:`_style`), and picks colours
  with :func:`_color` so a method has the same colour in every figure.
"""
from __future__ import annotations

import contextlib
import functools
import math

import matplotlib
import matplotlib.axes
import numpy as np
import torch

__all__ = [
    "tempered_distributions",
    "entropy_vs_temperature",
    "curves_vs_temperature",
    "power_sum_histogram",
    "image_grid",
    "method_comparison",
    "entropy_distributions",
    "plot_sweep",
    "training_curves",
    "temperature_history",
    "temperature_histogram",
    "temperature_vs_difficulty",
    "sharpness_gap_vs_delta",
    "teacher_vs_label_smoothing",
    "temperature_by_training_length",
    "plot_comparison",
    "temperature_choice",
    "step_curves",
    "outside_legend",
]

# Okabe-Ito colour-blind-safe palette; one fixed colour per method so figures can be compared.
_PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#8C564B", "#F0E442", "#000000"]
_METHOD_COLORS = {
    "teacher": "#000000",
    "ce": "#7F7F7F",
    "label_smoothing": "#882255",  # reddish purple: not a second grey next to ce
    "kd": "#0072B2",
    "ttm": "#E69F00",
    "wttm": "#D55E00",
    "dtkd": "#009E73",
    "lskd": "#CC79A7",
    "dkd": "#56B4E9",
    "ctkd": "#8C564B",
}
_RC = {
    "figure.figsize": (6.0, 3.6),
    "figure.dpi": 100,
    "savefig.dpi": 120,
    "savefig.bbox": "tight",
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "axes.prop_cycle": matplotlib.cycler(color=_PALETTE),
    "legend.fontsize": 9,
    "legend.frameon": False,
    "lines.linewidth": 1.8,
    "image.cmap": "gray",
}


@contextlib.contextmanager
def _style():
    """The kdlab look as a context manager: ``with _style(): ...``; afterwards the rcParams it set are back.

    Unlike ``matplotlib.rc_context`` it restores only the keys of the kdlab style: when the first figure of a
    Jupyter session activates the inline backend inside the block, the backend's own settings (interactive
    mode, which makes the figures show up) must survive the block.
    """
    saved = {key: matplotlib.rcParams[key] for key in _RC}
    matplotlib.rcParams.update(_RC)
    try:
        yield
    finally:
        matplotlib.rcParams.update(saved)


def _styled(function):
    """Decorator: draw the whole figure inside :func:`_style`."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with _style():
            figure = function(*args, **kwargs)
            # Jupyter's inline backend switches interactive mode on when pyplot makes its first figure. If that
            # happens in here, leaving rc_context would switch it off again and no later figure would be shown.
            interactive = matplotlib.is_interactive()
        matplotlib.interactive(interactive)
        return figure
    return wrapper


def _color(name, index=0):
    """A method's fixed colour (e.g. "kd"), else the palette colour number ``index``."""
    return _METHOD_COLORS.get(str(name).lower(), _PALETTE[index % len(_PALETTE)])


def _axes(ax=None, figsize=None):
    """``ax`` itself, or the axes of a new pyplot figure in the kdlab style."""
    if ax is not None:
        if not isinstance(ax, matplotlib.axes.Axes):
            raise TypeError(f"ax must be a matplotlib Axes or None, got {type(ax).__name__}")
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def _axes_row(count, axes=None, figsize=None, sharey=False):
    """``axes`` (a sequence of ``count`` Axes) or a new pyplot figure with one row of ``count`` panels."""
    if axes is not None:
        axes = list(np.ravel(axes))
        if len(axes) != count or not all(isinstance(ax, matplotlib.axes.Axes) for ax in axes):
            raise ValueError(f"axes must be a sequence of {count} matplotlib Axes, got {len(axes)} item(s)")
        return axes
    import matplotlib.pyplot as plt

    _, grid = plt.subplots(1, count, figsize=figsize, sharey=sharey, layout="constrained", squeeze=False)
    return list(grid[0])


def outside_legend(ax, title=None, **kwargs):
    """Draw ``ax``'s legend to the right of the axes, where it cannot cover data; returns the Legend.

    For figures whose legend would otherwise sit over curves or error bars (kdlab's own plots already put
    theirs outside). ``title`` titles the legend; ``kwargs`` go to ``Axes.legend`` (e.g. ``fontsize``).
    Use ``layout="constrained"`` on the figure so that the legend is given room.
    """
    if not isinstance(ax, matplotlib.axes.Axes):
        raise TypeError(f"ax must be a matplotlib Axes, got {type(ax).__name__}")
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        raise ValueError("ax has no labelled artists to put in a legend (draw with label=... first)")
    options = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "frameon": False, **kwargs}
    return ax.legend(handles, labels, title=title, **options)


def _array(values, name, ndim=None):
    """A float64 numpy array from a tensor / array / list, with a clear error for anything else."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().to(torch.float64).numpy()
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a tensor, array or list of numbers, got {type(values).__name__}") from None
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {array.shape}")
    return array


def _temperatures(values, name="temperatures"):
    temperatures = _array(values, name, ndim=1)
    if temperatures.size == 0 or not np.all(np.isfinite(temperatures)) or np.any(temperatures <= 0):
        raise ValueError(f"{name} must be a non-empty 1-D sequence of finite numbers > 0")
    return temperatures


# ----------------------------------------------------------------------------------------------------------
# Temperature and one softmax (notebook 01).

@_styled
def tempered_distributions(teacher_logits, temperatures, class_names=None, target=None, axes=None):
    """One panel per temperature: the bars of p_T = softmax(v / T) for one logit vector v (shape (K,)).

    The highlighted bar is ``target`` (default: the arg-max). Each title gives T and the entropy H(p_T).
    """
    logits = _array(teacher_logits, "teacher_logits", ndim=1)
    temperatures = _temperatures(temperatures)
    num_classes = logits.size
    names = [str(k) for k in range(num_classes)] if class_names is None else [str(c) for c in class_names]
    if len(names) != num_classes:
        raise ValueError(f"class_names must hold {num_classes} names, got {len(names)}")
    target = int(np.argmax(logits)) if target is None else int(target)
    panels = _axes_row(len(temperatures), axes, figsize=(2.1 * len(temperatures) + 0.6, 2.6), sharey=True)
    colors = [_PALETTE[3] if k == target else _PALETTE[0] for k in range(num_classes)]
    for ax, temperature in zip(panels, temperatures):
        scaled = logits / temperature
        probs = np.exp(scaled - scaled.max())
        probs /= probs.sum()
        entropy = float(-(probs[probs > 0] * np.log(probs[probs > 0])).sum())
        ax.bar(range(num_classes), probs, color=colors)
        ax.set_xticks(range(num_classes), names, fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.set_title(f"T = {temperature:g}\nH = {entropy:.2f} nats", fontsize=10)
        ax.grid(axis="x", visible=False)
    panels[0].set_ylabel(r"$p_T$")
    return panels[0].figure


@_styled
def entropy_vs_temperature(temperatures, entropies, num_classes, ax=None, label="test set"):
    """Entropy of the tempered teacher vs temperature: median over samples and the 10-90 % band.

    ``entropies`` has shape (N, len(temperatures)) (one row per sample). The dotted lines mark the limits:
    0 nats (one-hot, T -> 0) and log K (uniform, T -> inf).
    """
    temperatures = _temperatures(temperatures)
    values = _array(entropies, "entropies", ndim=2)
    if values.shape[1] != temperatures.size:
        raise ValueError(
            f"entropies must have shape (N, {temperatures.size}) (one column per temperature), got {values.shape}"
        )
    ax = _axes(ax)
    low, median, high = np.percentile(values, [10, 50, 90], axis=0)
    ax.fill_between(temperatures, low, high, color=_PALETTE[0], alpha=0.25, linewidth=0, label="10-90 % of samples")
    ax.plot(temperatures, median, color=_PALETTE[0], label=f"median ({label})")
    ax.axhline(math.log(num_classes), color="black", linestyle=":", linewidth=1)
    ax.axhline(0, color="black", linestyle=":", linewidth=1)
    ax.text(temperatures[0], math.log(num_classes), f" log K = {math.log(num_classes):.2f} (uniform)",
            va="bottom", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("temperature T")
    ax.set_ylabel(r"$H(p_T)$  [nats]")
    ax.legend(loc="center right")
    return ax.figure


@_styled
def curves_vs_temperature(temperatures, curves, ylabel="", logy=False, reference=None, ax=None, title=None,
                          reference_style="line"):
    """Several measured quantities against temperature (log x axis), one line per entry of ``curves``.

    ``curves`` maps a label to values (one per temperature). ``reference`` optionally maps a label to a
    guide drawn in grey on top (e.g. a 1/T^2 slope, or a sum that should equal a curve): with
    ``reference_style="line"`` a dashed line; with ``"markers"`` large hollow circles and no line, so a
    reference that lies exactly on a curve stays visible around that curve's dots. When every label is a
    method name ("kd", "ttm", ...) the methods' fixed colours are used, else the palette in order (so two
    curves never share a colour).
    """
    temperatures = _temperatures(temperatures)
    if not isinstance(curves, dict) or not curves:
        raise TypeError("curves must be a non-empty dict label -> values (one per temperature)")
    if reference_style not in ("line", "markers"):
        raise ValueError(f"reference_style must be 'line' or 'markers', got {reference_style!r}")
    ax = _axes(ax)
    all_methods = all(str(label).lower() in _METHOD_COLORS for label in curves)
    for index, (label, values) in enumerate(curves.items()):
        values = _array(values, f"curves[{label!r}]", ndim=1)
        if values.size != temperatures.size:
            raise ValueError(f"curves[{label!r}] must hold {temperatures.size} values, got {values.size}")
        color = _color(label, index) if all_methods else _PALETTE[index % len(_PALETTE)]
        ax.plot(temperatures, values, marker="o", markersize=3.5, color=color, label=str(label))
    for label, values in (reference or {}).items():
        values = _array(values, f"reference[{label!r}]", ndim=1)
        if values.size != temperatures.size:
            raise ValueError(f"reference[{label!r}] must hold {temperatures.size} values, got {values.size}")
        if reference_style == "line":
            ax.plot(temperatures, values, linestyle="--", color="#555555", linewidth=1.3, label=str(label), zorder=3)
        else:
            ax.plot(temperatures, values, linestyle="none", marker="o", markersize=9, markerfacecolor="none",
                    markeredgecolor="#222222", markeredgewidth=1.2, label=str(label), zorder=4)
    ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("temperature T")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend()
    return ax.figure


# ----------------------------------------------------------------------------------------------------------
# TTM / WTTM (notebook 03).

@_styled
def power_sum_histogram(weights, gamma, num_classes, ax=None, bins=40):
    """Histogram of WTTM's weights U_gamma(p^t) = sum_i p_i^gamma over a data set.

    The dotted lines mark the bounds: 1 (a one-hot, confident teacher) and K^(1 - gamma) (a uniform,
    clueless teacher); WTTM multiplies each sample's TTM loss by its U.
    """
    values = _array(weights, "weights", ndim=1)
    ax = _axes(ax)
    upper = num_classes ** (1 - gamma)
    ax.hist(values, bins=np.linspace(1, upper, bins + 1), color=_color("wttm"), alpha=0.85)
    for bound, text in ((1.0, "1: one-hot"), (upper, f"$K^{{1-\\gamma}}$ = {upper:.2f}: uniform")):
        ax.axvline(bound, color="black", linestyle=":", linewidth=1)
        ax.text(bound, ax.get_ylim()[1] * 0.95, " " + text, fontsize=8, va="top",
                ha="left" if bound == 1.0 else "right")
    ax.set_yscale("log")
    ax.set_xlabel(r"$U_\gamma(p^t) = \sum_i (p^t_i)^\gamma$" + f"   (gamma = {gamma:g}, T = {1 / gamma:g})")
    ax.set_ylabel("samples")
    return ax.figure


@_styled
def image_grid(images, titles=None, columns=8, axes=None, title=None):
    """A grid of images (N, C, H, W) or (N, H, W), e.g. the test digits WTTM weighs most and least."""
    pictures = images.detach().cpu().float() if isinstance(images, torch.Tensor) else torch.as_tensor(images).float()
    if pictures.dim() == 4:
        pictures = pictures[:, 0] if pictures.shape[1] == 1 else pictures.permute(0, 2, 3, 1)
    if pictures.dim() not in (3, 4) or pictures.shape[0] == 0:
        raise ValueError(f"images must have shape (N, C, H, W) or (N, H, W) with N >= 1, got {tuple(images.shape)}")
    count = pictures.shape[0]
    titles = [""] * count if titles is None else [str(t) for t in titles]
    if len(titles) != count:
        raise ValueError(f"titles must hold {count} strings (one per image), got {len(titles)}")
    rows = math.ceil(count / columns)
    if axes is None:
        import matplotlib.pyplot as plt

        figure, grid = plt.subplots(rows, columns, figsize=(1.2 * columns, 1.35 * rows + 0.3), squeeze=False,
                                    layout="constrained")
        axes = list(grid.ravel())
    else:
        axes = list(np.ravel(axes))
        if len(axes) < count:
            raise ValueError(f"axes must hold at least {count} Axes, got {len(axes)}")
    for index, ax in enumerate(axes):
        ax.axis("off")
        if index < count:
            picture = pictures[index]
            if picture.dim() == 3:
                picture = (picture - picture.min()) / (picture.max() - picture.min()).clamp_min(1e-12)
            ax.imshow(picture.numpy())
            ax.set_title(titles[index], fontsize=8)
    if title:
        axes[0].figure.suptitle(title, fontsize=11)
    return axes[0].figure


# ----------------------------------------------------------------------------------------------------------
# Comparing trained students.

@_styled
def method_comparison(results, value="test_acc", method="method", ax=None, ylabel=None, reference=None):
    """One column per method: a dot per run (e.g. per seed) and a horizontal tick at the mean, printed beside it.

    No bars: a bar's height is read from zero, and an axis cut to show sub-point gaps would make them look large.
    The axis spans the runs and every ``reference`` line, so a reference is always inside the axes.
    ``results`` is a DataFrame with one row per run and the columns ``method`` and ``value``.
    ``reference`` optionally maps a label to a horizontal line (e.g. {"teacher": 98.1}).
    This plot shows the runs; whether two methods differ is :func:`kdlab.compare`'s question.
    """
    for column in (method, value):
        if column not in getattr(results, "columns", ()):
            raise ValueError(f"results must be a DataFrame with a {column!r} column")
    ax = _axes(ax)
    names = list(dict.fromkeys(results[method]))
    for index, name in enumerate(names):
        runs = results.loc[results[method] == name, value].to_numpy(dtype=float)
        color = _color(name, index)
        ax.plot([index - 0.25, index + 0.25], [runs.mean()] * 2, color=color, linewidth=2.5)
        ax.scatter(np.full(runs.size, index) + np.linspace(-0.12, 0.12, runs.size), runs, color=color, zorder=3, s=18)
        ax.annotate(f"mean {runs.mean():.2f}", (index + 0.27, runs.mean()), va="center", fontsize=9)
    levels = [float(level) for level in (reference or {}).values()]
    for label, level in (reference or {}).items():
        ax.axhline(level, color="black", linestyle=":", linewidth=1)
        ax.text(len(names) - 0.5, level, f"{label} {level:.2f}", ha="right", va="bottom", fontsize=8)
    values = np.concatenate([results[value].to_numpy(dtype=float), np.asarray(levels, dtype=float)])
    spread = max(values.max() - values.min(), 1e-6)
    ax.set_ylim(values.min() - 0.15 * spread, values.max() + 0.15 * spread)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel(ylabel or value)
    ax.grid(axis="x", visible=False)
    return ax.figure


@_styled
def entropy_distributions(entropies, num_classes=None, ax=None, bins=40, xlabel="entropy of the output [nats]"):
    """Overlaid histograms (step lines) of per-sample output entropies, one per label of ``entropies``.

    ``entropies`` maps a label (e.g. a method name) to a 1-D array of entropies; the legend gives the mean.
    """
    if not isinstance(entropies, dict) or not entropies:
        raise TypeError("entropies must be a non-empty dict label -> 1-D array of entropies")
    ax = _axes(ax)
    arrays = {label: _array(values, f"entropies[{label!r}]", ndim=1) for label, values in entropies.items()}
    top = math.log(num_classes) if num_classes else max(array.max() for array in arrays.values())
    edges = np.linspace(0, top, bins + 1)
    for index, (label, values) in enumerate(arrays.items()):
        ax.hist(values, bins=edges, histtype="step", linewidth=1.8, color=_color(label, index),
                label=f"{label} (mean {values.mean():.3f})")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("samples")
    ax.legend()
    return ax.figure


# ----------------------------------------------------------------------------------------------------------
# Sweeps (kdlab.sweep; owner: sweep).

@_styled
def plot_sweep(df, x="temperature", y="test_acc", hue="method", epoch="last", ax=None):
    """Accuracy vs temperature from a ``kdlab.sweep`` table: one line per ``hue`` (method), mean over seeds
    with +-1 standard deviation error bars, on a log-scaled x axis.

    df: the tidy DataFrame of ``kdlab.sweep`` (one row per configuration and epoch; any frame with the columns
    ``x``, ``y``, ``hue`` works). epoch: "last" keeps each configuration's final epoch (needs the columns
    "config", "epoch", "epochs"), an int keeps that epoch, None keeps every row. Runs without a temperature
    (``x`` is NaN, e.g. "ce" or "label_smoothing") are drawn as a dashed horizontal line at their mean.
    """
    import pandas as pd
    import seaborn as sns

    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a pandas DataFrame (the table of kdlab.sweep), got {type(df).__name__}")
    for column in (x, y, hue):
        if column not in df.columns:
            raise ValueError(f"df must have a {column!r} column (columns: {list(df.columns)})")
    if epoch == "last":
        if "epoch" in df.columns and "epochs" in df.columns:
            df = df[df["epoch"] == df["epochs"]]
        elif "epoch" in df.columns:
            df = df[df["epoch"] == df["epoch"].max()]
    elif epoch is not None:
        if isinstance(epoch, bool) or not isinstance(epoch, int) or "epoch" not in df.columns:
            raise ValueError(f"epoch must be 'last', None or an epoch number present in df, got {epoch!r}")
        df = df[df["epoch"] == epoch]
    if df.empty:
        raise ValueError(f"df has no rows to plot (epoch={epoch!r})")
    ax = _axes(ax)
    tempered = df[df[x].notna()]
    names = list(dict.fromkeys(df[hue]))
    palette = {name: _color(name, index) for index, name in enumerate(names)}
    if not tempered.empty:
        sns.lineplot(data=tempered, x=x, y=y, hue=hue, hue_order=[n for n in names if n in set(tempered[hue])],
                     palette=palette, errorbar="sd", err_style="bars", marker="o", ax=ax,
                     err_kws={"capsize": 3})
        values = np.sort(tempered[x].unique())
        if np.all(values > 0):
            ax.set_xscale("log")
            ax.set_xticks(values, [f"{v:g}" for v in values])
            ax.minorticks_off()
    for name in names:
        flat = df[(df[hue] == name) & df[x].isna()]
        if not flat.empty:
            mean, std = flat[y].mean(), flat[y].std()
            label = f"{name} (no {x})"
            ax.axhline(mean, color=palette[name], linestyle="--", linewidth=1.2, label=label)
            if np.isfinite(std) and std > 0:
                ax.axhspan(mean - std, mean + std, color=palette[name], alpha=0.12, linewidth=0)
    ax.set_xlabel({"temperature": "temperature T"}.get(x, x))
    ax.set_ylabel({"test_acc": "test accuracy [%]", "train_acc": "train accuracy [%]"}.get(y, y))
    # outside the axes, so it never hides data; error bars are +-1 sd over the seeds
    ax.legend(title=f"{hue}: mean, bars/bands \u00b11 sd", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return ax.figure


# ----------------------------------------------------------------------------------------------------------
# Training curves and DTKD's per-sample temperatures (notebooks 02 and 04).

@_styled
def training_curves(df, y="test_acc", hue="temperature", units="seed", ax=None, title=None, logy=False):
    """One line per run over the epochs (e.g. test accuracy), coloured by ``hue``; runs that blew up show.

    ``df`` is a tidy table with one row per (run, epoch), like ``kdlab.sweep``'s: the columns "epoch", ``y``,
    ``hue`` and ``units`` (what tells the runs of one ``hue`` value apart, e.g. "seed"). Non-finite values
    (a diverged loss) are left as gaps and counted in the legend.
    """
    for column in ("epoch", y, hue, units):
        if column not in getattr(df, "columns", ()):
            raise ValueError(f"df must be a DataFrame with a {column!r} column")
    ax = _axes(ax)
    for index, (level, runs) in enumerate(df.groupby(hue, sort=True)):
        color = _color(level, index) if isinstance(level, str) else _PALETTE[index % len(_PALETTE)]
        broken = 0
        for _, run in runs.groupby(units, sort=True):
            run = run.sort_values("epoch")
            values = run[y].to_numpy(dtype=float)
            broken += int(not np.all(np.isfinite(values)))
            ax.plot(run["epoch"], values, color=color, alpha=0.8, marker="o", markersize=2.5)
        label = f"{hue} = {level:g}" if isinstance(level, (int, float)) else f"{hue} = {level}"
        ax.plot([], [], color=color, label=label + (f"  ({broken} run(s) non-finite)" if broken else ""))
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel({"test_acc": "test accuracy [%]", "train_acc": "train accuracy [%]"}.get(y, y))
    if title:
        ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside the axes: never over the curves
    return ax.figure


@_styled
def step_curves(df, y, x="step", hue="temperature", style="lr", ax=None, ylabel=None, title=None, logy=False):
    """One line per run of ``kdlab.first_steps`` tables: ``y`` against the optimizer step.

    ``df`` holds the concatenated frames (columns ``x``, ``y``, ``hue``, ``style``); colour follows ``hue``
    (e.g. the temperature), the line style follows ``style`` (e.g. the learning rate: solid, dashed, dotted).
    """
    for column in (x, y, hue, style):
        if column not in getattr(df, "columns", ()):
            raise ValueError(f"df must be a DataFrame with a {column!r} column")
    ax = _axes(ax)
    styles = {value: ["-", "--", ":", "-."][i % 4] for i, value in enumerate(sorted(df[style].unique()))}
    for index, (level, runs) in enumerate(df.groupby(hue, sort=True)):
        color = _PALETTE[index % len(_PALETTE)]
        for value, run in runs.groupby(style, sort=True):
            run = run.sort_values(x)
            ax.plot(run[x], run[y], color=color, linestyle=styles[value], linewidth=1.4,
                    label=f"{hue} {level:g}, {style} {value:g}")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel({"step": "optimizer step"}.get(x, x))
    ax.set_ylabel(ylabel or y)
    if title:
        ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return ax.figure


@_styled
def temperature_history(history, temperature=None, by="seed", warmup=None, ax=None, title=None):
    """DTKD's per-sample temperatures during training: the mean per epoch as a line, min..max as a band.

    ``history`` is a DataFrame with the columns "epoch", "temperature_mean", "temperature_min" and
    "temperature_max" (``kdlab.distill``'s history for "dtkd"), one row per epoch, optionally stacked over
    runs with a ``by`` column (e.g. "seed"), one line per run. ``temperature`` draws the reference tau;
    ``warmup`` shades the first epochs, when the distillation terms are still being ramped up.
    """
    needed = ("epoch", "temperature_mean", "temperature_min", "temperature_max")
    for column in needed:
        if column not in getattr(history, "columns", ()):
            raise ValueError(f"history must be a DataFrame with a {column!r} column")
    ax = _axes(ax)
    runs = history.groupby(by) if by in history.columns else [(None, history)]
    for index, (key, run) in enumerate(runs):
        run = run.sort_values("epoch")
        color = _PALETTE[index % len(_PALETTE)]
        label = "mean" if key is None else f"{by} {key}: mean"
        ax.plot(run["epoch"], run["temperature_mean"], color=color, marker="o", markersize=3, label=label)
        ax.fill_between(run["epoch"], run["temperature_min"], run["temperature_max"], color=color, alpha=0.15,
                        linewidth=0)
    if temperature is not None:
        ax.axhline(temperature, color="black", linestyle=":", linewidth=1, label=f"tau = {temperature:g}")
    if warmup:
        ax.axvspan(history["epoch"].min() - 0.5, warmup + 0.5, color="#999999", alpha=0.12, linewidth=0,
                   label=f"warm-up ({warmup} epochs)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("student temperature T_s\n(band: min..max over the epoch's samples)")
    if title:
        ax.set_title(title)
    ax.legend()
    return ax.figure


@_styled
def temperature_histogram(teacher_temperatures, student_temperatures, temperature, ax=None, bins=40, title=None):
    """Histograms of per-sample teacher and student temperatures (e.g. DTKD's) between 0 and 2 tau.

    DTKD's closed form keeps T_t + T_s = 2 tau, so the two histograms mirror each other around tau (dotted).
    """
    teacher = _array(teacher_temperatures, "teacher_temperatures").reshape(-1)
    student = _array(student_temperatures, "student_temperatures").reshape(-1)
    tau = _temperatures([temperature], "temperature")[0]
    ax = _axes(ax)
    edges = np.linspace(0, 2 * tau, bins + 1)
    for name, values, color in (("teacher T_t", teacher, "#000000"), ("student T_s", student, _color("dtkd"))):
        ax.hist(values, bins=edges, histtype="stepfilled", alpha=0.35, color=color)
        ax.hist(values, bins=edges, histtype="step", linewidth=1.6, color=color,
                label=f"{name}: median {np.median(values):.2f}")
    ax.axvline(tau, color="black", linestyle=":", linewidth=1, label=f"tau = {tau:g}")
    ax.set_xlabel("per-sample temperature")
    ax.set_ylabel("samples")
    if title:
        ax.set_title(title)
    ax.legend()
    return ax.figure


@_styled
def temperature_vs_difficulty(teacher_confidence, teacher_temperatures, teacher_correct, temperature, ax=None,
                              bins=10):
    """DTKD's per-sample teacher temperature against how sure the teacher is of that sample.

    x: ``1 - teacher_confidence`` (the probability the teacher puts outside its top class) on a log axis, so
    the many near-certain samples spread out and harder samples lie to the right. One dot per sample, the
    samples the teacher gets wrong as red crosses; the black line joins the medians of ``bins`` groups of
    equal size (ordered by confidence); the dotted line is tau, where DTKD equals KD.
    """
    confidence = _array(teacher_confidence, "teacher_confidence", ndim=1)
    values = _array(teacher_temperatures, "teacher_temperatures").reshape(-1)
    correct = _array(teacher_correct, "teacher_correct", ndim=1).astype(bool)
    if not (confidence.size == values.size == correct.size) or confidence.size == 0:
        raise ValueError(f"teacher_confidence, teacher_temperatures and teacher_correct must hold the same "
                         f"non-zero number of samples, got {confidence.size}, {values.size}, {correct.size}")
    if isinstance(bins, bool) or not isinstance(bins, int) or not 1 <= bins <= confidence.size:
        raise ValueError(f"bins must be an integer between 1 and the number of samples, got {bins!r}")
    tau = _temperatures([temperature], "temperature")[0]
    doubt = np.clip(1.0 - confidence, 1e-12, None)
    ax = _axes(ax)
    ax.scatter(doubt[correct], values[correct], s=6, alpha=0.35, color=_color("dtkd"), linewidths=0,
               label="teacher right")
    ax.scatter(doubt[~correct], values[~correct], s=28, marker="x", color="#D55E00", linewidths=1.2,
               label="teacher wrong", zorder=3)
    groups = np.array_split(np.argsort(doubt), bins)
    ax.plot([np.median(doubt[g]) for g in groups], [np.median(values[g]) for g in groups], color="black",
            marker="s", markersize=4, label=f"median of {bins} equal groups", zorder=4)
    ax.axhline(tau, color="black", linestyle=":", linewidth=1, label=f"tau = {tau:g} (plain KD)")
    ax.set_xscale("log")
    ax.set_xlabel("1 - teacher's top probability (log scale; right = less sure)")
    ax.set_ylabel("teacher temperature T_t")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return ax.figure


@_styled
def sharpness_gap_vs_delta(deltas, gaps, formula_deltas=None, labels=None, ax=None):
    """DTKD's eq. 3 as a curve: the sharpness gap |S(v / (tau + delta)) - S(z / (tau - delta))| vs delta.

    ``gaps`` has shape (len(deltas), S): one curve per sample. Each curve's minimum is marked with a dot;
    ``formula_deltas`` (S,) marks where the closed form (eqs. 4-5) puts delta, with a cross on the curve
    (interpolated), so one sees whether the formula lands on the minimum.
    """
    delta = _array(deltas, "deltas", ndim=1)
    values = _array(gaps, "gaps")
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2 or values.shape[0] != delta.size:
        raise ValueError(f"gaps must have shape ({delta.size}, S) (one row per delta), got {values.shape}")
    count = values.shape[1]
    labels = [f"sample {k}" for k in range(count)] if labels is None else [str(label) for label in labels]
    if len(labels) != count:
        raise ValueError(f"labels must hold {count} names (one per curve), got {len(labels)}")
    formula = None if formula_deltas is None else _array(formula_deltas, "formula_deltas").reshape(-1)
    if formula is not None and formula.size != count:
        raise ValueError(f"formula_deltas must hold {count} values (one per curve), got {formula.size}")
    ax = _axes(ax)
    for k in range(count):
        color = _PALETTE[k % len(_PALETTE)]
        ax.plot(delta, values[:, k], color=color, label=labels[k])
        best = int(np.argmin(values[:, k]))
        ax.plot(delta[best], values[best, k], "o", color=color, markersize=6)
        if formula is not None:
            ax.plot(formula[k], np.interp(formula[k], delta, values[:, k]), "x", color=color, markersize=9,
                    markeredgewidth=2)
    ax.plot([], [], "o", color="#555555", label="minimum of eq. 3")
    if formula is not None:
        ax.plot([], [], "x", color="#555555", markeredgewidth=2, label="closed form (eqs. 4-5)")
    ax.axvline(0, color="black", linestyle=":", linewidth=1, label=r"$\delta = 0$: plain KD")
    ax.set_xlabel(r"$\delta$   (teacher at $\tau+\delta$, student at $\tau-\delta$)")
    ax.set_ylabel("sharpness gap")
    ax.legend()
    return ax.figure


# ----------------------------------------------------------------------------------------------------------
# Frank & Davis's studies (notebook 05).

@_styled
def teacher_vs_label_smoothing(teacher_logits, temperatures, top=20, axes=None):
    """Frank & Davis's Fig. 4: per temperature, the average sorted tempered teacher distribution (colour)
    beside the label-smoothing target with the same (mean) entropy (grey), over the ``top`` largest classes.

    teacher_logits: (N, K) teacher logits (e.g. of the transfer set); temperatures: one panel each.
    Each title gives T, the teacher's mean entropy H and the matched smoothing epsilon.
    """
    from kdlab.studies import entropy_matched_smoothing, label_smoothing_distribution, sorted_distribution
    from kdlab.temperature import tempered_softmax

    if not isinstance(teacher_logits, torch.Tensor) or teacher_logits.dim() != 2:
        raise TypeError("teacher_logits must be a tensor of shape (N, K)")
    temperatures = _temperatures(np.atleast_1d(_array(temperatures, "temperatures")))
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ValueError(f"top must be an int >= 1, got {top!r}")
    logits = teacher_logits.detach().cpu().to(torch.float64)
    num_classes = logits.shape[1]
    shown = min(top, num_classes)
    table = entropy_matched_smoothing(logits, temperatures.tolist())
    axes = _axes_row(len(temperatures), axes, figsize=(2.4 * len(temperatures) + 0.6, 2.8), sharey=True)
    positions = np.arange(1, shown + 1)
    for ax, row in zip(axes, table.itertuples()):
        teacher = sorted_distribution(tempered_softmax(logits, row.temperature), top=shown).numpy()
        smooth = label_smoothing_distribution(num_classes, row.smoothing)[:shown].numpy()
        ax.bar(positions - 0.2, teacher, width=0.4, color=_color("kd"), label="teacher (sorted, mean)")
        ax.bar(positions + 0.2, smooth, width=0.4, color=_color("label_smoothing"), label="label smoothing")
        ax.set_title(f"T = {row.temperature:g}\nH = {row.teacher_entropy:.2f}, ε = {row.smoothing:.2f}", fontsize=9)
        ax.set_xticks(positions[:: max(1, shown // 5)])
        ax.set_xlabel("rank of the class (1 = most probable)")
        ax.set_ylim(0, 1.02)
    axes[0].set_ylabel("probability")
    axes[-1].legend(loc="upper right", fontsize=7)
    return axes[0].figure


@_styled
def temperature_by_training_length(df, epochs, y="test_acc", axes=None):
    """Frank & Davis's Figs. 2-3: accuracy vs temperature after several training lengths, one panel per
    (optimizer, batch size); mean over seeds with +-1 std bars, earlier epochs in grey, the last in colour,
    and a star on each line's best temperature.

    df: a tidy table (``kdlab.run_study("training", ...)``) with "optimizer", "batch_size", "temperature",
    "seed", "epoch" and ``y``. epochs: the epochs to draw (e.g. [3, 20]); with a constant learning rate the
    state after epoch e of a long run is the result of a run of e epochs.
    """
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a pandas DataFrame, got {type(df).__name__}")
    for column in ("optimizer", "batch_size", "temperature", "seed", "epoch", y):
        if column not in df.columns:
            raise ValueError(f"df must have a {column!r} column (columns: {list(df.columns)})")
    epochs = sorted({int(e) for e in np.atleast_1d(epochs)})
    missing = [e for e in epochs if e not in set(df["epoch"])]
    if not epochs or missing:
        raise ValueError(f"epochs must be epochs present in df, got {epochs} (missing {missing})")
    panels = list(df.groupby(["optimizer", "batch_size"], sort=True).groups)
    axes = _axes_row(len(panels), axes, figsize=(3.0 * len(panels) + 0.5, 3.2), sharey=True)
    greys = np.linspace(0.75, 0.4, max(len(epochs) - 1, 1))
    for ax, (optimizer, batch_size) in zip(axes, panels):
        rows = df[(df["optimizer"] == optimizer) & (df["batch_size"] == batch_size)]
        color = _PALETTE[0] if optimizer == "sgd" else _PALETTE[3]
        for index, epoch in enumerate(epochs):
            stats = rows[rows["epoch"] == epoch].groupby("temperature")[y].agg(["mean", "std"]).fillna(0.0)
            last = index == len(epochs) - 1
            line_color = color if last else str(greys[index])
            ax.errorbar(stats.index, stats["mean"], yerr=stats["std"], color=line_color, marker="o", markersize=3,
                        capsize=2, label=f"epoch {epoch}", linewidth=1.8 if last else 1.2)
            best = stats["mean"].idxmax()
            ax.plot([best], [stats.loc[best, "mean"]], "*", color=line_color, markersize=12,
                    markeredgecolor="black", markeredgewidth=0.5,
                    label="highest mean over T" if last and ax is axes[-1] else None)
        values = np.sort(rows["temperature"].unique())
        ax.set_xscale("log")
        ax.set_xticks(values, [f"{v:g}" for v in values])
        ax.minorticks_off()
        ax.set_title(f"{optimizer}, batch {batch_size}")
        ax.set_xlabel("temperature T")
    axes[0].set_ylabel({"test_acc": "test accuracy [%]"}.get(y, y))
    outside_legend(axes[-1], "mean ± 1 sd", fontsize=8)  # beside the last panel, over no data
    return axes[0].figure


# ----------------------------------------------------------------------------------------------------------
# Paired comparisons (kdlab.compare), every notebook.

_VERDICT_MARKERS = {"better": "^", "worse": "v", "equivalent": "s", "inconclusive": "o"}


@_styled
def plot_comparison(table, label=None, baseline="baseline", unit="points", ax=None, title=None, margin=None):
    """Paired differences against a baseline with their intervals: one row per line of ``kdlab.compare``.

    ``table`` is the DataFrame ``kdlab.compare`` returns. ``label`` names the column(s) that label a row
    (default: every column before "n"). Each row is a point at the mean paired difference with a bar over its
    interval; the marker shows the verdict (triangle up better, down worse, square equivalent, circle
    inconclusive). The axis is centred on 0 (no difference), drawn as a line; ``margin`` adds the
    equivalence band (shaded, labelled). Rows without an interval (n < 2) are drawn as hollow points.
    """
    columns = list(getattr(table, "columns", ()))
    for column in ("n", "difference", "ci_low", "ci_high", "verdict"):
        if column not in columns:
            raise ValueError(f"table must be a DataFrame returned by kdlab.compare (missing column {column!r})")
    labels = columns[:columns.index("n")] if label is None else ([label] if isinstance(label, str) else list(label))
    ax = _axes(ax, figsize=(6.0, 0.45 * len(table) + 1.4))
    positions = np.arange(len(table))[::-1]
    for y, (_, row) in zip(positions, table.iterrows()):
        name = ", ".join(f"{row[c]:g}" if isinstance(row[c], float) else str(row[c]) for c in labels)
        color = _color(row[labels[-1]] if labels else "", int(y))
        has_interval = np.isfinite(row["ci_low"]) and np.isfinite(row["ci_high"])
        if has_interval:
            ax.plot([row["ci_low"], row["ci_high"]], [y, y], color=color, linewidth=2.2, solid_capstyle="butt")
        ax.scatter([row["difference"]], [y], marker=_VERDICT_MARKERS.get(row["verdict"], "o"), s=46, zorder=3,
                   color=color if has_interval else "white", edgecolors=color)
        ax.annotate(f"{row['verdict']} (n={int(row['n'])})", (1.0, y), xycoords=("axes fraction", "data"),
                    xytext=(4, 0), textcoords="offset points", va="center", fontsize=8, annotation_clip=False)
        ax.text(0.0, y, name + "  ", transform=ax.get_yaxis_transform(), ha="right", va="center", fontsize=9)
    ax.axvline(0.0, color="black", linewidth=1)
    if margin is not None:
        ax.axvspan(-margin, margin, color="#999999", alpha=0.15, label=f"equivalence margin \u00b1{margin:g}")
        ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=1)
    finite = table[["ci_low", "ci_high", "difference"]].to_numpy(float)
    finite = finite[np.isfinite(finite)]
    reach = max(np.abs(finite).max() if finite.size else 1.0, margin or 0.0) * 1.15 or 1.0
    ax.set_xlim(-reach, reach)
    ax.set_yticks([])
    ax.set_ylim(-0.7, len(table) - 0.3)
    ax.set_xlabel(f"paired difference vs {baseline} [{unit}]; bar = interval")
    ax.grid(axis="y", visible=False)
    if title:
        ax.set_title(title)
    return ax.figure


@_styled
def temperature_choice(table, confidence=0.95, axes=None):
    """Mean test accuracy vs temperature from ``kdlab.choose_temperature``'s table, dropped candidates marked.

    ``table`` is ``TemperatureChoice.table``. Candidates of the last round (full training length) are filled
    points; the bar is the paired interval of the difference to the leader, drawn around the candidate's mean
    (leader's mean + interval), so a bar that reaches the leader's line cannot be told apart from it. Dropped
    candidates are hollow, one colour per round, at the mean accuracy of the (shorter) round they were dropped
    in, with their interval against that round's leader. ``axes`` is one matplotlib Axes (or None).
    """
    columns = list(getattr(table, "columns", ()))
    for column in ("temperature", "mean", "difference", "ci_low", "ci_high", "epochs", "dropped_in_round"):
        if column not in columns:
            raise ValueError(f"table must be TemperatureChoice.table (missing column {column!r})")
    ax = _axes(axes, figsize=(6.4, 3.8))
    dropped = table["dropped_in_round"].notna().to_numpy()
    final = table[~dropped]
    level = f"{100 * confidence:g} %"

    def bars(rows, color, hollow, label):
        leader_mean = (rows["mean"] - rows["difference"]).to_numpy(float)
        low = leader_mean + rows["ci_low"].to_numpy(float)
        high = leader_mean + rows["ci_high"].to_numpy(float)
        x = rows["temperature"].to_numpy(float)
        for xi, lo, hi in zip(x, low, high):
            if np.isfinite(lo) and np.isfinite(hi):
                ax.plot([xi, xi], [lo, hi], color=color, linewidth=2.0, alpha=0.8, solid_capstyle="butt")
        ax.scatter(x, rows["mean"], s=44, zorder=3, color="white" if hollow else color, edgecolors=color,
                   linewidths=1.6, label=label)

    if len(final):
        epochs = int(final["epochs"].iloc[0])
        bars(final, _PALETTE[0], False, f"trained the full {epochs} epochs")
        best = final.loc[final["mean"].idxmax()]
        ax.axhline(best["mean"], color=_PALETTE[0], linewidth=0.8, linestyle="--",
                   label=f"recommended T = {best['temperature']:g} (mean)")
    for index, (round_index, rows) in enumerate(table[dropped].groupby("dropped_in_round", sort=True)):
        budget = int(rows["epochs"].iloc[0])
        bars(rows, _PALETTE[(index + 1) % len(_PALETTE)], True,
             f"dropped after round {int(round_index) + 1} ({budget} epoch{'s' if budget != 1 else ''})")
    ax.set_xscale("log", base=2)
    ax.set_xticks(table["temperature"].to_numpy(float))
    ax.set_xticklabels([f"{t:g}" for t in table["temperature"]])
    ax.minorticks_off()
    ax.set_xlabel("temperature T (log scale)")
    ax.set_ylabel("mean test accuracy [%]")
    ax.set_title(f"choose_temperature: bars = {level} paired interval vs the round's leader", fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return ax.figure
