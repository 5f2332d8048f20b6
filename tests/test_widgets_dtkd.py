"""DTKD sharpness explorer: move every slider (extremes included) and check what is computed and drawn."""
import base64
import math

import ipywidgets
import pytest
import torch
from matplotlib.figure import Figure

from kdlab import dtkd_temperatures, tempered_softmax
from kdlab import widgets

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SLIDERS = ("teacher scale", "student scale", "student shift", "tau", "sample")


@pytest.fixture
def pair():
    torch.manual_seed(0)
    teacher = torch.randn(6, 10, dtype=torch.float64) * 3
    teacher[:, 0] += 6.0  # a confident teacher: max logit well above 0
    student = torch.randn(6, 10, dtype=torch.float64) * 1.5 + 0.5
    return teacher, student


def _png(explorer):
    (message,) = explorer.output.outputs
    return base64.b64decode(message["data"]["image/png"])


def _expected(teacher_row, student_row, tau):
    """Independent float64 recomputation of the chosen sample's numbers."""
    x, y = float(teacher_row.max()), float(student_row.max())
    teacher_t, student_t = 2 * x / (x + y) * tau, 2 * y / (x + y) * tau
    before = abs(float(torch.logsumexp(teacher_row / tau, -1) - torch.logsumexp(student_row / tau, -1)))
    after = abs(float(torch.logsumexp(teacher_row / teacher_t, -1) - torch.logsumexp(student_row / student_t, -1)))
    return teacher_t, student_t, before, after


def test_contract(pair):
    explorer = widgets.dtkd_explorer(*pair)
    assert isinstance(explorer, ipywidgets.VBox)
    assert isinstance(explorer.figure, Figure)
    assert tuple(explorer.sliders) == SLIDERS
    for name, slider in explorer.sliders.items():
        assert slider.description == name
    assert _png(explorer).startswith(PNG_MAGIC)
    assert len(explorer.figure.axes) == 3
    assert explorer.state["tau"] == pytest.approx(4.0, rel=1e-12)


@pytest.mark.parametrize("sample", [0, 5])
def test_state_matches_the_closed_form_and_the_drawing(pair, sample):
    teacher, student = pair
    explorer = widgets.dtkd_explorer(teacher, student, temperature=4.0)
    explorer.sliders["sample"].value = sample
    state = explorer.state
    teacher_t, student_t, before, after = _expected(teacher[sample], student[sample], 4.0)
    assert state["teacher_temperature"] == pytest.approx(teacher_t, rel=1e-12)
    assert state["student_temperature"] == pytest.approx(student_t, rel=1e-12)
    assert state["teacher_temperature"] + state["student_temperature"] == pytest.approx(8.0, abs=1e-12)
    assert state["gap_before"] == pytest.approx(before, abs=1e-12)
    assert state["gap_after"] == pytest.approx(after, abs=1e-12)
    all_teacher, all_student = dtkd_temperatures(student, teacher, 4.0)
    assert torch.allclose(state["teacher_temperatures"], all_teacher.reshape(-1), atol=1e-12)
    assert torch.allclose(state["student_temperatures"], all_student.reshape(-1), atol=1e-12)
    assert torch.allclose(state["teacher_probs"], tempered_softmax(teacher[sample], teacher_t), atol=1e-12)
    assert torch.allclose(state["student_probs"], tempered_softmax(student[sample], student_t), atol=1e-12)
    # eq. 3's grid minimum is never worse than KD (delta = 0 is on the grid) and, with both maxima > 0, is
    # a root: the gap goes from +inf (delta -> -tau) to -inf (delta -> tau).
    assert state["optimal_gap"] <= state["gap_before"] + 1e-9
    assert state["optimal_gap"] < 1e-2
    assert -4.0 < state["optimal_delta"] < 4.0
    # Drawn: sharpness bars (teacher then student; KD, DTKD, eq. 3) and the two distributions.
    sharp_ax, probs_ax, hist_ax = explorer.figure.axes
    heights = [patch.get_height() for patch in sharp_ax.patches]
    assert heights[0] == pytest.approx(state["teacher_sharpness_before"], abs=1e-12)
    assert heights[1] == pytest.approx(state["teacher_sharpness_after"], abs=1e-12)
    assert heights[3] == pytest.approx(state["student_sharpness_before"], abs=1e-12)
    assert heights[4] == pytest.approx(state["student_sharpness_after"], abs=1e-12)
    assert f"{state['gap_after']:.3g}" in sharp_ax.get_title()
    bars = [patch.get_height() for patch in probs_ax.patches]
    assert bars[:10] == pytest.approx(state["teacher_probs"].tolist(), abs=1e-12)
    assert bars[10:] == pytest.approx(state["student_probs"].tolist(), abs=1e-12)
    assert hist_ax.get_xlim()[1] >= 8.0 - 1e-9  # the histograms span 0 .. 2 tau


@pytest.mark.parametrize("scale", [0.01, 1.0, 100.0])
def test_a_scaled_copy_of_the_teacher_is_matched_exactly(pair, scale):
    # DTKD's exact-zero case: z = c v with c > 0 and max v > 0 makes v / T_t == z / T_s, whatever c.
    teacher, _ = pair
    explorer = widgets.dtkd_explorer(teacher, teacher.clone())
    explorer.sliders["student scale"].value = scale
    state = explorer.state
    assert state["student_scale"] == pytest.approx(scale, rel=1e-12)
    assert state["gap_after"] == pytest.approx(0.0, abs=1e-9)
    assert torch.allclose(state["teacher_probs"], state["student_probs"], atol=1e-12)
    assert state["teacher_temperature"] / state["student_temperature"] == pytest.approx(1 / scale, rel=1e-9)
    _, _, before, _ = _expected(teacher[0], teacher[0] * scale, 4.0)
    assert state["gap_before"] == pytest.approx(before, abs=1e-12)
    if scale != 1.0:
        assert state["gap_before"] > 0.01  # plain KD at tau does not match the sharpness


@pytest.mark.parametrize("name", ["teacher scale", "student scale"])
@pytest.mark.parametrize("value", [0.01, 100.0])
def test_extreme_scales_keep_the_temperatures_finite_and_positive(pair, name, value):
    explorer = widgets.dtkd_explorer(*pair)
    before = _png(explorer)
    explorer.sliders[name].value = value
    state = explorer.state
    for key in ("teacher_temperatures", "student_temperatures"):
        assert bool(torch.isfinite(state[key]).all()) and bool((state[key] > 0).all())
    assert torch.allclose(state["teacher_temperatures"] + state["student_temperatures"],
                          torch.full((6,), 8.0, dtype=torch.float64), atol=1e-9)
    assert math.isfinite(state["gap_after"]) and math.isfinite(state["optimal_gap"])
    # A huge teacher scale makes the teacher the sharper model: it gets the higher temperature (and vice versa).
    if (name, value) in (("teacher scale", 100.0), ("student scale", 0.01)):
        assert state["teacher_temperature"] > state["student_temperature"]
    else:
        assert state["teacher_temperature"] < state["student_temperature"]
    assert _png(explorer) != before


@pytest.mark.parametrize("tau", [0.5, 20.0])
def test_tau_slider_extremes(pair, tau):
    teacher, student = pair
    explorer = widgets.dtkd_explorer(teacher, student)
    explorer.sliders["sample"].value = 3
    explorer.sliders["tau"].value = tau
    state = explorer.state
    teacher_t, student_t, before, after = _expected(teacher[3], student[3], tau)
    assert state["tau"] == pytest.approx(tau, rel=1e-9)
    assert state["teacher_temperature"] == pytest.approx(teacher_t, rel=1e-9)
    assert state["student_temperature"] == pytest.approx(student_t, rel=1e-9)
    assert state["gap_after"] == pytest.approx(after, abs=1e-9)
    assert explorer.figure.axes[2].get_xlim()[1] >= 2 * tau - 1e-9


def test_shift_changes_sharpness_not_the_distribution(pair):
    # Adding a constant c to the student logits leaves softmax(z / T) unchanged but adds c / T to the
    # sharpness, so DTKD's temperatures move although the student's prediction did not.
    explorer = widgets.dtkd_explorer(*pair)
    explorer.sliders["tau"].value = 4.0
    base = dict(explorer.state)
    explorer.sliders["student shift"].value = 3.0
    shifted = explorer.state
    assert shifted["student_sharpness_before"] == pytest.approx(base["student_sharpness_before"] + 3.0 / 4.0, abs=1e-9)
    assert shifted["student_max"] == pytest.approx(base["student_max"] + 3.0, abs=1e-9)
    assert shifted["student_temperature"] > base["student_temperature"] + 0.1


@pytest.mark.parametrize("shift", [-20.0, 20.0])
def test_degenerate_maxima_fall_back_to_tau(pair, shift):
    # shift -20 pushes every student logit below 0 (y <= 0; with a small teacher scale also x + y <= 0):
    # the unguarded formula would give negative or infinite temperatures; kdlab uses tau for both.
    explorer = widgets.dtkd_explorer(*pair)
    explorer.sliders["teacher scale"].value = 0.01
    explorer.sliders["student shift"].value = shift
    state = explorer.state
    if shift < 0:
        assert state["degenerate"] and state["student_max"] + state["teacher_max"] <= 0
        assert state["teacher_temperature"] == pytest.approx(4.0, abs=1e-12)
        assert state["student_temperature"] == pytest.approx(4.0, abs=1e-12)
        assert state["gap_after"] == pytest.approx(state["gap_before"], abs=1e-12)
        assert "both at tau" in explorer.figure.axes[1].get_title()
    else:
        assert not state["degenerate"]
    for key in ("teacher_temperatures", "student_temperatures"):
        assert bool(torch.isfinite(state[key]).all()) and bool((state[key] > 0).all())


def test_all_negative_logits_are_handled():
    teacher = -torch.rand(3, 5, dtype=torch.float64) - 0.1
    explorer = widgets.dtkd_explorer(teacher, teacher.flip(1), temperature=2.0)
    assert explorer.state["degenerate"]
    assert torch.allclose(explorer.state["student_temperatures"], torch.full((3,), 2.0, dtype=torch.float64))


def test_bad_inputs():
    logits = torch.randn(4, 10)
    with pytest.raises(ValueError, match="same shape"):
        widgets.dtkd_explorer(logits, torch.randn(4, 9))
    with pytest.raises(TypeError, match="student_logits"):
        widgets.dtkd_explorer(logits, [[1.0, 2.0]])
    with pytest.raises(ValueError, match="temperature"):
        widgets.dtkd_explorer(logits, logits, temperature=0.0)
    with pytest.raises(ValueError, match="teacher_logits"):
        widgets.dtkd_explorer(torch.full((4, 10), float("nan")), logits)
    with pytest.raises(ValueError, match="class_names"):
        widgets.dtkd_explorer(logits, logits, class_names=["a", "b"])
