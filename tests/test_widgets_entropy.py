"""Entropy-matching explorer (notebook 05, Frank & Davis Fig. 4): move the slider, check state and drawing."""
import base64
import math

import ipywidgets
import pytest
import torch
from matplotlib.figure import Figure

from kdlab import entropy, smoothing_for_entropy
from kdlab import widgets

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def teacher_logits():
    generator = torch.Generator().manual_seed(0)
    logits = 2.0 * torch.randn(40, 10, generator=generator, dtype=torch.float64)
    logits[torch.arange(40), torch.arange(40) % 10] += 6.0  # a confident teacher
    return logits


def _png(explorer):
    (message,) = explorer.output.outputs
    return base64.b64decode(message["data"]["image/png"])


def test_contract(teacher_logits):
    explorer = widgets.entropy_matching_explorer(teacher_logits)
    assert isinstance(explorer, ipywidgets.VBox) and isinstance(explorer.figure, Figure)
    assert tuple(explorer.sliders) == ("temperature",)
    assert explorer.sliders["temperature"].description == "temperature"
    assert _png(explorer).startswith(PNG_MAGIC)
    assert explorer.state["temperature"] == pytest.approx(4.0, rel=1e-12)


@pytest.mark.parametrize("temperature", [0.1, 1.0, 8.0, 100.0])
def test_state_matches_an_independent_recomputation_and_the_bars(teacher_logits, temperature):
    explorer = widgets.entropy_matching_explorer(teacher_logits, top=20)
    explorer.sliders["temperature"].value = temperature
    state = explorer.state
    probs = torch.softmax(teacher_logits / temperature, dim=1)
    mean_entropy = float(entropy(probs).mean())
    assert state["teacher_entropy"] == pytest.approx(mean_entropy, abs=1e-9)
    assert state["smoothing"] == pytest.approx(smoothing_for_entropy(10, min(mean_entropy, math.log(10))), abs=1e-9)
    expected_sorted = probs.sort(dim=1, descending=True).values.mean(0)
    torch.testing.assert_close(state["teacher_sorted"], expected_sorted, rtol=0, atol=1e-12)
    eps = state["smoothing"]
    assert state["smoothing_confidence"] == pytest.approx(1 - eps + eps / 10, abs=1e-12)
    # The label-smoothing target really has the teacher's mean entropy.
    assert float(entropy(state["smoothing_sorted"])) == pytest.approx(mean_entropy, abs=1e-6)
    # The drawn bars are the state's numbers: 10 teacher bars then 10 smoothing bars (K = 10 < top).
    (ax,) = explorer.figure.axes
    heights = [patch.get_height() for patch in ax.patches]
    assert len(heights) == 20
    assert heights[:10] == pytest.approx(state["teacher_sorted"].tolist(), abs=1e-12)
    assert heights[10:] == pytest.approx(state["smoothing_sorted"].tolist(), abs=1e-12)
    assert f"T = {temperature:.3g}" in ax.get_title()


def test_teacher_and_smoothing_differ_in_shape_but_agree_at_the_extremes(teacher_logits):
    explorer = widgets.entropy_matching_explorer(teacher_logits)
    explorer.sliders["temperature"].value = 2.0
    middle = explorer.state["tail_gap"]
    explorer.sliders["temperature"].value = 100.0  # both nearly uniform
    hot = explorer.state["tail_gap"]
    assert middle > 0.01 and hot < middle


def test_rejects_bad_input(teacher_logits):
    with pytest.raises(ValueError, match="top must be"):
        widgets.entropy_matching_explorer(teacher_logits, top=0)
    with pytest.raises(TypeError, match="teacher_logits"):
        widgets.entropy_matching_explorer(teacher_logits.numpy())
