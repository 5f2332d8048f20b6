"""Figures of notebooks 02 and 04: training curves, DTKD's temperatures and the sharpness gap of eq. 3."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from kdlab import plots


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _runs():
    rows = []
    for temperature in (1.0, 8.0):
        for seed in (0, 1):
            for epoch in (1, 2, 3):
                acc = 50.0 + 10 * epoch + seed
                if temperature == 8.0 and seed == 1 and epoch == 3:
                    acc = float("nan")  # a diverged run
                rows.append({"temperature": temperature, "seed": seed, "epoch": epoch, "test_acc": acc})
    return pd.DataFrame(rows)


def test_training_curves_draws_one_line_per_run_and_counts_broken_runs():
    figure = plots.training_curves(_runs())
    assert isinstance(figure, Figure)
    (ax,) = figure.axes
    drawn = [line for line in ax.lines if len(line.get_xdata()) > 0]
    assert len(drawn) == 4
    assert list(drawn[0].get_ydata()) == pytest.approx([60.0, 70.0, 80.0], abs=1e-12)
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels == ["temperature = 1", "temperature = 8  (1 run(s) non-finite)"]
    assert ax.get_ylabel() == "test accuracy [%]"


def test_training_curves_rejects_missing_columns():
    with pytest.raises(ValueError, match="'seed'"):
        plots.training_curves(_runs().drop(columns="seed"))


def _history():
    rows = []
    for seed in (0, 1):
        for epoch in range(1, 5):
            rows.append({"seed": seed, "epoch": epoch, "temperature_mean": 4.0 - 0.1 * epoch + seed,
                         "temperature_min": 2.0, "temperature_max": 6.0})
    return pd.DataFrame(rows)


def test_temperature_history_lines_bands_tau_and_warmup():
    _, ax = plt.subplots()
    figure = plots.temperature_history(_history(), temperature=4.0, warmup=2, ax=ax)
    assert figure is ax.figure
    means = [line for line in ax.lines if len(line.get_xdata()) == 4]
    assert len(means) == 2
    assert list(means[1].get_ydata()) == pytest.approx([4.9, 4.8, 4.7, 4.6], abs=1e-12)
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2
    assert any(line.get_ydata()[0] == 4.0 and line.get_linestyle() == ":" for line in ax.lines)
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert "warm-up (2 epochs)" in labels and "seed 0: mean" in labels


def test_temperature_history_needs_the_temperature_columns():
    with pytest.raises(ValueError, match="temperature_max"):
        plots.temperature_history(_history().drop(columns="temperature_max"))


def test_temperature_histogram_counts_every_sample_between_0_and_2_tau():
    teacher = torch.tensor([[4.5], [5.0], [6.0], [7.9]])
    student = 8.0 - teacher
    figure = plots.temperature_histogram(teacher, student, temperature=4.0, bins=8)
    (ax,) = figure.axes
    filled = [patch for patch in ax.patches if patch.get_fill()]
    assert len(filled) == 2
    assert ax.get_xlim()[0] <= 0.0 and ax.get_xlim()[1] >= 8.0
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert "teacher T_t: median 5.50" in labels and "student T_s: median 2.50" in labels
    with pytest.raises(ValueError, match="temperature"):
        plots.temperature_histogram(teacher, student, temperature=-1.0)


def test_sharpness_gap_vs_delta_marks_the_minimum_and_the_formula():
    deltas = np.linspace(-3, 3, 61)
    gaps = np.stack([np.abs(deltas - 1.0), np.abs(deltas + 2.0)], axis=1)
    figure = plots.sharpness_gap_vs_delta(deltas, gaps, formula_deltas=[0.5, 0.0], labels=["a", "b"])
    (ax,) = figure.axes
    markers = {(line.get_marker(), round(float(line.get_xdata()[0]), 6), round(float(line.get_ydata()[0]), 6))
               for line in ax.lines if len(line.get_xdata()) == 1}
    assert ("o", 1.0, 0.0) in markers and ("o", -2.0, 0.0) in markers       # the minima
    assert ("x", 0.5, 0.5) in markers and ("x", 0.0, 2.0) in markers        # the closed form, on its curve
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels[:2] == ["a", "b"] and "closed form (eqs. 4-5)" in labels


def test_sharpness_gap_vs_delta_checks_shapes():
    with pytest.raises(ValueError, match="gaps must have shape"):
        plots.sharpness_gap_vs_delta(np.linspace(-1, 1, 5), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="formula_deltas"):
        plots.sharpness_gap_vs_delta(np.linspace(-1, 1, 5), np.zeros((5, 2)), formula_deltas=[0.0])


def test_styled_keeps_the_interactive_mode_a_backend_switched_on_inside():
    # Jupyter's inline backend turns interactive mode on when pyplot makes its first figure; if that happens
    # inside the style's rc_context, the mode must survive leaving it, or no later figure is displayed.
    was = matplotlib.is_interactive()
    try:
        matplotlib.interactive(False)

        def first_figure():
            matplotlib.interactive(True)
            return Figure()

        assert isinstance(plots._styled(first_figure)(), Figure)
        assert matplotlib.is_interactive()
    finally:
        matplotlib.interactive(was)


def test_temperature_vs_difficulty_marks_wrong_samples_medians_and_tau():
    confidence = np.array([0.999, 0.99, 0.9, 0.6, 0.5, 0.4])
    temperatures = np.array([4.1, 4.2, 4.5, 5.0, 5.5, 6.0])
    correct = np.array([True, True, True, True, False, False])
    figure = plots.temperature_vs_difficulty(confidence, temperatures, correct, temperature=4.0, bins=2)
    (ax,) = figure.axes
    right, wrong = ax.collections
    assert len(right.get_offsets()) == 4 and len(wrong.get_offsets()) == 2
    np.testing.assert_allclose(wrong.get_offsets()[:, 0], [0.5, 0.6])            # x = 1 - confidence
    medians = [line for line in ax.lines if line.get_marker() == "s"][0]
    np.testing.assert_allclose(medians.get_ydata(), [4.2, 5.5])                   # two groups of three samples
    assert any(np.allclose(line.get_ydata(), 4.0) for line in ax.lines if line.get_linestyle() == ":")
    assert ax.get_xscale() == "log"


def test_temperature_vs_difficulty_checks_its_inputs():
    with pytest.raises(ValueError, match="same"):
        plots.temperature_vs_difficulty(np.ones(3), np.ones(2), np.ones(3, bool), temperature=4.0)
    with pytest.raises(ValueError, match="bins"):
        plots.temperature_vs_difficulty(np.ones(3), np.ones(3), np.ones(3, bool), temperature=4.0, bins=5)
