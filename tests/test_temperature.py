"""Tests for kdlab.temperature: identities from the papers, golden values, limits and bad input."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kdlab.temperature import (
    entropy,
    log_tempered_softmax,
    power_sum,
    power_transform,
    renyi_entropy,
    sharpness,
    smoothing_for_entropy,
    temperature_for_entropy,
    tempered_softmax,
)

# The inputs of papers.md §5 (K = 5).
TEACHER = torch.tensor([[3, 1, 0.2, -1, -2.5], [0.5, 0.4, 0.1, 0, -0.3]], dtype=torch.float64)


def random_logits(batch=6, num_classes=7, scale=3.0, seed=0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(batch, num_classes, generator=generator)).to(dtype)


# --- tempered softmax ---------------------------------------------------------------------------------------

def test_tempered_softmax_at_t1_is_softmax_and_sums_to_one():
    logits = random_logits()
    for temperature in (0.05, 0.5, 1.0, 3.0, 1000.0):
        probs = tempered_softmax(logits, temperature)
        torch.testing.assert_close(probs.sum(-1), torch.ones(6, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(tempered_softmax(logits, 1.0), torch.softmax(logits, -1), rtol=0, atol=1e-15)


def test_tempered_softmax_is_softmax_of_scaled_logits_and_shift_invariant():
    logits = random_logits()
    torch.testing.assert_close(tempered_softmax(logits, 4.0), torch.softmax(logits / 4, -1), rtol=0, atol=1e-15)
    torch.testing.assert_close(tempered_softmax(logits + 123.0, 4.0), tempered_softmax(logits, 4.0), rtol=0, atol=1e-13)


def test_tempered_softmax_limits_one_hot_and_uniform():
    logits = torch.tensor([[2.0, 1.0, -1.0, 0.5]], dtype=torch.float64)
    cold = tempered_softmax(logits, 1e-3)
    assert cold[0, 0].item() == pytest.approx(1.0, abs=1e-12)
    hot = tempered_softmax(logits, 1e6)
    torch.testing.assert_close(hot, torch.full_like(hot, 0.25), rtol=0, atol=1e-6)


def test_per_sample_temperature_tensor_matches_scalar_calls():
    logits = random_logits(batch=3)
    temperatures = torch.tensor([[0.5], [2.0], [7.0]], dtype=torch.float64)
    batched = tempered_softmax(logits, temperatures)
    for row, temperature in enumerate((0.5, 2.0, 7.0)):
        torch.testing.assert_close(batched[row], tempered_softmax(logits[row : row + 1], temperature)[0], rtol=0, atol=1e-15)


def test_log_tempered_softmax_is_finite_where_the_probability_underflows():
    logits = torch.tensor([[0.0, -2000.0]], dtype=torch.float32)
    log_probs = log_tempered_softmax(logits, 1.0)
    assert torch.isfinite(log_probs).all()
    assert log_probs[0, 1].item() == pytest.approx(-2000.0, rel=1e-6)
    assert tempered_softmax(logits, 1.0)[0, 1].item() == 0.0  # the plain probability does underflow


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_keeps_dtype_and_is_close_to_float64(dtype):
    logits = random_logits(dtype=dtype)
    probs = tempered_softmax(logits, 3.0)
    assert probs.dtype == dtype
    reference = torch.softmax(logits.double() / 3.0, -1)
    tolerance = {torch.float16: 2e-3, torch.bfloat16: 1e-2, torch.float32: 1e-6}[dtype]
    torch.testing.assert_close(probs.double(), reference, rtol=0, atol=tolerance)


# --- power transform ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("gamma", [0.1, 0.25, 0.5, 1.0, 2.0])
def test_power_transform_is_temperature_scaling(gamma):
    # TTM eqs. 6-9: normalize(softmax(v)^gamma) = softmax(gamma v) = softmax(v / T), T = 1 / gamma.
    logits = random_logits()
    expected = torch.softmax(gamma * logits, -1)
    torch.testing.assert_close(power_transform(torch.softmax(logits, -1), gamma), expected, rtol=0, atol=1e-14)
    torch.testing.assert_close(tempered_softmax(logits, 1 / gamma), expected, rtol=0, atol=1e-14)


def test_power_transform_matches_the_naive_formula():
    probs = torch.softmax(random_logits(), -1)
    naive = probs**0.3 / (probs**0.3).sum(-1, keepdim=True)
    torch.testing.assert_close(power_transform(probs, 0.3), naive, rtol=0, atol=1e-14)


def test_power_transform_of_log_probabilities_does_not_underflow():
    # papers.md §1.5 test 7: in float32, softmax([0, -120])^0.1 normalised gives [1, 0] (exp(-120) underflows);
    # softmax(0.1 * v) is [0.9999939, 6.14e-6]. The log-input path reproduces softmax(0.1 * v).
    logits = torch.tensor([[0.0, -120.0]], dtype=torch.float32)
    naive = torch.softmax(logits, -1) ** 0.1
    assert (naive / naive.sum()).tolist() == [[1.0, 0.0]]
    transformed = power_transform(torch.log_softmax(logits, -1), 0.1, log_input=True)
    assert transformed[0, 1].item() == pytest.approx(6.14e-6, rel=1e-2)
    torch.testing.assert_close(transformed, torch.softmax(0.1 * logits, -1), rtol=1e-5, atol=0)


def test_power_transform_keeps_zero_probabilities_at_zero():
    probs = torch.tensor([[0.5, 0.5, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(power_transform(probs, 0.2), probs, rtol=0, atol=1e-15)


# --- entropies and the power sum ----------------------------------------------------------------------------

def test_entropy_golden_values_rise_with_temperature():
    # papers.md §3 test idea 1 (4 decimals given there).
    temperatures = (0.5, 1, 2, 4, 8, 40)
    expected = (0.1168, 0.6381, 1.2347, 1.5037, 1.5824, 1.6084)
    values = [entropy(tempered_softmax(TEACHER[0], t)).item() for t in temperatures]
    for value, golden in zip(values, expected):
        assert value == pytest.approx(golden, abs=1e-4)
    assert all(a < b for a, b in zip(values, values[1:])) and values[-1] < math.log(5)


def test_entropy_extremes():
    one_hot = torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    uniform = torch.full((4,), 0.25, dtype=torch.float64)
    assert entropy(one_hot).item() == 0.0
    assert entropy(uniform).item() == pytest.approx(math.log(4), abs=1e-15)


def test_renyi_entropy_limits_and_order():
    probs = torch.softmax(random_logits(), -1)
    shannon = entropy(probs)
    for alpha in (1 - 1e-5, 1 + 1e-5):
        torch.testing.assert_close(renyi_entropy(probs, alpha), shannon, rtol=0, atol=1e-4)
    torch.testing.assert_close(renyi_entropy(probs, 1), shannon, rtol=0, atol=0)
    torch.testing.assert_close(renyi_entropy(probs, math.inf), -probs.amax(-1).log(), rtol=0, atol=1e-15)
    sparse = torch.tensor([0.5, 0.3, 0.2, 0.0], dtype=torch.float64)
    assert renyi_entropy(sparse, 0).item() == pytest.approx(math.log(3), abs=1e-15)
    orders = [renyi_entropy(probs, alpha) for alpha in (0.0, 0.1, 0.5, 0.99, 2.0, 5.0, math.inf)]
    for higher, lower in zip(orders, orders[1:]):
        assert (lower <= higher + 1e-12).all()


def test_renyi_entropy_matches_definition():
    probs = torch.softmax(random_logits(), -1)
    alpha = 0.25
    expected = torch.log((probs**alpha).sum(-1)) / (1 - alpha)
    torch.testing.assert_close(renyi_entropy(probs, alpha), expected, rtol=0, atol=1e-13)


def test_power_sum_bounds_reached_at_one_hot_and_uniform():
    # TTM eq. 22: 1 <= U_gamma(p) <= K^(1 - gamma) for 0 < gamma < 1.
    num_classes, gamma = 100, 0.1
    one_hot = torch.zeros(num_classes, dtype=torch.float64)
    one_hot[3] = 1.0
    uniform = torch.full((num_classes,), 1 / num_classes, dtype=torch.float64)
    assert power_sum(one_hot, gamma).item() == pytest.approx(1.0, abs=1e-15)
    assert power_sum(uniform, gamma).item() == pytest.approx(num_classes ** (1 - gamma), rel=1e-13)
    assert num_classes ** (1 - gamma) == pytest.approx(63.0957, abs=1e-4)
    probs = torch.softmax(random_logits(batch=50, num_classes=num_classes), -1)
    values = power_sum(probs, gamma)
    assert (values > 1).all() and (values < num_classes ** (1 - gamma)).all()


def test_power_sum_is_exp_of_scaled_renyi_entropy():
    probs = torch.softmax(random_logits(), -1)
    for gamma in (0.1, 0.5, 0.8):
        expected = torch.exp((1 - gamma) * renyi_entropy(probs, gamma))
        torch.testing.assert_close(power_sum(probs, gamma), expected, rtol=1e-13, atol=0)


def test_power_sum_golden_values():
    probs = torch.softmax(TEACHER, -1)
    torch.testing.assert_close(power_sum(probs, 1 / 2), torch.tensor([1.6430608437, 2.2141330651], dtype=torch.float64), rtol=0, atol=1e-9)
    torch.testing.assert_close(power_sum(probs, 1 / 4), torch.tensor([2.5925083125, 3.3188587328], dtype=torch.float64), rtol=0, atol=1e-9)


# --- sharpness ----------------------------------------------------------------------------------------------

def test_sharpness_is_logsumexp_and_obeys_dtkd_proposition_1():
    a, b = random_logits(seed=1), random_logits(seed=2)
    torch.testing.assert_close(sharpness(a), torch.log(torch.exp(a).sum(-1)), rtol=1e-14, atol=0)
    # DTKD Prop. 1: |LSE(a) - LSE(b)| <= max_i |a_i - b_i|.
    assert ((sharpness(a) - sharpness(b)).abs() <= (a - b).abs().amax(-1) + 1e-12).all()
    assert torch.isfinite(sharpness(torch.tensor([[1e4, -1e4]], dtype=torch.float32))).all()


# --- entropy-matched temperature and label smoothing --------------------------------------------------------

def test_temperature_for_entropy_golden_value():
    # papers.md §3 test idea 2: the LS target with K = 5, eps = 0.1 has H = 0.38967, matched by T ~ 0.76597.
    temperature = temperature_for_entropy(TEACHER[:1], 0.38967)
    assert temperature.shape == (1, 1)
    assert temperature.item() == pytest.approx(0.76597, abs=1e-5)


def test_temperature_for_entropy_round_trip_per_sample():
    logits = random_logits(batch=8, num_classes=10)
    targets = torch.linspace(0.05, math.log(10) - 0.01, 8, dtype=torch.float64)
    temperatures = temperature_for_entropy(logits, targets)
    assert temperatures.shape == (8, 1) and (temperatures > 0).all()
    torch.testing.assert_close(entropy(tempered_softmax(logits, temperatures)), targets, rtol=0, atol=1e-10)


def test_temperature_for_entropy_float32_and_extreme_scale():
    logits = torch.tensor([[5000.0, 0.0, -3000.0], [1e-3, 0.0, -1e-3]], dtype=torch.float32)
    temperatures = temperature_for_entropy(logits, 0.5)
    assert temperatures.dtype == torch.float32 and torch.isfinite(temperatures).all()
    torch.testing.assert_close(entropy(tempered_softmax(logits.double(), temperatures.double())),
                               torch.full((2,), 0.5, dtype=torch.float64), rtol=0, atol=1e-4)


def test_temperature_for_entropy_rejects_unreachable_targets():
    logits = torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64)  # two tied maxima: H >= log 2 as T -> 0
    with pytest.raises(ValueError, match="target_entropy"):
        temperature_for_entropy(logits, 0.5)
    with pytest.raises(ValueError, match="target_entropy"):
        temperature_for_entropy(logits, math.log(3))
    with pytest.raises(ValueError, match="target_entropy"):
        temperature_for_entropy(torch.zeros(1, 3), 0.5)  # constant logits: H = log K at every T
    assert temperature_for_entropy(logits, 0.8).item() > 0


def test_smoothing_for_entropy_golden_and_round_trip():
    assert smoothing_for_entropy(5, 0.38967) == pytest.approx(0.1, abs=1e-5)
    for num_classes in (2, 10, 100):
        for eps in (0.0, 0.05, 0.3, 0.9, 1.0):
            target = (1 - eps) * torch.nn.functional.one_hot(torch.tensor(0), num_classes).double() + eps / num_classes
            found = smoothing_for_entropy(num_classes, entropy(target).item())
            # Near eps = 1 the entropy is flat (maximum at the uniform target), so eps is only good to ~1e-8.
            assert found == pytest.approx(eps, abs=1e-7)
            smoothed = (1 - found) * torch.nn.functional.one_hot(torch.tensor(0), num_classes).double() + found / num_classes
            assert entropy(smoothed).item() == pytest.approx(entropy(target).item(), abs=1e-12)
    batch = smoothing_for_entropy(5, torch.tensor([0.0, 0.38967, math.log(5)]))
    torch.testing.assert_close(batch, torch.tensor([0.0, 0.1, 1.0], dtype=torch.float64), rtol=0, atol=1e-5)


# --- bad input ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("temperature", [0.0, -1.0, math.inf, math.nan])
def test_bad_temperature_values_raise_value_error(temperature):
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        tempered_softmax(random_logits(), temperature)


def test_bad_temperature_types_and_tensors():
    logits = random_logits(batch=3)
    with pytest.raises(TypeError, match="temperature"):
        tempered_softmax(logits, "4")
    with pytest.raises(TypeError, match="temperature"):
        tempered_softmax(logits, True)
    with pytest.raises(TypeError, match="temperature"):
        tempered_softmax(logits, torch.tensor([[2]]))
    with pytest.raises(ValueError, match="temperature must be finite and > 0"):
        tempered_softmax(logits, torch.tensor([[1.0], [-1.0], [2.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match="temperature must broadcast"):
        tempered_softmax(logits, torch.ones(5, 1, dtype=torch.float64))


def test_bad_logits_and_probs():
    with pytest.raises(TypeError, match="logits must be a floating-point tensor"):
        tempered_softmax(torch.tensor([[1, 2, 3]]), 2.0)
    with pytest.raises(TypeError, match="logits must be a torch.Tensor"):
        sharpness([1.0, 2.0])
    with pytest.raises(ValueError, match="probs must hold finite probabilities >= 0"):
        entropy(torch.tensor([0.5, 0.7, -0.2]))
    with pytest.raises(ValueError, match="probs must sum to 1"):
        power_sum(torch.tensor([0.5, 0.7]), 0.5)
    with pytest.raises(ValueError, match="gamma must be a finite number > 0"):
        power_transform(torch.tensor([0.5, 0.5]), 0.0)
    with pytest.raises(ValueError, match="alpha must be a number >= 0"):
        renyi_entropy(torch.tensor([0.5, 0.5]), -1.0)
    with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
        smoothing_for_entropy(1, 0.1)
    with pytest.raises(ValueError, match="target_entropy must lie in"):
        smoothing_for_entropy(5, 2.0)


# --- extremes (property test) -------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(
    num_classes=st.integers(2, 50),
    log_scale=st.floats(-3.0, 4.0),
    log_temperature=st.floats(math.log10(0.05), 3.0),
    dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]),
    seed=st.integers(0, 2**31 - 1),
)
def test_distributions_stay_valid_at_extremes(num_classes, log_scale, log_temperature, dtype, seed):
    generator = torch.Generator().manual_seed(seed)
    logits = (10.0**log_scale * torch.randn(3, num_classes, generator=generator)).clamp(-1e4, 1e4).to(dtype)
    temperature = 10.0**log_temperature
    probs = tempered_softmax(logits, temperature)
    assert probs.dtype == dtype and torch.isfinite(probs).all() and (probs >= 0).all()
    tolerance = 4 * num_classes * torch.finfo(dtype).eps
    assert ((probs.double().sum(-1) - 1).abs() <= tolerance).all()
    assert torch.isfinite(log_tempered_softmax(logits, temperature)).all()
    transformed = power_transform(torch.log_softmax(logits.float(), -1), 1 / temperature, log_input=True)
    torch.testing.assert_close(transformed, torch.softmax(logits.float() / temperature, -1), rtol=1e-4, atol=1e-6)
    values = entropy(probs.float())
    assert ((values >= -1e-6) & (values <= math.log(num_classes) + 1e-5)).all()
