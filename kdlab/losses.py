"""Distillation losses: one pure function per method, on logits of shape (B, K).

Notation: student logits z, teacher logits v, q = softmax(z), p^t = softmax(v); a subscript T means
softmax(. / T); D(p || q) = sum_i p_i (log p_i - log q_i) is the KL divergence in nats.

Conventions shared by every loss here:
- ``reduction="mean"`` is the batch mean of per-sample KL *sums* (PyTorch's ``kl_div(..., "batchmean")``,
  RepDistiller's ``size_average=False`` / B), never the element-wise mean over B * K; ``"sum"`` sums over the
  batch; ``"none"`` returns the per-sample losses, shape (B,).
- The teacher logits are detached: the teacher never receives a gradient. A temperature given as a tensor
  (CTKD's learnable temperature) does receive gradients, through both softmaxes and the T^2 factor.
- Losses are computed in float64 whatever the input dtype and returned in float32 (for float16, bfloat16
  and float32 inputs) or float64. Why: at high temperature log p_i and log q_i both approach -log K, and in
  float32 their difference is mostly rounding noise (float32 KD at T = 1000, K = 100 would be off by ~20%).
  The tensors are (B, K), so the cost is negligible next to the networks; a float16 result could overflow.
- ``temperature`` is a finite number > 0, or a positive tensor of shape () or (B, 1) (one per sample). The
  losses with a T^2 factor (KD, DTKD, LS-KD, NormKD, DKD) accept T <= ``MAX_TEMPERATURE`` (10^4): beyond it,
  T^2 * KL has lost its digits in float64 (KL ~ 1/T^2 is below the rounding of log p) and T^2 overflows near
  1e154. TTM and WTTM have no T^2 and tend to their T -> inf limit, so any finite T is accepted there.
- Logits must be finite: NaN or +inf in either tensor, or -inf in the student's, is a ValueError naming the
  argument. A -inf *teacher* logit is legitimate (a class the teacher gives probability 0): it contributes
  0 to the KL, PyTorch's ``kl_div`` convention 0 * log 0 = 0, and the loss stays finite.
"""
from __future__ import annotations

import math
from numbers import Real

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.common import (
    MAX_TEMPERATURE,
    check_bool,
    check_bounded_temperature,
    check_finite_logits,
    check_logits,
    check_non_negative,
    check_positive,
    check_targets,
    check_temperature,
    compute_dtype,
)

__all__ = [
    "cross_entropy",
    "MAX_TEMPERATURE",
    "kd_loss",
    "ttm_loss",
    "wttm_loss",
    "dtkd_temperatures",
    "dtkd_loss",
    "lskd_loss",
    "normkd_loss",
    "standardize",
    "dkd_loss",
    "LearnableTemperature",
]


def cross_entropy(student_logits, targets, smoothing=0.0, reduction="mean"):
    """Cross-entropy H(t, q) = -sum_i t_i log q_i with the target t = (1 - eps) onehot(y) + eps / K.

    eps = ``smoothing`` (label smoothing, Szegedy et al. 2016; 0 = the plain H(y, q) = -log q_y). Computed in
    float32 for half-precision logits, as ``F.cross_entropy(..., label_smoothing=eps)``; ``smoothing`` may
    be a 0-d tensor (one per student inside the sweep's vmap), then written out as
    (1 - eps) (-log q_y) + eps mean_i (-log q_i).
    """
    check_logits(student_logits, "student_logits", exact_dim=2)
    _check_reduction(reduction)
    logits = student_logits.to(compute_dtype(student_logits.dtype))
    if not isinstance(smoothing, torch.Tensor):
        return F.cross_entropy(logits, targets, label_smoothing=smoothing, reduction=reduction)
    log_q = torch.log_softmax(logits, dim=-1)
    nll = -log_q.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    per_sample = (1 - smoothing) * nll - smoothing * log_q.mean(dim=-1)
    return _reduce(per_sample, reduction, logits.dtype)


def kd_loss(student_logits, teacher_logits, temperature=4.0, reduction="mean"):
    """Hinton's KD loss: T^2 * D(p^t_T || q_T) = T^2 * KL(softmax(v / T) || softmax(z / T)).

    Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural Network", §2. The soft-target
    gradients scale as 1 / T^2, hence the T^2 factor: d/dz_i = T * (q_T,i - p^t_T,i) per sample, which tends
    to (d_i - mean(d)) / K with d = z - v as T grows (logit matching).

    Official code: RepDistiller ``DistillKL(T)`` / mdistiller ``kd_loss(logits_student, logits_teacher,
    temperature)``; ``temperature`` is their ``T`` (``--kd_T``, ``KD.TEMPERATURE``). The CE/KD weights
    (``-r 0.1 -a 0.9``) live in ``kdlab.methods``.
    """
    student_logits, teacher_logits, result_dtype = _check_pair(student_logits, teacher_logits)
    _check_reduction(reduction)
    temperature = _check_loss_temperature(temperature, student_logits, squared=True)
    per_sample = _kl(_scale(teacher_logits, temperature), student_logits / temperature)
    return _reduce(_per_sample(temperature) ** 2 * per_sample, reduction, result_dtype)


def ttm_loss(student_logits, teacher_logits, temperature=4.0, reduction="mean"):
    """Transformed Teacher Matching: D(p^t_T || q) = KL(softmax(v / T) || softmax(z)).

    Zheng & Yang (2024), "Knowledge Distillation with Transformed Teacher Matching", ICLR, eq. 2. Only the
    teacher is tempered: no student temperature and no T^2 factor. d/dz_i = q_i - p^t_T,i (eq. 20). By eq. 15,
    D(p^t_T || q) = T * D(p^t_T || q_T) - (T - 1) * H_{1/T}(q) + (T - 1) * H(p^t_T): KD plus a Renyi-entropy
    penalty on the student.

    Official code (``zkxufo/TTM``, ``--distill ttm``): the flag ``--ttm_l`` is gamma = 1 / temperature and
    the teacher is transformed as softmax(v)^gamma / sum (here: softmax(v / T), identical but it cannot
    underflow). The loss weight ``-b`` (beta) absorbs the T^2 of KD: beta = lambda * T / (1 - lambda).
    """
    student_logits, teacher_logits, result_dtype = _check_pair(student_logits, teacher_logits)
    _check_reduction(reduction)
    temperature = _check_loss_temperature(temperature, student_logits)
    return _reduce(_kl(_scale(teacher_logits, temperature), student_logits), reduction, result_dtype)


def wttm_loss(student_logits, teacher_logits, temperature=4.0, reduction="mean"):
    """Weighted TTM: U_{1/T}(p^t) * D(p^t_T || q) per sample, with U_gamma(p) = sum_i p_i^gamma.

    Zheng & Yang (2024), eqs. 22-23. The weight is the power sum of the *untransformed* teacher p^t =
    softmax(v); it lies in [1, K^(1 - 1/T)], largest for uncertain teachers. Computed in log space:
    log U = logsumexp(log_softmax(v) / T).

    Official code (``--distill wttm``): ``norm`` is U, ``--ttm_l`` is gamma = 1 / temperature, ``-b`` is the
    weight beta. With temperature = 1, U = 1 and WTTM = TTM = KL(p^t || q).
    """
    student_logits, teacher_logits, result_dtype = _check_pair(student_logits, teacher_logits)
    _check_reduction(reduction)
    temperature = _check_loss_temperature(temperature, student_logits)
    log_weight = torch.logsumexp(torch.log_softmax(teacher_logits, dim=-1) / temperature, dim=-1)
    per_sample = log_weight.exp() * _kl(_scale(teacher_logits, temperature), student_logits)
    return _reduce(per_sample, reduction, result_dtype)


def dtkd_temperatures(student_logits, teacher_logits, temperature=4.0, detach=False):
    """DTKD's per-sample temperatures (teacher_T, student_T), each of shape (B, 1).

    Wei & Bai (2024), "Dynamic Temperature Knowledge Distillation", eqs. 4-5, as the official code computes
    them: with x = max_i v_i and y = max_i z_i (signed maxima, ``logits.max(dim=1)``),

        teacher_T = 2x / (x + y) * tau,   student_T = 2y / (x + y) * tau,

    so teacher_T + student_T = 2 tau and teacher_T / student_T = x / y: the sharper model gets the higher
    temperature. (The author's README errata says the derivation of eqs. 4-5 is wrong; the reported results
    use these formulas, so kdlab does too.)

    Degenerate inputs (the official code divides by x + y unguarded, giving inf, NaN or negative
    temperatures). kdlab writes teacher_T = 2 r tau and student_T = 2 (1 - r) tau with r = x / (x + y), and
    - if x <= 0 or y <= 0 (then x + y may be <= 0, tiny, or give a negative temperature), uses r = 1/2, i.e.
      both temperatures equal tau: plain KD for that sample;
    - clamps r to [1e-3, 1 - 1e-3], so each temperature is at least 0.002 * tau. (When x, y > 0 the ratio r
      is well defined however tiny x + y is; the clamp only stops one temperature from reaching 0.)
    Both rules keep teacher_T + student_T = 2 tau; the ratio x / y holds whenever 1e-3 < r < 1 - 1e-3.

    Gradients: with ``detach=False`` (the official code's behaviour and the default) student_T depends on the
    student's max logit and gradients flow through it; ``detach=True`` treats both temperatures as constants.
    The teacher side never receives gradients.
    """
    student_logits, teacher_logits, result_dtype = _check_pair(student_logits, teacher_logits)
    teacher_t, student_t = _dtkd_temperatures(student_logits, teacher_logits, temperature, detach)
    return teacher_t.to(result_dtype), student_t.to(result_dtype)


_DTKD_MIN_RATIO = 1e-3


def _dtkd_temperatures(student_logits, teacher_logits, temperature, detach):
    tau = check_bounded_temperature(temperature, "temperature")
    check_bool(detach, "detach")
    x = teacher_logits.amax(dim=-1, keepdim=True)
    y = (student_logits.detach() if detach else student_logits).amax(dim=-1, keepdim=True)
    valid = (x > 0) & (y > 0)
    # torch.where would pass NaN gradients from an unguarded x / (x + y), so make the denominator safe first.
    denominator = torch.where(valid, x + y, torch.ones_like(x))
    ratio = torch.where(valid, x / denominator, torch.full_like(x, 0.5)).clamp(_DTKD_MIN_RATIO, 1 - _DTKD_MIN_RATIO)
    return 2 * ratio * tau, 2 * (1 - ratio) * tau


def dtkd_loss(student_logits, teacher_logits, temperature=4.0, reduction="mean", detach=False):
    """DTKD's loss: teacher_T * student_T * KL(softmax(v / teacher_T) || softmax(z / student_T)) per sample.

    Wei & Bai (2024), "Dynamic Temperature Knowledge Distillation"; temperatures from
    :func:`dtkd_temperatures` (see there for the guard on degenerate inputs and ``detach``). The product
    teacher_T * student_T plays the role of KD's T^2. If z = c * v with c > 0 and max(v) > 0, both scaled
    logit vectors coincide and the loss is zero (vanilla KD is not).

    Official code (``JinYu1998/DTKD``, ``mdistiller/distillers/DTKD.py``): ``temperature`` is the reference
    temperature ``DTKD.T`` (tau = 4). The full DTKD objective, alpha * this + beta * KD(tau) + CE with a
    warm-up, is the ``"dtkd"`` recipe in ``kdlab.methods``.
    """
    student_logits, teacher_logits, result_dtype = _check_pair(student_logits, teacher_logits)
    _check_reduction(reduction)
    teacher_t, student_t = _dtkd_temperatures(student_logits, teacher_logits, temperature, detach)
    per_sample = _kl(_scale(teacher_logits, teacher_t), student_logits / student_t)
    return _reduce((teacher_t * student_t).squeeze(-1) * per_sample, reduction, result_dtype)


def lskd_loss(student_logits, teacher_logits, temperature=2.0, reduction="mean"):
    """KD with logit standardization: tau^2 * KL(softmax(Z(v) / tau) || softmax(Z(z) / tau)).

    Sun et al. (2024), "Logit Standardization in Knowledge Distillation", CVPR. Z(x) = (x - mean(x)) /
    (std(x) + 1e-7) per sample, with torch's unbiased (K - 1) std as in the official ``logit_stand``. Equal to
    KD with per-sample, per-model temperatures tau * std; invariant to z -> a z + b and v -> a v + b (a > 0).

    Official code (``sunshangquan/logit-standardization-KD``, ``tools/train.py --logit-stand --base-temp 2
    --kd-weight 9``): ``temperature`` is ``--base-temp`` (2); the KD weight 9 (``--kd-weight``) and the CE
    weight 0.1 (KD config) are the ``"lskd"`` recipe in ``kdlab.methods``. Unlike the
    official code, a constant logit vector gives finite gradients (its variance is clamped at the smallest
    normal float before the square root; values are unchanged otherwise).
    """
    student_logits, teacher_logits, result_dtype = _check_pair(student_logits, teacher_logits)
    _check_reduction(reduction)
    temperature = _check_loss_temperature(temperature, student_logits, squared=True)
    per_sample = _kl(_scale(_standardize(teacher_logits), temperature), _standardize(student_logits) / temperature)
    return _reduce(_per_sample(temperature) ** 2 * per_sample, reduction, result_dtype)


def normkd_loss(student_logits, teacher_logits, temperature=2.0, reduction="mean"):
    """NormKD: KD with one temperature per sample and model, proportional to the spread of its logits.

    Chi et al. (2023), "NormKD: Normalized Logits for Knowledge Distillation", arXiv 2308.00520. With
    s(x) = std(x) over the K classes (torch's unbiased, K - 1 std, as in the official code) and T_norm the
    ``temperature``:

        T^t_b = T_norm * s(v_b),   T^s_b = T_norm * s(z_b),
        loss_b = (T^t_b)^2 * KL(softmax(v_b / T^t_b) || softmax(z_b / T^s_b)).

    Softmax ignores a shift, so v_b / T^t_b gives the same distribution as (v_b - mean(v_b)) / (T_norm s(v_b)):
    the tempered distributions are LS-KD's (``lskd_loss``, without its 1e-7) and only the weight differs,
    (T_norm s(v_b))^2 per sample instead of LS-KD's constant T_norm^2. A confident teacher sample (spread-out
    logits) gets a high temperature and a large weight; the student's temperature follows its own logits and
    receives gradients (as in the official code); the teacher's does not.

    Official code (``gizi1/NormKD``, ``mdistiller/distillers/NormKD.py``, ``kd_loss_normal``):
    ``temperature`` = ``NormKD.TEMPERATURE_NORM`` (2.0); the weights ``NormKD.LOSS.CE_WEIGHT`` (0.1) and
    ``NormKD.LOSS.KD_WEIGHT`` (0.9) are the ``"normkd"`` recipe in ``kdlab.methods``. Unlike the official code,
    a constant logit vector (zero spread) gives a finite loss: its variance is clamped at the smallest normal
    float before the square root (values are unchanged otherwise).
    """
    student_logits, teacher_logits, result_dtype = _check_pair(student_logits, teacher_logits)
    _check_reduction(reduction)
    temperature = _check_loss_temperature(temperature, student_logits, squared=True)
    teacher_t = temperature * _spread(teacher_logits)
    student_t = temperature * _spread(student_logits)
    per_sample = _kl(_scale(teacher_logits, teacher_t), student_logits / student_t)
    return _reduce(teacher_t.squeeze(-1) ** 2 * per_sample, reduction, result_dtype)


def _spread(logits):
    """Per-sample unbiased std over the classes, shape (B, 1), never exactly 0 (over the finite classes of a
    teacher with -inf logits)."""
    return _moments(logits)[1].sqrt()


def standardize(logits):
    """LS-KD's z-score of each sample's logits: Z(x) = (x - mean(x)) / (std(x) + 1e-7), torch's unbiased std.

    Sun et al. (2024), "Logit Standardization in Knowledge Distillation", CVPR (``lskd_loss`` tempers Z(x)).
    Z(a x + b) = Z(x) for every a > 0 and b (up to the 1e-7): the logits' scale and shift are removed.
    """
    return _standardize(logits)


def _standardize(logits):
    """(x - mean) / (std + 1e-7) per sample; a teacher's -inf logits (probability 0) stay -inf."""
    mean, variance = _moments(logits)
    return torch.where(torch.isneginf(logits), logits, (logits - mean) / (variance.sqrt() + 1e-7))


def _moments(logits):
    """Per-sample mean and unbiased variance (clamped at the smallest normal float) over the classes, or over
    the finite classes of a teacher with -inf logits. No data-dependent branch (``torch.func.vmap`` runs it):
    rows without -inf take torch's own mean and var, the others the masked formulas."""
    finite = torch.isfinite(logits)
    count = finite.sum(dim=-1, keepdim=True)
    complete = count == logits.shape[-1]
    filled = torch.where(finite, logits, torch.zeros_like(logits))
    masked_mean = filled.sum(dim=-1, keepdim=True) / count
    centred = torch.where(finite, filled - masked_mean, torch.zeros_like(logits))
    masked_variance = (centred ** 2).sum(dim=-1, keepdim=True) / (count - 1).clamp_min(1)
    mean = torch.where(complete, logits.mean(dim=-1, keepdim=True), masked_mean)
    variance = torch.where(complete, logits.var(dim=-1, keepdim=True, unbiased=True), masked_variance)
    return mean, variance.clamp_min(torch.finfo(logits.dtype).tiny)


def dkd_loss(student_logits, teacher_logits, targets, alpha=1.0, beta=8.0, temperature=4.0, reduction="mean"):
    """Decoupled KD: alpha * TCKD + beta * NCKD, each scaled by T^2.

    Zhao et al. (2022), "Decoupled Knowledge Distillation", CVPR. With g the target class and tempered
    probabilities p = softmax(v / T), q = softmax(z / T):
    - TCKD = T^2 * KL(b^t || b^s) on the binary distributions b = [p_g, 1 - p_g] (target vs. the rest);
    - NCKD = T^2 * KL(p_hat^t || p_hat^s) on the distributions over the K - 1 non-target classes,
      p_hat_i = p_i / (1 - p_g) = softmax over the non-target logits.
    Hinton's KD (times 1/T^2) equals TCKD + (1 - p^t_g) * NCKD (their eq. 1).

    Official code (mdistiller ``dkd_loss``): ``alpha`` = ``DKD.ALPHA`` (1), ``beta`` = ``DKD.BETA`` (8),
    ``temperature`` = ``DKD.T`` (4); the CE weight and the 20-epoch warm-up are the ``"dkd"`` recipe. The
    official code masks the target logit by subtracting 1000; kdlab drops that column instead (exact for any
    logit scale) and computes log(1 - p_g) as a log-sum-exp over the non-target logits (no log(0)).

    ``targets``: int64 tensor of shape (B,) with values in [0, K).
    """
    student_logits, teacher_logits, result_dtype = _check_pair(student_logits, teacher_logits)
    _check_reduction(reduction)
    targets = check_targets(targets, student_logits)
    alpha = check_non_negative(alpha, "alpha")
    beta = check_non_negative(beta, "beta")
    temperature = _check_loss_temperature(temperature, student_logits, squared=True)
    teacher_scaled, student_scaled = _scale(teacher_logits, temperature), student_logits / temperature
    # column indices of each sample's K - 1 non-target classes: 0..K-2, shifted up by one from the target on
    batch, num_classes = student_logits.shape
    rest = torch.arange(num_classes - 1, device=targets.device).expand(batch, -1)
    rest = rest + (rest >= targets.unsqueeze(-1)).long()
    target = targets.unsqueeze(-1)
    # TCKD: the binary distribution [p_g, 1 - p_g] is the softmax of [scaled_g, logsumexp(scaled_rest)].
    teacher_binary = torch.cat([teacher_scaled.gather(-1, target), teacher_scaled.gather(-1, rest).logsumexp(-1, keepdim=True)], -1)
    student_binary = torch.cat([student_scaled.gather(-1, target), student_scaled.gather(-1, rest).logsumexp(-1, keepdim=True)], -1)
    tckd = _kl(teacher_binary, student_binary)
    teacher_rest = teacher_scaled.gather(-1, rest)
    # A teacher sure of the target (every other logit -inf) has no non-target distribution; its NCKD is 0, the
    # weight (1 - p_g) = 0 that Hinton's KD gives it in KD = TCKD + (1 - p_g) NCKD.
    no_rest = torch.isneginf(teacher_rest).all(dim=-1, keepdim=True)
    nckd = _kl(torch.where(no_rest, torch.zeros_like(teacher_rest), teacher_rest), student_scaled.gather(-1, rest))
    nckd = torch.where(no_rest.squeeze(-1), torch.zeros_like(nckd), nckd)
    per_sample = _per_sample(temperature) ** 2 * (alpha * tckd + beta * nckd)
    return _reduce(per_sample, reduction, result_dtype)


class LearnableTemperature(nn.Module):
    """CTKD's global learnable temperature behind a gradient-reversal layer.

    Li et al. (2023), "Curriculum Temperature for Knowledge Distillation", AAAI. The temperature is

        tau = t_min + t_span * sigmoid(theta),      tau in (t_min, t_min + t_span),

    and theta reaches it through a gradient-reversal layer: the forward pass is the identity, the backward
    pass multiplies the gradient by lambda(epoch) <= 0. So while the student *descends* the KD loss, theta
    *ascends* it (the temperature makes distillation harder), more strongly as lambda goes from 0 to -1 along
    the cosine curriculum

        lambda(e) = lambda_min + (lambda_max - lambda_min) * (cos(pi * min(e, decay_epochs) / decay_epochs) + 1) / 2

    with lambda_max = 0, lambda_min = -1: lambda(1) = -0.0245 and lambda(e >= decay_epochs) = -1 for 10 epochs.

    Official code (``zhengli97/CTKD``): ``t_min`` = ``--t_start`` (1), ``t_span`` = ``--t_end`` (20),
    theta = ``Global_T.global_T`` initialised to 1 (``init``, tau_0 = 15.62), ``decay_epochs`` =
    ``--decay_loops`` (10), ``lambda_max`` = ``--decay_max`` (0), ``lambda_min`` = ``--decay_min`` (-1), i.e.
    ``CosineDecay(max_value=0, min_value=-1, num_loops=10)``. ``forward(epoch)`` returns a
    0-d tensor usable as ``kd_loss(..., temperature=tau)``; add ``parameters()`` to the optimizer.
    """

    def __init__(self, t_min=1.0, t_span=20.0, init=1.0, decay_epochs=10, lambda_max=0.0, lambda_min=-1.0):
        super().__init__()
        self.t_min = check_positive(t_min, "t_min")
        self.t_span = check_positive(t_span, "t_span")
        self.decay_epochs = check_positive(decay_epochs, "decay_epochs")
        for name, value in (("init", init), ("lambda_max", lambda_max), ("lambda_min", lambda_min)):
            if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
                raise TypeError(f"{name} must be a finite number, got {value!r}")
        if lambda_min > lambda_max:
            raise ValueError(f"lambda_min must be <= lambda_max, got {lambda_min!r} > {lambda_max!r}")
        self.lambda_max = float(lambda_max)
        self.lambda_min = float(lambda_min)
        self.theta = nn.Parameter(torch.tensor(float(init)))

    def reversal_strength(self, epoch) -> float:
        """lambda(epoch): the factor the gradient-reversal layer multiplies theta's gradient by."""
        if isinstance(epoch, bool) or not isinstance(epoch, Real) or not math.isfinite(epoch) or epoch < 0:
            raise ValueError(f"epoch must be a finite number >= 0, got {epoch!r}")
        progress = min(float(epoch), self.decay_epochs) / self.decay_epochs
        return self.lambda_min + (self.lambda_max - self.lambda_min) * (math.cos(math.pi * progress) + 1) / 2

    def forward(self, epoch) -> torch.Tensor:
        reversed_theta = _GradientReversal.apply(self.theta, self.reversal_strength(epoch))
        return self.t_min + self.t_span * torch.sigmoid(reversed_theta)

    def extra_repr(self) -> str:
        return f"t_min={self.t_min}, t_span={self.t_span}, decay_epochs={self.decay_epochs}"


class _GradientReversal(torch.autograd.Function):
    """Identity forward; backward multiplies the incoming gradient by ``strength`` (CTKD's lambda <= 0)."""

    @staticmethod
    def forward(ctx, tensor, strength):
        ctx.strength = strength
        return tensor.clone()

    @staticmethod
    def backward(ctx, grad_output):
        return ctx.strength * grad_output, None


# ----------------------------------------------------------------------------------------------------------
# Private helpers.

def _kl(teacher_scaled, student_scaled):
    """Per-sample D(softmax(teacher_scaled) || softmax(student_scaled)) = sum_i p_i (log p_i - log q_i), (B,)."""
    teacher_log_probs = torch.log_softmax(teacher_scaled, dim=-1)
    student_log_probs = torch.log_softmax(student_scaled, dim=-1)
    # log-softmax of finite logits is finite, so an underflowed p_i = 0 gives 0 * finite = 0 (never 0 * inf).
    # A -inf teacher logit gives log p_i = -inf: that class contributes 0 (0 * log 0 = 0, as kl_div does).
    difference = teacher_log_probs - student_log_probs
    difference = torch.where(torch.isneginf(teacher_log_probs), torch.zeros_like(difference), difference)
    return (teacher_log_probs.exp() * difference).sum(dim=-1)


def _scale(teacher_logits, temperature):
    """teacher_logits / temperature, with -inf logits kept as a constant -inf: no NaN gradient reaches a
    temperature tensor (CTKD's, DTKD's per-sample one) through them, since d(-inf / T) / dT would be 0 * inf.
    Equal to the plain division where the logits are finite."""
    if not isinstance(temperature, torch.Tensor):
        return teacher_logits / temperature
    impossible = torch.isneginf(teacher_logits)
    filled = torch.where(impossible, torch.zeros_like(teacher_logits), teacher_logits)
    return torch.where(impossible, teacher_logits, filled / temperature)


def _check_pair(student_logits, teacher_logits):
    """Validate (B, K) logits of equal shape; return both in float64 (teacher detached) and the result dtype."""
    check_logits(student_logits, "student_logits", exact_dim=2)
    check_logits(teacher_logits, "teacher_logits", exact_dim=2)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            "student_logits and teacher_logits must have the same shape (B, K), got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    batch, num_classes = student_logits.shape
    if batch == 0:
        raise ValueError("student_logits must hold at least one sample, got batch size 0")
    if num_classes < 2:
        raise ValueError(f"student_logits must have K >= 2 classes, got shape {tuple(student_logits.shape)}")
    check_finite_logits(student_logits, teacher_logits)
    result_dtype = compute_dtype(torch.promote_types(student_logits.dtype, teacher_logits.dtype))
    wide = torch.float32 if student_logits.device.type == "mps" else torch.float64  # MPS has no float64
    teacher_logits = teacher_logits.detach().to(wide)
    if teacher_logits.is_inference():  # made under torch.inference_mode: autograd may not save it, a copy it may
        teacher_logits = teacher_logits.clone()
    return student_logits.to(wide), teacher_logits, result_dtype


def _check_loss_temperature(temperature, logits, name="temperature", squared=False):
    """A number > 0, or a positive tensor of shape (), (1,), (B, 1) cast to the compute dtype; ``squared``: a
    loss with a T^2 factor, so at most MAX_TEMPERATURE."""
    if isinstance(temperature, torch.Tensor) and temperature.numel() != 1 and temperature.shape != (logits.shape[0], 1):
        raise ValueError(f"{name} must be a number or a tensor of shape () or (B, 1), got shape {tuple(temperature.shape)}")
    temperature = check_temperature(temperature, logits, name)
    if squared:
        check_bounded_temperature(temperature, name)
    if isinstance(temperature, torch.Tensor):
        temperature = temperature.to(logits.dtype)
    return temperature


def _per_sample(temperature):
    """A temperature (number or tensor of shape (), (1,), (B, 1)) as a per-sample factor of shape (B,) or ()."""
    if isinstance(temperature, torch.Tensor):
        return temperature.reshape(-1) if temperature.numel() > 1 else temperature.reshape(())
    return temperature


def _check_reduction(reduction):
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f'reduction must be one of "mean", "sum", "none", got {reduction!r}')


def _reduce(per_sample, reduction, dtype):
    if reduction == "mean":
        per_sample = per_sample.mean()
    elif reduction == "sum":
        per_sample = per_sample.sum()
    return per_sample.to(dtype)
