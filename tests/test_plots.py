"""Figures: each function draws what it is given (checked on the artists), into a given ax or its own figure."""
import math

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from kdlab import entropy, plots, tempered_softmax


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _ax():
    return Figure().subplots()


def test_style_is_local_and_applied():
    before = matplotlib.rcParams["axes.spines.top"]
    fig = plots.curves_vs_temperature([1, 2, 4], {"kd": [3, 2, 1]})
    assert matplotlib.rcParams["axes.spines.top"] == before  # global rcParams untouched
    ax = fig.axes[0]
    assert not ax.spines["top"].get_visible() and not ax.spines["right"].get_visible()
    assert ax.get_xscale() == "log"


def test_method_colours_are_fixed_across_figures():
    first = plots.curves_vs_temperature([1, 2], {"ttm": [1, 2], "kd": [2, 3]}).axes[0]
    second = plots.curves_vs_temperature([1, 2], {"kd": [1, 1]}).axes[0]
    kd_first = [line for line in first.lines if line.get_label() == "kd"][0]
    assert matplotlib.colors.same_color(kd_first.get_color(), second.lines[0].get_color())
    assert matplotlib.colors.same_color(second.lines[0].get_color(), plots._color("kd"))


def test_curves_get_distinct_colours_unless_all_are_methods():
    mixed = plots.curves_vs_temperature([1, 2], {"ttm": [1, 2], "KD part": [2, 3], "other": [0, 1]}).axes[0]
    colours = [matplotlib.colors.to_hex(line.get_color()) for line in mixed.lines]
    assert len(set(colours)) == 3


def test_style_survives_backend_activation_inside_the_block():
    # The inline backend switches interactive mode on when the first figure is made inside _style();
    # the style must restore only its own keys, or later figures would not be shown in Jupyter.
    before = matplotlib.is_interactive()
    try:
        with plots._style():
            matplotlib.interactive(not before)
        assert matplotlib.is_interactive() == (not before)
    finally:
        matplotlib.interactive(before)


def test_tempered_distributions_bars_are_the_tempered_softmax():
    logits = torch.tensor([3.0, 1.0, 0.2, -1.0, -2.5], dtype=torch.float64)
    temperatures = [0.5, 1, 4, 40]
    fig = plots.tempered_distributions(logits, temperatures, class_names=list("abcde"))
    assert len(fig.axes) == 4
    for ax, temperature in zip(fig.axes, temperatures):
        expected = tempered_softmax(logits, temperature)
        assert [p.get_height() for p in ax.patches] == pytest.approx(expected.tolist(), abs=1e-12)
        # Golden entropies from papers.md §3 (test idea 1): 0.1168 / 0.6381 / 1.5037 / 1.6084.
        assert f"{float(entropy(expected)):.2f}" in ax.get_title()
    assert "H = 0.12" in fig.axes[0].get_title() and "H = 1.61" in fig.axes[3].get_title()
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == list("abcde")


def test_tempered_distributions_into_given_axes():
    axes = Figure().subplots(1, 2)
    fig = plots.tempered_distributions([1.0, 0.0], [1, 2], axes=axes)
    assert fig is axes[0].figure
    with pytest.raises(ValueError, match="axes"):
        plots.tempered_distributions([1.0, 0.0], [1, 2, 3], axes=axes)


def test_entropy_vs_temperature_draws_median_and_band():
    temperatures = np.array([0.5, 1.0, 2.0, 4.0])
    entropies = np.array([[0.1, 0.5, 1.0, 2.0], [0.3, 0.7, 1.2, 2.2], [0.2, 0.6, 1.1, 2.1]])
    ax = _ax()
    fig = plots.entropy_vs_temperature(temperatures, entropies, num_classes=10, ax=ax)
    assert fig is ax.figure
    median = ax.lines[0]
    assert list(median.get_ydata()) == pytest.approx([0.2, 0.6, 1.1, 2.1])
    assert any(line.get_ydata()[0] == pytest.approx(math.log(10)) for line in ax.lines[1:])
    assert len(ax.collections) == 1  # the 10-90 % band
    with pytest.raises(ValueError, match="entropies"):
        plots.entropy_vs_temperature(temperatures, entropies[:, :3], num_classes=10)


def test_curves_vs_temperature_values_and_reference():
    ax = _ax()
    plots.curves_vs_temperature([1, 10, 100], {"without T^2": [1, 1e-2, 1e-4]}, logy=True,
                                reference={"1/T^2": [1, 1e-2, 1e-4]}, ax=ax)
    assert ax.get_yscale() == "log"
    assert list(ax.lines[0].get_ydata()) == [1, 1e-2, 1e-4]
    assert ax.lines[1].get_linestyle() == "--"
    with pytest.raises(ValueError, match="reference"):
        plots.curves_vs_temperature([1, 10, 100], {"x": [1, 2, 3]}, reference={"guide": [1, 2]})
    with pytest.raises(ValueError, match="3 values"):
        plots.curves_vs_temperature([1, 10, 100], {"x": [1, 2]})
    with pytest.raises(ValueError, match="temperatures"):
        plots.curves_vs_temperature([0, 1], {"x": [1, 2]})
    with pytest.raises(TypeError, match="curves"):
        plots.curves_vs_temperature([1, 2], [1, 2])
    with pytest.raises(TypeError, match="ax"):
        plots.curves_vs_temperature([1, 2], {"x": [1, 2]}, ax="left")



def test_curves_vs_temperature_reference_as_markers_stays_visible_on_a_curve():
    ax = _ax()
    plots.curves_vs_temperature([1, 10], {"ttm": [0.5, 0.2]}, reference={"sum": [0.5, 0.2]}, ax=ax,
                                reference_style="markers")
    curve, guide = ax.lines
    assert guide.get_linestyle() == "None" and guide.get_marker() == "o"
    assert guide.get_markerfacecolor() == "none"
    assert guide.get_markersize() > curve.get_markersize()      # drawn around the curve's own dots
    assert guide.get_zorder() > curve.get_zorder()
    with pytest.raises(ValueError, match="reference_style"):
        plots.curves_vs_temperature([1, 10], {"x": [1, 2]}, reference_style="dots")

def test_power_sum_histogram_counts_and_bounds():
    weights = np.array([1.0, 1.1, 1.2, 5.0, 7.9])
    ax = _ax()
    plots.power_sum_histogram(weights, gamma=0.1, num_classes=10, ax=ax)
    assert sum(p.get_height() for p in ax.patches) == pytest.approx(5)
    bounds = sorted(line.get_xdata()[0] for line in ax.lines)
    assert bounds == pytest.approx([1.0, 10 ** 0.9])


def test_image_grid_shows_each_image_with_its_title():
    images = torch.rand(5, 1, 8, 8)
    fig = plots.image_grid(images, titles=[f"U={k}" for k in range(5)], columns=3)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 5 and len(fig.axes) == 6
    assert np.allclose(shown[2].images[0].get_array(), images[2, 0].numpy())
    assert shown[4].get_title() == "U=4"
    with pytest.raises(ValueError, match="titles"):
        plots.image_grid(images, titles=["a"])


def test_method_comparison_means_and_dots():
    results = pd.DataFrame({"method": ["kd", "kd", "ttm", "ttm"], "test_acc": [90.0, 92.0, 93.0, 95.0]})
    ax = _ax()
    plots.method_comparison(results, reference={"teacher": 98.0}, ax=ax)
    assert not ax.patches                                     # no bars: nothing is read from a cut axis
    means = [line.get_ydata()[0] for line in ax.lines if len(line.get_xdata()) == 2 and line.get_xdata()[0] != 0]
    assert means == pytest.approx([91.0, 94.0])
    low, high = ax.get_ylim()
    assert low < 90.0 and high > 98.0                         # the teacher's line lies inside the axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["kd", "ttm"]
    dots = [collection.get_offsets()[:, 1].tolist() for collection in ax.collections]
    assert dots == [[90.0, 92.0], [93.0, 95.0]]
    with pytest.raises(ValueError, match="'seed_acc'"):
        plots.method_comparison(results, value="seed_acc")


def test_entropy_distributions_one_histogram_per_label():
    ax = _ax()
    data = {"kd": np.array([0.1, 0.2, 0.3]), "ttm": np.array([0.5, 0.6, 2.0, 2.1])}
    plots.entropy_distributions(data, num_classes=10, ax=ax)
    labels = [patch.get_label() for patch in ax.patches]
    assert labels == ["kd (mean 0.200)", "ttm (mean 1.300)"]
    with pytest.raises(TypeError, match="entropies"):
        plots.entropy_distributions([0.1, 0.2])


def test_step_curves_one_line_per_run_and_legend_outside():
    import pandas as pd
    import kdlab.plots as plots
    frame = pd.DataFrame([{"step": s, "update_norm": 0.1 * s * lr, "temperature": t, "lr": lr}
                          for t in (1.0, 4.0) for lr in (0.01, 0.1) for s in (1, 2, 3)])
    fig = plots.step_curves(frame, y="update_norm", ylabel="update size")
    ax = fig.axes[0]
    assert len(ax.lines) == 4 and {line.get_linestyle() for line in ax.lines} == {"-", "--"}
    assert ax.get_xlabel() == "optimizer step" and ax.get_ylabel() == "update size"
    assert ax.get_legend()._bbox_to_anchor is not None
    with pytest.raises(ValueError, match="lr"):
        plots.step_curves(frame.drop(columns="lr"), y="update_norm")


def test_outside_legend_lies_right_of_the_axes_and_keeps_the_labels():
    import matplotlib.pyplot as plt
    import kdlab.plots as plots
    figure, ax = plt.subplots(layout="constrained")
    ax.plot([0, 1], [0, 1], label="kd")
    ax.plot([0, 1], [1, 0], label="ttm")
    ax.legend(loc="lower left")  # an inside legend is replaced
    legend = plots.outside_legend(ax, "method")
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    box, frame = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
    assert ax.get_legend() is legend and box.x0 >= frame.x1  # wholly to the right: over no data
    assert [text.get_text() for text in legend.get_texts()] == ["kd", "ttm"]
    assert legend.get_title().get_text() == "method"
    empty = plt.subplots()[1]
    empty.plot([0, 1], [0, 1])
    with pytest.raises(ValueError, match="labelled"):
        plots.outside_legend(empty)
    with pytest.raises(TypeError, match="ax"):
        plots.outside_legend("not an axes")
    plt.close("all")
