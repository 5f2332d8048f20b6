"""Tests for kdlab.losses: papers.md §5 golden values, paper identities, gradients, bad input and extremes."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

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
from kdlab.temperature import entropy, power_sum, renyi_entropy, tempered_softmax

# papers.md §5 inputs: teacher v, student z, K = 5.
TEACHER = torch.tensor([[3, 1, 0.2, -1, -2.5], [0.5, 0.4, 0.1, 0, -0.3]], dtype=torch.float64)
STUDENT = torch.tensor([[1.5, 0.5, 0.4, -0.2, -1], [1, -0.5, 0.3, 0.2, 0]], dtype=torch.float64)
TARGETS = torch.tensor([0, 2])
GOLDEN = 1e-9


def random_pair(batch=5, num_classes=7, seed=0, dtype=torch.float64, scale=2.0):
    generator = torch.Generator().manual_seed(seed)
    student = scale * torch.randn(batch, num_classes, generator=generator)
    teacher = scale * torch.randn(batch, num_classes, generator=generator) + 1.0
    return student.to(dtype), teacher.to(dtype)


def as_tensor(values):
    return torch.tensor(values, dtype=torch.float64)


# --- golden values (papers.md §5, float64, 1e-9) ------------------------------------------------------------

@pytest.mark.parametrize(
    "temperature, per_sample, mean",
    [
        (1, [0.237565437, 0.120559606], 0.1790625217),
        (2, [0.008380815, 0.112129016], 0.0602549154),
        (4, [0.056947128, 0.114451910], 0.0856995190),
    ],
)
def test_ttm_golden(temperature, per_sample, mean):
    torch.testing.assert_close(ttm_loss(STUDENT, TEACHER, temperature, reduction="none"), as_tensor(per_sample), rtol=0, atol=GOLDEN)
    assert ttm_loss(STUDENT, TEACHER, temperature).item() == pytest.approx(mean, abs=GOLDEN)


@pytest.mark.parametrize("temperature, wttm, hinton", [(1, 0.1790625217, 0.1790625217), (2, 0.1310193752, 0.2863142254), (4, 0.2637428118, 0.3267156539)])
def test_wttm_and_hinton_golden(temperature, wttm, hinton):
    assert wttm_loss(STUDENT, TEACHER, temperature).item() == pytest.approx(wttm, abs=GOLDEN)
    assert kd_loss(STUDENT, TEACHER, temperature).item() == pytest.approx(hinton, abs=GOLDEN)


def test_dtkd_golden():
    teacher_t, student_t = dtkd_temperatures(STUDENT, TEACHER, 4.0)
    torch.testing.assert_close(teacher_t, as_tensor([[16 / 3], [8 / 3]]), rtol=0, atol=1e-12)
    torch.testing.assert_close(student_t, as_tensor([[8 / 3], [16 / 3]]), rtol=0, atol=1e-12)
    per_sample = dtkd_loss(STUDENT, TEACHER, 4.0, reduction="none")
    torch.testing.assert_close(per_sample, as_tensor([0.0207847478, 0.1017552718]), rtol=0, atol=GOLDEN)
    assert dtkd_loss(STUDENT, TEACHER, 4.0).item() == pytest.approx(0.0612700098, abs=GOLDEN)
    # z = 0.6 v: zero in exact arithmetic (papers.md §5); float64 rounding of v / T_t vs z / T_s leaves ~1e-15.
    assert dtkd_loss(0.6 * TEACHER, TEACHER, 4.0).item() == pytest.approx(0.0, abs=1e-13)


def test_lskd_golden_uses_unbiased_std():
    per_sample = lskd_loss(STUDENT, TEACHER, 2.0, reduction="none")
    torch.testing.assert_close(per_sample, as_tensor([0.004532687, 0.5349468191]), rtol=0, atol=GOLDEN)
    assert lskd_loss(STUDENT, TEACHER, 2.0).item() == pytest.approx(0.2697397531, abs=GOLDEN)
    # The population-std variant (papers.md §5: [0.0055576013, 0.6585461555]) is a different loss.
    assert abs(per_sample[1].item() - 0.6585461555) > 0.1


def test_dkd_golden():
    loss = dkd_loss(STUDENT, TEACHER, TARGETS, alpha=1.0, beta=8.0, temperature=4.0)
    assert loss.item() == pytest.approx(1.7885686523, abs=GOLDEN)


def test_dkd_matches_the_masking_formulation_of_the_official_code():
    # An independent re-derivation of mdistiller's dkd_loss (mask the target logit with -1000).
    student, teacher = random_pair(batch=6, num_classes=9, seed=3)
    targets = torch.tensor([0, 3, 8, 2, 2, 5])
    temperature, alpha, beta = 3.0, 1.5, 6.0
    mask = torch.nn.functional.one_hot(targets, 9).double()
    p_s, p_t = torch.softmax(student / temperature, 1), torch.softmax(teacher / temperature, 1)
    b_s = torch.stack([(p_s * mask).sum(1), (p_s * (1 - mask)).sum(1)], 1)
    b_t = torch.stack([(p_t * mask).sum(1), (p_t * (1 - mask)).sum(1)], 1)
    tckd = (b_t * (b_t.log() - b_s.log())).sum(1)
    log_r_s = torch.log_softmax(student / temperature - 1000.0 * mask, 1)
    r_t = torch.softmax(teacher / temperature - 1000.0 * mask, 1)
    nckd = (torch.special.xlogy(r_t, r_t) - r_t * log_r_s).sum(1)
    expected = (temperature**2 * (alpha * tckd + beta * nckd)).mean()
    loss = dkd_loss(student, teacher, targets, alpha=alpha, beta=beta, temperature=temperature)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-12)


# --- identities ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("temperature", [2.0, 4.0, 10.0])
def test_ttm_eq15_identity(temperature):
    # D(p^t_T || q) = T D(p^t_T || q_T) - (T - 1) H_{1/T}(q) + (T - 1) H(p^t_T)
    student, teacher = random_pair(batch=8, num_classes=10, seed=int(temperature))
    q = torch.softmax(student, -1)
    rhs = (
        kd_loss(student, teacher, temperature, reduction="none") / temperature  # T * D(p_T || q_T)
        - (temperature - 1) * renyi_entropy(q, 1 / temperature)
        + (temperature - 1) * entropy(tempered_softmax(teacher, temperature))
    )
    torch.testing.assert_close(ttm_loss(student, teacher, temperature, reduction="none"), rhs, rtol=0, atol=1e-12)


def test_ttm_is_kd_plus_renyi_penalty_up_to_a_teacher_constant():
    # TTM eqs. 16-19: with beta = lambda T / (1 - lambda), L_TTM = (L_KD - lambda T (T-1) H_{1/T}(q)) / (1 - lambda) + c.
    temperature, lam = 4.0, 0.9
    beta = lam * temperature / (1 - lam)
    assert beta == pytest.approx(36.0, abs=1e-12)
    _, teacher = random_pair(seed=1)
    offsets = []
    for seed in (2, 3, 4):
        student, _ = random_pair(seed=seed)
        q = torch.softmax(student, -1)
        ce = -torch.log_softmax(student, -1)[:, 0]
        ttm_total = ce + beta * ttm_loss(student, teacher, temperature, reduction="none")
        kd_total = (1 - lam) * ce + lam * kd_loss(student, teacher, temperature, reduction="none")
        rewritten = (kd_total - lam * temperature * (temperature - 1) * renyi_entropy(q, 1 / temperature)) / (1 - lam)
        offsets.append(ttm_total - rewritten)
    torch.testing.assert_close(offsets[0], offsets[1], rtol=0, atol=1e-11)
    torch.testing.assert_close(offsets[0], offsets[2], rtol=0, atol=1e-11)


def test_gamma_one_gives_ttm_equal_wttm_equal_kd_at_t1():
    student, teacher = random_pair()
    kd = kd_loss(student, teacher, 1.0)
    assert ttm_loss(student, teacher, 1.0).item() == pytest.approx(kd.item(), abs=1e-14)
    assert wttm_loss(student, teacher, 1.0).item() == pytest.approx(kd.item(), abs=1e-14)


def test_wttm_is_power_sum_times_ttm():
    student, teacher = random_pair(num_classes=20)
    for temperature in (1.5, 4.0, 10.0):
        weights = power_sum(torch.softmax(teacher, -1), 1 / temperature)
        assert (weights >= 1).all() and (weights <= 20 ** (1 - 1 / temperature)).all()
        expected = weights * ttm_loss(student, teacher, temperature, reduction="none")
        torch.testing.assert_close(wttm_loss(student, teacher, temperature, reduction="none"), expected, rtol=1e-13, atol=0)


def test_ttm_high_temperature_limit():
    # T -> inf: the transformed teacher is uniform, so TTM -> -log K - mean_i log q_i.
    student, teacher = random_pair(num_classes=6)
    limit = -math.log(6) - torch.log_softmax(student, -1).mean(-1)
    torch.testing.assert_close(ttm_loss(student, teacher, 1e7, reduction="none"), limit, rtol=0, atol=1e-6)


def test_losses_are_invariant_to_constant_logit_shifts():
    student, teacher = random_pair()
    for loss in (kd_loss, ttm_loss, wttm_loss, lskd_loss):
        reference = loss(student, teacher, 3.0)
        assert loss(student + 7.0, teacher - 3.0, 3.0).item() == pytest.approx(reference.item(), abs=1e-12)
    reference = dkd_loss(student, teacher, torch.arange(5))
    assert dkd_loss(student - 5.0, teacher + 2.0, torch.arange(5)).item() == pytest.approx(reference.item(), abs=1e-12)


def test_kl_is_zero_iff_student_equals_teacher_up_to_a_constant():
    student, teacher = random_pair()
    assert kd_loss(teacher + 2.5, teacher, 4.0).item() == pytest.approx(0.0, abs=1e-14)
    assert kd_loss(student, teacher, 4.0).item() > 1e-3


def test_dtkd_temperatures_sum_and_ratio():
    student, teacher = random_pair(batch=16, seed=5)
    student, teacher = student.abs() + 0.5, teacher.abs() + 0.5  # positive max logits, no clamping
    for tau in (1.0, 4.0):
        teacher_t, student_t = dtkd_temperatures(student, teacher, tau)
        assert teacher_t.shape == student_t.shape == (16, 1)
        torch.testing.assert_close(teacher_t + student_t, torch.full_like(teacher_t, 2 * tau), rtol=0, atol=1e-14)
        ratio = teacher.amax(-1, keepdim=True) / student.amax(-1, keepdim=True)
        torch.testing.assert_close(teacher_t / student_t, ratio, rtol=1e-13, atol=0)


@pytest.mark.parametrize("scale", [0.3, 0.6, 1.0, 2.5])
def test_dtkd_is_zero_for_scaled_teacher_logits_but_kd_is_not(scale):
    _, teacher = random_pair(seed=6)
    teacher = teacher - teacher.amin(-1, keepdim=True) + 0.1  # max(v) > 0
    assert dtkd_loss(scale * teacher, teacher, 4.0).item() == pytest.approx(0.0, abs=1e-12)
    if scale != 1.0:
        assert kd_loss(scale * teacher, teacher, 4.0).item() > 1e-3


def test_dtkd_equals_kd_when_max_logits_are_equal():
    student, teacher = random_pair(seed=7)
    student = student - student.amax(-1, keepdim=True) + teacher.amax(-1, keepdim=True)
    teacher_t, student_t = dtkd_temperatures(student, teacher, 4.0)
    torch.testing.assert_close(teacher_t, torch.full_like(teacher_t, 4.0), rtol=0, atol=1e-14)
    assert dtkd_loss(student, teacher, 4.0).item() == pytest.approx(kd_loss(student, teacher, 4.0).item(), abs=1e-12)


@pytest.mark.parametrize(
    "student_max, teacher_max",
    [(1.0, -1.0), (-1.0, 1.0), (-2.0, -3.0), (0.0, 0.0), (1e-30, 5.0), (5.0, 1e-30), (3.0, 0.0), (-1e-300, 1e-300)],
)
def test_dtkd_degenerate_max_logits_are_guarded(student_max, teacher_max):
    # The official code divides by x + y unguarded (inf / NaN / negative temperatures).
    student = torch.tensor([[student_max, student_max - 1.0, student_max - 2.0]], dtype=torch.float64, requires_grad=True)
    teacher = torch.tensor([[teacher_max, teacher_max - 0.5, teacher_max - 3.0]], dtype=torch.float64)
    teacher_t, student_t = dtkd_temperatures(student, teacher, 4.0)
    assert torch.isfinite(teacher_t).all() and torch.isfinite(student_t).all()
    assert teacher_t.item() >= 0.002 * 4.0 - 1e-15 and student_t.item() >= 0.002 * 4.0 - 1e-15
    assert (teacher_t + student_t).item() == pytest.approx(8.0, abs=1e-12)
    if student_max <= 0 or teacher_max <= 0:  # fall back to plain KD at tau for this sample
        assert teacher_t.item() == student_t.item() == 4.0
    loss = dtkd_loss(student, teacher, 4.0)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() >= 0 and torch.isfinite(student.grad).all()


def test_dtkd_detach_option_controls_gradient_through_temperatures():
    student, teacher = random_pair(batch=4, seed=8)
    student, teacher = student.abs() + 0.5, teacher.abs() + 0.5
    student.requires_grad_(True)
    _, student_t = dtkd_temperatures(student, teacher, 4.0, detach=False)
    assert student_t.requires_grad
    _, student_t = dtkd_temperatures(student, teacher, 4.0, detach=True)
    assert not student_t.requires_grad
    (grad_flow,) = torch.autograd.grad(dtkd_loss(student, teacher, 4.0, detach=False), student)
    (grad_const,) = torch.autograd.grad(dtkd_loss(student, teacher, 4.0, detach=True), student)
    # detach=True: per sample T_t T_s d KL / dz = T_t (q_{T_s} - p_{T_t}), over B for the mean.
    teacher_t, student_t = dtkd_temperatures(student.detach(), teacher, 4.0)
    closed_form = teacher_t * (torch.softmax(student.detach() / student_t, -1) - torch.softmax(teacher / teacher_t, -1)) / 4
    torch.testing.assert_close(grad_const, closed_form, rtol=0, atol=1e-13)
    # detach=False adds the path through the student's max logit, only in that column.
    difference = grad_flow - grad_const
    argmax = student.detach().argmax(-1)
    assert difference.abs().max() > 1e-6
    off_argmax = difference.clone()
    off_argmax[torch.arange(4), argmax] = 0
    assert off_argmax.abs().max() < 1e-14


def test_lskd_is_invariant_to_positive_affine_maps():
    student, teacher = random_pair(seed=9)
    reference = lskd_loss(student, teacher, 2.0, reduction="none")
    for scale, shift in ((3.0, 1.0), (0.2, -4.0), (50.0, 10.0)):
        torch.testing.assert_close(lskd_loss(scale * student + shift, teacher, 2.0, reduction="none"), reference, rtol=0, atol=1e-6)
        torch.testing.assert_close(lskd_loss(student, scale * teacher + shift, 2.0, reduction="none"), reference, rtol=0, atol=1e-6)
    assert kd_loss(3.0 * student, teacher, 2.0).item() != pytest.approx(kd_loss(student, teacher, 2.0).item(), abs=1e-3)


def test_lskd_constant_logits_give_finite_gradients():
    student = torch.zeros(2, 5, dtype=torch.float64, requires_grad=True)
    _, teacher = random_pair(batch=2, num_classes=5)
    loss = lskd_loss(student, teacher, 2.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(student.grad).all()


def test_dkd_decomposes_kd():
    # DKD eq. 1: KD / T^2 = TCKD + (1 - p^t_g) NCKD per sample.
    student, teacher = random_pair(batch=6, num_classes=8, seed=10)
    targets = torch.tensor([0, 7, 3, 3, 1, 5])
    temperature = 4.0
    tckd = dkd_loss(student, teacher, targets, alpha=1.0, beta=0.0, temperature=temperature, reduction="none")
    nckd = dkd_loss(student, teacher, targets, alpha=0.0, beta=1.0, temperature=temperature, reduction="none")
    p_target = torch.softmax(teacher / temperature, -1)[torch.arange(6), targets]
    kd = kd_loss(student, teacher, temperature, reduction="none")
    torch.testing.assert_close(tckd + (1 - p_target) * nckd, kd, rtol=1e-12, atol=1e-14)


def test_hinton_gradient_tends_to_logit_matching():
    # Hinton §2.1: T (q_T - p_T) -> (d - mean d) / K with d = z - v; the error shrinks like 1/T.
    student, teacher = STUDENT.clone().requires_grad_(True), TEACHER
    difference = (STUDENT - TEACHER)
    limit = (difference - difference.mean(-1, keepdim=True)) / 5
    errors = []
    for temperature in (10.0, 100.0, 1000.0):
        (grad,) = torch.autograd.grad(kd_loss(student, teacher, temperature, reduction="sum"), student)
        errors.append((grad - limit).abs().max().item())
    assert errors[0] == pytest.approx(3.6e-2, rel=0.05)
    assert errors[2] < 4e-4 and errors[0] / errors[1] > 8 and errors[1] / errors[2] > 8


def test_kd_at_high_temperature_is_accurate_in_float32():
    # Computing log p - log q at T = 1000 in float32 would cancel to noise; kdlab works with d = (v - z) / T.
    student, teacher = random_pair(batch=8, num_classes=100, seed=11)
    for loss in (kd_loss, ttm_loss, dtkd_loss):
        exact = loss(student, teacher, 1000.0, reduction="none")
        single = loss(student.float(), teacher.float(), 1000.0, reduction="none")
        torch.testing.assert_close(single.double(), exact, rtol=2e-3, atol=1e-9)


# --- reductions and dtypes ----------------------------------------------------------------------------------

def test_reductions_use_batch_mean_of_per_sample_sums():
    student, teacher = random_pair()
    per_sample = kd_loss(student, teacher, 4.0, reduction="none")
    assert per_sample.shape == (5,)
    assert kd_loss(student, teacher, 4.0, reduction="sum").item() == pytest.approx(per_sample.sum().item(), abs=1e-13)
    manual = 16 * (torch.softmax(teacher / 4, -1) * (torch.log_softmax(teacher / 4, -1) - torch.log_softmax(student / 4, -1))).sum() / 5
    assert kd_loss(student, teacher, 4.0).item() == pytest.approx(manual.item(), abs=1e-13)
    # not the element-wise mean (PyTorch's KLDivLoss(reduction="mean") pitfall, which is K times smaller)
    assert kd_loss(student, teacher, 4.0).item() != pytest.approx(manual.item() / 7, rel=1e-3)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs_are_computed_and_returned_in_float32(dtype):
    student, teacher = random_pair(dtype=dtype)
    reference_inputs = (student.double(), teacher.double())
    for loss in (kd_loss, ttm_loss, wttm_loss, dtkd_loss, lskd_loss):
        value = loss(student, teacher, 4.0)
        assert value.dtype == torch.float32
        assert value.item() == pytest.approx(loss(*reference_inputs, 4.0).item(), rel=1e-5, abs=1e-6)
    value = dkd_loss(student, teacher, torch.arange(5))
    assert value.dtype == torch.float32


def test_per_sample_temperature_tensor():
    student, teacher = random_pair(batch=3)
    temperatures = torch.tensor([[1.0], [4.0], [9.0]], dtype=torch.float64)
    batched = kd_loss(student, teacher, temperatures, reduction="none")
    for row, temperature in enumerate((1.0, 4.0, 9.0)):
        single = kd_loss(student[row : row + 1], teacher[row : row + 1], temperature)
        assert batched[row].item() == pytest.approx(single.item(), abs=1e-14)


# --- gradients ----------------------------------------------------------------------------------------------

def test_ttm_gradient_closed_form():
    student, teacher = random_pair()
    student.requires_grad_(True)
    for temperature in (1.0, 3.0, 10.0):
        (grad,) = torch.autograd.grad(ttm_loss(student, teacher, temperature), student)
        expected = (torch.softmax(student.detach(), -1) - torch.softmax(teacher / temperature, -1)) / 5
        torch.testing.assert_close(grad, expected, rtol=0, atol=1e-14)


def test_kd_gradient_closed_form():
    student, teacher = random_pair()
    student.requires_grad_(True)
    for temperature in (0.05, 1.0, 3.0, 10.0, 1000.0):
        (grad,) = torch.autograd.grad(kd_loss(student, teacher, temperature), student)
        expected = temperature * (torch.softmax(student.detach() / temperature, -1) - torch.softmax(teacher / temperature, -1)) / 5
        # the factor T multiplies the rounding of q_T - p_T
        torch.testing.assert_close(grad, expected, rtol=0, atol=1e-14 * max(1.0, temperature))


def test_wttm_gradient_closed_form():
    student, teacher = random_pair()
    student.requires_grad_(True)
    (grad,) = torch.autograd.grad(wttm_loss(student, teacher, 4.0), student)
    weight = power_sum(torch.softmax(teacher, -1), 0.25).unsqueeze(-1)
    expected = weight * (torch.softmax(student.detach(), -1) - torch.softmax(teacher / 4, -1)) / 5
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-14)


@pytest.mark.parametrize(
    "loss",
    [
        lambda s, t: kd_loss(s, t, 3.0),
        lambda s, t: ttm_loss(s, t, 3.0),
        lambda s, t: wttm_loss(s, t, 3.0),
        lambda s, t: dtkd_loss(s, t, 4.0),
        lambda s, t: lskd_loss(s, t, 2.0),
        lambda s, t: dkd_loss(s, t, torch.tensor([0, 3, 6, 1]), alpha=1.0, beta=8.0, temperature=4.0),
        lambda s, t: kd_loss(s, t, 100.0, reduction="none"),
        lambda s, t: ttm_loss(s, t, 0.1, reduction="sum"),
    ],
    ids=["kd", "ttm", "wttm", "dtkd", "lskd", "dkd", "kd_T100", "ttm_T0.1"],
)
def test_gradcheck_float64_and_teacher_gets_no_gradient(loss):
    # (dtkd with detach=True is not the gradient of its value by design; its closed form is tested above.)
    student, teacher = random_pair(batch=4)
    student.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: loss(s, teacher), (student,))
    teacher = teacher.clone().requires_grad_(True)
    loss(student, teacher).sum().backward()
    assert teacher.grad is None and student.grad is not None


def test_gradcheck_through_a_tensor_temperature():
    student, teacher = random_pair(batch=3)
    temperature = torch.tensor([[2.0], [3.0], [5.0]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s, t: kd_loss(s, teacher, t), (student.requires_grad_(True), temperature))
    assert torch.autograd.gradcheck(lambda s, t: lskd_loss(s, teacher, t), (student, temperature))


# --- CTKD ---------------------------------------------------------------------------------------------------

def test_learnable_temperature_schedule_and_range():
    module = LearnableTemperature()
    assert module.reversal_strength(0) == 0.0
    assert module.reversal_strength(1) == pytest.approx(-0.0245, abs=1e-4)
    assert module.reversal_strength(10) == pytest.approx(-1.0, abs=1e-15)
    assert module.reversal_strength(25) == pytest.approx(-1.0, abs=1e-15)
    assert module(1).item() == pytest.approx(1 + 20 / (1 + math.exp(-1)), abs=1e-5)
    assert module(1).dim() == 0
    with torch.no_grad():
        module.theta.fill_(-50.0)
        assert 1.0 <= module(1).item() < 1.001
        module.theta.fill_(50.0)
        assert 20.999 < module(1).item() <= 21.0


def test_gradient_reversal_scales_theta_gradient_by_lambda():
    student, teacher = random_pair(batch=4)
    student = student.float()
    teacher = teacher.float()
    for epoch in (1, 5, 10):
        module = LearnableTemperature()
        kd_loss(student, teacher, module(epoch)).backward()
        reversed_grad = module.theta.grad.item()
        theta = torch.tensor(1.0, requires_grad=True)
        kd_loss(student, teacher, 1 + 20 * torch.sigmoid(theta)).backward()  # no reversal
        assert reversed_grad == pytest.approx(module.reversal_strength(epoch) * theta.grad.item(), rel=1e-5, abs=1e-12)
        assert theta.grad.item() != 0.0


def test_learnable_temperature_bad_arguments():
    with pytest.raises(ValueError, match="t_min must be a finite number > 0"):
        LearnableTemperature(t_min=0.0)
    with pytest.raises(ValueError, match="epoch must be a finite number >= 0"):
        LearnableTemperature()(-1)


# --- bad input ----------------------------------------------------------------------------------------------

ALL_LOSSES = {
    "kd": lambda s, t, **kw: kd_loss(s, t, **kw),
    "ttm": lambda s, t, **kw: ttm_loss(s, t, **kw),
    "wttm": lambda s, t, **kw: wttm_loss(s, t, **kw),
    "dtkd": lambda s, t, **kw: dtkd_loss(s, t, **kw),
    "lskd": lambda s, t, **kw: lskd_loss(s, t, **kw),
    "dkd": lambda s, t, **kw: dkd_loss(s, t, torch.zeros(5, dtype=torch.long), **kw),  # random_pair has B = 5
}


@pytest.mark.parametrize("name", list(ALL_LOSSES))
def test_bad_logits_raise(name):
    loss = ALL_LOSSES[name]
    student, teacher = random_pair()
    with pytest.raises(ValueError, match="same shape"):
        loss(student, teacher[:, :4])
    with pytest.raises(ValueError, match=r"student_logits must have shape \(B, K\)"):
        loss(student[0], teacher[0])
    with pytest.raises(TypeError, match="student_logits must be a floating-point tensor"):
        loss(student.long(), teacher)
    with pytest.raises(TypeError, match="teacher_logits must be a floating-point tensor"):
        loss(student, teacher.int())
    with pytest.raises(TypeError, match="student_logits must be a torch.Tensor"):
        loss(student.tolist(), teacher)


@pytest.mark.parametrize("name", list(ALL_LOSSES))
@pytest.mark.parametrize("temperature", [0.0, -2.0, math.inf, -math.inf, math.nan])
def test_bad_temperatures_raise(name, temperature):
    student, teacher = random_pair()
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        ALL_LOSSES[name](student, teacher, temperature=temperature)


def test_bad_temperature_tensors_and_reduction():
    student, teacher = random_pair()
    with pytest.raises(ValueError, match="temperature must be finite and > 0"):
        kd_loss(student, teacher, torch.tensor(-1.0, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"temperature must be a number or a tensor of shape \(\) or \(B, 1\)"):
        kd_loss(student, teacher, torch.ones(1, 7, dtype=torch.float64))
    with pytest.raises(TypeError, match="temperature must be a finite number > 0"):
        ttm_loss(student, teacher, "4")
    with pytest.raises(ValueError, match="reduction must be one of"):
        kd_loss(student, teacher, reduction="batchmean")
    with pytest.raises(TypeError, match="detach must be True or False"):
        dtkd_loss(student, teacher, detach=1)


def test_bad_targets_raise():
    student, teacher = random_pair()
    with pytest.raises(ValueError, match=r"targets must be class indices in \[0, 6\]"):
        dkd_loss(student, teacher, torch.tensor([0, 1, 2, 3, 7]))
    with pytest.raises(ValueError, match=r"targets must be class indices in \[0, 6\]"):
        dkd_loss(student, teacher, torch.tensor([0, 1, -1, 3, 4]))
    with pytest.raises(TypeError, match="targets must be an integer tensor"):
        dkd_loss(student, teacher, torch.zeros(5))
    with pytest.raises(ValueError, match=r"targets must have shape \(B,\)"):
        dkd_loss(student, teacher, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0"):
        dkd_loss(student, teacher, torch.zeros(5, dtype=torch.long), alpha=-1.0)


def test_degenerate_shapes_raise():
    with pytest.raises(ValueError, match="at least one sample"):
        kd_loss(torch.zeros(0, 5), torch.zeros(0, 5))
    with pytest.raises(ValueError, match="K >= 2"):
        kd_loss(torch.zeros(3, 1), torch.zeros(3, 1))


# --- extremes (property tests) ------------------------------------------------------------------------------

LOSS_FUNCTIONS = [
    lambda s, t, temp, y: kd_loss(s, t, temp, reduction="none"),
    lambda s, t, temp, y: ttm_loss(s, t, temp, reduction="none"),
    lambda s, t, temp, y: wttm_loss(s, t, temp, reduction="none"),
    lambda s, t, temp, y: dtkd_loss(s, t, temp, reduction="none"),
    lambda s, t, temp, y: lskd_loss(s, t, temp, reduction="none"),
    lambda s, t, temp, y: dkd_loss(s, t, y, temperature=temp, reduction="none"),
]


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 4),
    num_classes=st.integers(2, 12),
    log_scale=st.floats(-3.0, 4.0),
    log_temperature=st.floats(math.log10(0.05), 3.0),
    dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]),
    seed=st.integers(0, 2**31 - 1),
)
def test_every_loss_is_finite_and_non_negative_at_extremes(batch, num_classes, log_scale, log_temperature, dtype, seed):
    # Logits up to +-1e4, T from 0.05 to 1000, float32 / float16 / bfloat16 inputs.
    generator = torch.Generator().manual_seed(seed)
    scale, temperature = 10.0**log_scale, 10.0**log_temperature
    student = (scale * torch.randn(batch, num_classes, generator=generator)).clamp(-1e4, 1e4).to(dtype)
    teacher = (scale * torch.randn(batch, num_classes, generator=generator)).clamp(-1e4, 1e4).to(dtype)
    targets = torch.randint(0, num_classes, (batch,), generator=generator)
    student.requires_grad_(True)
    for loss in LOSS_FUNCTIONS:
        values = loss(student, teacher, temperature, targets)
        assert values.dtype == torch.float32
        assert torch.isfinite(values).all()
        # computed in float64: only rounding-size negatives (the T^2 factor multiplies the rounding)
        assert (values >= -1e-8 * max(1.0, temperature**2)).all(), values
        (grad,) = torch.autograd.grad(values.sum(), student)
        assert torch.isfinite(grad).all()


# --- NormKD (Chi et al. 2023; official code gizi1/NormKD, mdistiller/distillers/NormKD.py) ------------------
# Golden values computed independently in float64 with NumPy from the official formula (kd_loss_normal):
# T_t = T_norm * std(v, ddof=1), T_s = T_norm * std(z, ddof=1), loss_b = T_t^2 * KL(softmax(v/T_t) || softmax(z/T_s)).

@pytest.mark.parametrize(
    "temperature, per_sample, mean",
    [
        (1.0, [0.0154814085, 0.0471253948], 0.0313034016),
        (2.0, [0.0194814889, 0.0550995467], 0.0372905178),
        (4.0, [0.0206405666, 0.0580937916], 0.0393671791),
    ],
)
def test_normkd_golden(temperature, per_sample, mean):
    torch.testing.assert_close(normkd_loss(STUDENT, TEACHER, temperature, reduction="none"), as_tensor(per_sample),
                               rtol=0, atol=GOLDEN)
    assert normkd_loss(STUDENT, TEACHER, temperature).item() == pytest.approx(mean, abs=GOLDEN)


def test_normkd_is_lskd_reweighted_by_the_teachers_spread():
    student, teacher = random_pair(batch=6, num_classes=9, seed=3)
    spread = teacher.std(dim=-1, unbiased=True)
    # LS-KD adds 1e-7 to the std; at these spreads (~2) that changes the loss by ~1e-7 relative
    torch.testing.assert_close(normkd_loss(student, teacher, 2.0, "none"),
                               spread ** 2 * lskd_loss(student, teacher, 2.0, "none"), rtol=1e-5, atol=1e-9)


def test_normkd_scale_and_shift_of_the_student_logits_do_not_matter():
    student, teacher = random_pair(batch=4, num_classes=6, seed=5)
    base = normkd_loss(student, teacher, 2.0, "none")
    torch.testing.assert_close(normkd_loss(3.0 * student - 1.5, teacher, 2.0, "none"), base, rtol=1e-9, atol=1e-12)
    # a scaled teacher keeps its distribution but scales the weight by the square of the scale
    torch.testing.assert_close(normkd_loss(student, 2.0 * teacher + 4.0, 2.0, "none"), 4.0 * base, rtol=1e-9, atol=1e-12)


def test_normkd_student_temperature_receives_gradient_teacher_none():
    student, teacher = random_pair(batch=3, num_classes=5, seed=7)
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: normkd_loss(s, teacher, 2.0, "none"), (student,))
    normkd_loss(student, teacher, 2.0).backward()
    assert teacher.grad is None
    # gradient along the student's logits themselves is 0: the loss is invariant to z -> a z (a > 0)
    assert float((student.grad * student.detach()).sum().abs()) < 1e-10


def test_normkd_constant_logits_are_finite_and_bad_input_raises():
    constant = torch.zeros(2, 5, dtype=torch.float64, requires_grad=True)
    loss = normkd_loss(constant, TEACHER, 2.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(constant.grad).all()
    with pytest.raises(ValueError, match="temperature"):
        normkd_loss(STUDENT, TEACHER, 0.0)
    with pytest.raises(ValueError, match="same shape"):
        normkd_loss(STUDENT, TEACHER[:, :4])
