"""Figures of notebook 05 (Frank & Davis's studies): the bars and lines drawn are the numbers given."""
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from kdlab import entropy, plots, smoothing_for_entropy, tempered_softmax


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_teacher_vs_label_smoothing_draws_matched_bars_per_temperature():
    generator = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(30, 10, generator=generator, dtype=torch.float64)
    fig = plots.teacher_vs_label_smoothing(logits, [1, 4], top=5)
    axes = fig.axes
    assert len(axes) == 2
    for ax, temperature in zip(axes, (1.0, 4.0)):
        heights = [patch.get_height() for patch in ax.patches]
        assert len(heights) == 10  # 5 teacher bars, then 5 label-smoothing bars
        probs = tempered_softmax(logits, temperature)
        expected = probs.sort(1, descending=True).values.mean(0)[:5].numpy()
        np.testing.assert_allclose(heights[:5], expected, atol=1e-12)
        eps = smoothing_for_entropy(10, float(entropy(probs).mean()))
        np.testing.assert_allclose(heights[5:], [1 - eps + eps / 10] + [eps / 10] * 4, atol=1e-12)
        assert f"T = {temperature:g}" in ax.get_title()
    with pytest.raises(ValueError, match="top must be"):
        plots.teacher_vs_label_smoothing(logits, [1], top=0)


def _training_frame():
    rows = []
    for optimizer in ("sgd", "adamw"):
        for batch_size in (32, 128):
            for temperature in (1.0, 4.0):
                for seed in (0, 1):
                    for epoch in (1, 2, 3):
                        value = 50 + 10 * epoch + (5 if temperature == 4.0 else 0) * (epoch == 3) + seed
                        rows.append((optimizer, batch_size, temperature, seed, epoch, value))
    return pd.DataFrame(rows, columns=["optimizer", "batch_size", "temperature", "seed", "epoch", "test_acc"])


def test_temperature_by_training_length_one_panel_per_setting_and_a_line_per_epoch():
    frame = _training_frame()
    fig = plots.temperature_by_training_length(frame, epochs=[1, 3])
    assert len(fig.axes) == 4
    ax = fig.axes[0]  # ("adamw", 32) comes first in sorted order
    assert ax.get_title() == "adamw, batch 32"
    containers = {container.get_label(): container for container in ax.containers}  # one errorbar per epoch
    assert sorted(containers) == ["epoch 1", "epoch 3"]
    lines = [containers["epoch 1"].lines[0], containers["epoch 3"].lines[0]]
    np.testing.assert_allclose(np.asarray(lines[0].get_ydata(), dtype=float), [60.5, 60.5])  # mean over seeds 0 and 1
    np.testing.assert_allclose(np.asarray(lines[1].get_ydata(), dtype=float), [80.5, 85.5])
    stars = [line for line in ax.lines if line.get_marker() == "*"]
    assert [float(star.get_xdata()[0]) for star in stars][-1] == 4.0  # the best T at epoch 3
    legend = fig.axes[-1].get_legend()
    assert sorted(text.get_text() for text in legend.get_texts()) == ["epoch 1", "epoch 3", "highest mean over T"]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    assert legend.get_window_extent(renderer).x0 >= fig.axes[-1].get_window_extent(renderer).x1  # over no data
    with pytest.raises(ValueError, match="epochs must be epochs present"):
        plots.temperature_by_training_length(frame, epochs=[7])
    with pytest.raises(ValueError, match="'optimizer'"):
        plots.temperature_by_training_length(frame.drop(columns="optimizer"), epochs=[1])


def test_temperature_by_training_length_draws_into_given_axes():
    axes = Figure().subplots(1, 4)
    fig = plots.temperature_by_training_length(_training_frame(), epochs=[3], axes=axes)
    assert fig is axes[0].figure and all(ax.lines for ax in axes)
