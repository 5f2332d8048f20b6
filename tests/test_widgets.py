"""Widget builders: move the sliders (extremes included) and check what is computed and what is drawn."""
import base64
import math

import ipywidgets
import pytest
import torch
from matplotlib.figure import Figure

from kdlab import entropy, power_sum, renyi_entropy, tempered_softmax, ttm_loss, kd_loss
from kdlab import widgets

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def logits():
    torch.manual_seed(0)
    return torch.randn(4, 10, dtype=torch.float64) * 4


def _drawn_png(explorer):
    (message,) = explorer.output.outputs
    assert message["output_type"] == "display_data"
    return base64.b64decode(message["data"]["image/png"])


def _bar_heights(ax):
    return [patch.get_height() for patch in ax.patches]


def test_contract_of_every_builder(logits):
    built = [
        widgets.temperature_explorer(logits),
        widgets.power_transform_explorer(logits),
        widgets.renyi_explorer(logits.flip(1), logits),
    ]
    for explorer in built:
        assert isinstance(explorer, ipywidgets.VBox)
        assert isinstance(explorer.figure, Figure)
        assert explorer.state, "the builder must draw once when it is built"
        assert _drawn_png(explorer).startswith(PNG_MAGIC)
        for name, slider in explorer.sliders.items():
            assert slider.description == name
        # The sliders are shown inside the VBox.
        shown = [child for row in explorer.children if isinstance(row, ipywidgets.HBox) for child in row.children]
        assert set(map(id, shown)) == set(map(id, explorer.sliders.values()))


@pytest.mark.parametrize("temperature", [0.1, 100.0])
def test_temperature_explorer_computes_and_draws_the_tempered_distribution(logits, temperature):
    explorer = widgets.temperature_explorer(logits, images=torch.rand(4, 1, 28, 28))
    explorer.sliders["sample"].value = 2
    before = _drawn_png(explorer)
    explorer.sliders["temperature"].value = temperature
    state = explorer.state
    expected = tempered_softmax(logits[2], temperature)
    assert state["temperature"] == pytest.approx(temperature, rel=1e-12)
    assert state["sample"] == 2
    assert torch.allclose(state["probs"], expected, atol=1e-12)
    assert state["entropy"] == pytest.approx(float(entropy(expected)), abs=1e-12)
    assert state["max_entropy"] == pytest.approx(math.log(10), abs=1e-12)
    # Drawn: image panel, the distribution (bar heights = probabilities) and the dark-knowledge ranking.
    image_ax, probs_ax, dark_ax = explorer.figure.axes
    assert len(image_ax.images) == 1
    assert _bar_heights(probs_ax) == pytest.approx(expected.tolist(), abs=1e-12)
    assert f"{state['entropy']:.3f}" in probs_ax.get_title()
    assert _bar_heights(dark_ax) == pytest.approx(state["dark_knowledge"].tolist(), abs=1e-12)
    assert [tick.get_text() for tick in dark_ax.get_xticklabels()] == [str(k) for k in state["ranking"]]
    assert _drawn_png(explorer) != before, "moving the slider must replace the image"


def test_temperature_explorer_limits_and_ranking(logits):
    explorer = widgets.temperature_explorer(logits)
    row = logits[0]
    target = int(row.argmax())
    explorer.sliders["temperature"].value = 0.1
    cold = dict(explorer.state)
    explorer.sliders["temperature"].value = 100.0
    hot = dict(explorer.state)
    assert cold["target"] == hot["target"] == target
    # T -> 0: almost one-hot; T -> inf: almost uniform (within 1 % of log K for logits of size ~4 at T = 100).
    assert cold["entropy"] < 0.05
    assert hot["entropy"] > 0.99 * math.log(10)
    # The ranking of the non-target classes is that of the logits, at every temperature.
    by_logit = [k for k in torch.argsort(row, descending=True).tolist() if k != target]
    assert cold["ranking"] == hot["ranking"] == by_logit
    # The shares are softmax over the other logits: they sum to 1 and tend to uniform 1/(K-1) as T grows.
    assert float(hot["dark_knowledge"].sum()) == pytest.approx(1.0, abs=1e-12)
    assert torch.allclose(hot["dark_knowledge"], torch.full((9,), 1 / 9, dtype=torch.float64), atol=0.01)
    assert float(cold["dark_knowledge"][0]) > 0.9
    assert hot["dark_mass"] > cold["dark_mass"]


def test_temperature_explorer_uses_targets_and_class_names(logits):
    targets = torch.tensor([3, 1, 4, 1])
    names = [f"c{k}" for k in range(10)]
    explorer = widgets.temperature_explorer(logits, class_names=names, targets=targets)
    explorer.sliders["sample"].value = 1
    assert explorer.state["target"] == 1
    assert 1 not in explorer.state["ranking"]
    probs_ax, _ = explorer.figure.axes
    assert [tick.get_text() for tick in probs_ax.get_xticklabels()] == names
    highlighted = [index for index, patch in enumerate(probs_ax.patches) if patch.get_facecolor() != probs_ax.patches[0 if index else 1].get_facecolor()]
    assert 1 in highlighted


@pytest.mark.parametrize("gamma", [0.01, 10.0])
def test_power_transform_explorer_equals_temperature_scaling(logits, gamma):
    explorer = widgets.power_transform_explorer(logits)
    explorer.sliders["sample"].value = 3
    explorer.sliders["gamma"].value = gamma
    state = explorer.state
    assert state["temperature"] == pytest.approx(1 / gamma, rel=1e-12)
    assert torch.allclose(state["tempered"], tempered_softmax(logits[3], 1 / gamma), atol=1e-12)
    assert state["max_abs_difference"] < 1e-12
    assert state["power_sum"] == pytest.approx(float(power_sum(torch.softmax(logits[3], -1), gamma)), rel=1e-12)
    left, right = explorer.figure.axes
    assert _bar_heights(left) == pytest.approx(torch.softmax(logits[3], -1).tolist(), abs=1e-12)
    assert _bar_heights(right) == pytest.approx(state["power_transformed"].tolist(), abs=1e-12)
    dots = right.lines[0].get_ydata()
    assert list(dots) == pytest.approx(state["tempered"].tolist(), abs=1e-12)


def test_power_transform_power_sum_bounds_at_extreme_gamma(logits):
    explorer = widgets.power_transform_explorer(logits)
    explorer.sliders["gamma"].value = 0.01
    # 1 <= U_gamma <= K^(1 - gamma) for gamma < 1, close to the upper bound as gamma -> 0.
    assert 1.0 <= explorer.state["power_sum"] <= 10 ** 0.99 + 1e-9
    assert explorer.state["power_sum"] > 0.9 * 10 ** 0.99
    explorer.sliders["gamma"].value = 1.0
    assert explorer.state["power_sum"] == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("temperature", [1.0, 100.0])
def test_renyi_explorer_eq15_terms_and_gradients(logits, temperature):
    student = logits.flip(1) * 0.5
    explorer = widgets.renyi_explorer(student, logits)
    explorer.sliders["sample"].value = 1
    explorer.sliders["temperature"].value = temperature
    state = explorer.state
    z, v = student[1:2], logits[1:2]
    assert state["ttm"] == pytest.approx(float(ttm_loss(z, v, temperature)), rel=1e-10)
    assert state["kd_term"] == pytest.approx(float(kd_loss(z, v, temperature)) / temperature, rel=1e-10)
    q = torch.softmax(student[1], -1)
    assert state["renyi_term"] == pytest.approx(-(temperature - 1) * float(renyi_entropy(q, 1 / temperature)), abs=1e-9)
    assert abs(state["residual"]) < 1e-9 * max(1.0, temperature)
    # Gradients against autograd: d TTM / dz = q - p_T ;  d (T^2 KL(p_T || q_T)) / dz = T (q_T - p_T).
    z_leaf = z.clone().requires_grad_(True)
    (ttm_gradient,) = torch.autograd.grad(ttm_loss(z_leaf, v, temperature), z_leaf)
    (kd_gradient,) = torch.autograd.grad(kd_loss(z_leaf, v, temperature), z_leaf)
    assert torch.allclose(state["ttm_gradient"], ttm_gradient[0], atol=1e-12)
    assert torch.allclose(state["kd_gradient"], kd_gradient[0], atol=1e-12)
    terms_ax, gradient_ax = explorer.figure.axes
    expected_bars = [state[key] for key in ("ttm", "kd_term", "renyi_term", "teacher_term", "right_hand_side")]
    assert _bar_heights(terms_ax) == pytest.approx(expected_bars, rel=1e-12, abs=1e-12)
    assert _bar_heights(gradient_ax) == pytest.approx(
        state["kd_gradient"].tolist() + state["ttm_gradient"].tolist(), abs=1e-12
    )
    if temperature == 1.0:  # T = 1: TTM is KD without temperature, the entropy terms vanish
        assert state["renyi_term"] == 0 and state["teacher_term"] == 0


def test_sample_slider_covers_every_sample(logits):
    explorer = widgets.temperature_explorer(logits)
    slider = explorer.sliders["sample"]
    assert (slider.min, slider.max) == (0, 3)
    slider.value = 3
    assert explorer.state["sample"] == 3
    temperature = explorer.sliders["temperature"]
    assert (temperature.min, temperature.max, temperature.base) == (-1, 2, 10)  # 0.1 .. 100, log scale


def test_single_logit_vector_is_accepted():
    explorer = widgets.power_transform_explorer(torch.tensor([3.0, 1.0, 0.2, -1.0, -2.5]))
    assert explorer.sliders["sample"].max == 0
    assert explorer.state["max_abs_difference"] < 1e-12


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: widgets.temperature_explorer([[1.0, 2.0]]), TypeError, "teacher_logits"),
        (lambda: widgets.temperature_explorer(torch.tensor([[1, 2]])), TypeError, "floating-point"),
        (lambda: widgets.temperature_explorer(torch.zeros(2, 1)), ValueError, "K >= 2"),
        (lambda: widgets.temperature_explorer(torch.tensor([[0.0, math.inf]])), ValueError, "finite"),
        (lambda: widgets.temperature_explorer(torch.zeros(2, 3), class_names=["a"]), ValueError, "class_names"),
        (lambda: widgets.temperature_explorer(torch.zeros(2, 3), images=torch.zeros(3, 4, 4)), ValueError, "images"),
        (lambda: widgets.temperature_explorer(torch.zeros(2, 3), targets=torch.tensor([0, 3])), ValueError, "targets"),
        (lambda: widgets.temperature_explorer(torch.zeros(2, 3), targets=torch.zeros(2)), TypeError, "targets"),
        (lambda: widgets.renyi_explorer(torch.zeros(2, 3), torch.zeros(2, 4)), ValueError, "same shape"),
    ],
)
def test_bad_inputs_raise_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("scale, shift", [(0.1, -20.0), (3.0, 5.0), (10.0, 20.0)])
def test_affine_invariance_explorer_lskd_ignores_scale_and_shift_kd_does_not(logits, scale, shift):
    teacher = logits.flip(1) + 1.0
    explorer = widgets.affine_invariance_explorer(logits, teacher, temperature=2.0)
    assert explorer.state["kd"] == pytest.approx(explorer.state["kd_untransformed"], rel=1e-12)
    before = _drawn_png(explorer)
    explorer.sliders["sample"].value = 1
    explorer.sliders["scale"].value = scale
    explorer.sliders["shift"].value = shift
    state = explorer.state
    assert state["scale"] == pytest.approx(scale, rel=1e-12) and state["shift"] == shift and state["sample"] == 1
    assert torch.allclose(state["transformed"], scale * logits[1] + shift, atol=1e-12)
    assert state["zscore_change"] < 1e-6
    assert state["lskd"] == pytest.approx(state["lskd_untransformed"], rel=1e-5)
    assert state["kd"] == pytest.approx(float(kd_loss(scale * logits[1:2] + shift, teacher[1:2], 2.0)), rel=1e-12)
    assert abs(state["kd"] / state["kd_untransformed"] - 1) > 0.05  # KD does see the scale
    assert _drawn_png(explorer) != before
    left, middle, _ = explorer.figure.axes
    assert _bar_heights(left) == pytest.approx(state["transformed"].tolist(), abs=1e-12)
    assert _bar_heights(middle) == pytest.approx(state["zscore"].tolist(), abs=1e-12)


def test_affine_invariance_explorer_rejects_bad_input(logits):
    with pytest.raises(ValueError, match="same shape"):
        widgets.affine_invariance_explorer(logits, logits[:, :5])
    with pytest.raises(ValueError, match="temperature"):
        widgets.affine_invariance_explorer(logits, logits, temperature=0)
    with pytest.raises(TypeError, match="student_logits"):
        widgets.affine_invariance_explorer([1.0, 2.0], logits)
