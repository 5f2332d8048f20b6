"""Temperature as pure tensor math.

Everything here works on the last dimension (the classes) of tensors of any shape and any floating dtype.
Low-precision inputs (float16, bfloat16) are computed in float32 and the result is cast back to the input
dtype; float64 stays float64.

Notation (as in the papers): logits ``v``, probabilities ``p = softmax(v)``, temperature ``T`` and, where a
paper speaks of power transforms, ``gamma = 1 / T``.

    tempered_softmax(v, T)      p_T = softmax(v / T)
    power_transform(p, gamma)   p^gamma / sum_j p_j^gamma      (= softmax(gamma * v) when p = softmax(v))
    entropy(p)                  H(p) = -sum_i p_i log p_i        (nats)
    renyi_entropy(p, alpha)     H_alpha(p) = log(sum_i p_i^alpha) / (1 - alpha)
    power_sum(p, gamma)         U_gamma(p) = sum_i p_i^gamma    (TTM's weight; = exp((1 - gamma) H_gamma(p)))
    sharpness(v)                log sum_i exp(v_i)               (DTKD's "sharpness")
    temperature_for_entropy     the T with H(softmax(v / T)) = target, per sample
    smoothing_for_entropy       the label-smoothing epsilon whose target has a given entropy

Functions of probabilities check that they are >= 0 and sum to 1 within 1% over the last dimension, then
renormalise them (so float16/bfloat16 rounding cannot push an entropy above log K).

The private ``_check_*`` validators at the bottom are shared with ``kdlab.losses``.
"""
from __future__ import annotations

import math
from numbers import Real

import torch

from kdlab.common import check_logits, check_positive, check_temperature, compute_dtype

__all__ = [
    "tempered_softmax",
    "log_tempered_softmax",
    "power_transform",
    "entropy",
    "renyi_entropy",
    "power_sum",
    "sharpness",
    "temperature_for_entropy",
    "smoothing_for_entropy",
]


def tempered_softmax(logits: torch.Tensor, temperature) -> torch.Tensor:
    """Softmax of ``logits / temperature`` over the last dimension: p_T,i = exp(v_i / T) / sum_j exp(v_j / T).

    Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural Network", §2. T > 1 softens the
    distribution (towards uniform as T -> inf), T < 1 sharpens it (towards one-hot on the arg-max as T -> 0).

    ``temperature`` is a finite number > 0 or a positive tensor broadcastable against ``logits`` without
    enlarging it, e.g. shape (B, 1) for one temperature per sample. Returns a tensor in the dtype of ``logits``.
    """
    return log_tempered_softmax(logits, temperature).exp()


def log_tempered_softmax(logits: torch.Tensor, temperature) -> torch.Tensor:
    """log softmax(logits / temperature) over the last dimension, computed stably (log-sum-exp trick).

    Use this instead of ``tempered_softmax(...).log()``: the log of an underflowed probability is -inf, the
    log-softmax is finite. Same arguments and dtype rule as :func:`tempered_softmax`.
    """
    check_logits(logits, "logits", min_dim=1)
    temperature = check_temperature(temperature, logits)
    compute = compute_dtype(logits.dtype)
    if isinstance(temperature, torch.Tensor):
        temperature = temperature.to(compute)
    return torch.log_softmax(logits.to(compute) / temperature, dim=-1).to(logits.dtype)


def power_transform(probs: torch.Tensor, gamma, *, log_input: bool = False) -> torch.Tensor:
    """Power transform p_hat_i = p_i^gamma / sum_j p_j^gamma over the last dimension.

    Zheng & Yang (2024), "Knowledge Distillation with Transformed Teacher Matching" (TTM), eqs. 6-9: when
    p = softmax(v), the power transform is temperature scaling, p_hat = softmax(gamma * v) = softmax(v / T)
    with T = 1 / gamma. (The official TTM code's flag ``--ttm_l`` is gamma.)

    Computed in log space, p_hat = softmax(gamma * log p), so the result never underflows where
    softmax(gamma * v) does not *given the probabilities you pass*. The official code's
    ``softmax(v) ** gamma`` path loses more: in float32, softmax([0, -120]) is already [1, 0] (exp(-120)
    underflows), so no function of those probabilities can recover softmax(0.1 * [0, -120]) =
    [0.9999939, 6.1e-6]. To keep that information pass log-probabilities, e.g.
    ``power_transform(torch.log_softmax(v, -1), gamma, log_input=True)``, which equals softmax(gamma * v).

    Args:
        probs: probabilities (>= 0, summing to 1 over the last dimension), or log-probabilities when
            ``log_input=True`` (logits work too: an additive constant per sample cancels).
        gamma: finite number > 0 (gamma < 1 flattens, gamma > 1 sharpens).
        log_input: whether ``probs`` holds log-probabilities.
    Returns probabilities in the dtype of ``probs``.
    """
    gamma = check_positive(gamma, "gamma")
    if not isinstance(log_input, bool):
        raise TypeError(f"log_input must be a bool, got {type(log_input).__name__}")
    if log_input:
        check_logits(probs, "probs", min_dim=1)
        log_probs = probs.to(compute_dtype(probs.dtype))
    else:
        _check_probs(probs, "probs")
        log_probs = probs.to(compute_dtype(probs.dtype)).log()  # log 0 = -inf, and gamma * -inf = -inf
    return torch.softmax(gamma * log_probs, dim=-1).to(probs.dtype)


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy H(p) = -sum_i p_i log p_i in nats over the last dimension (0 log 0 = 0).

    Ranges from 0 (one-hot) to log K (uniform over K classes). Returns shape ``probs.shape[:-1]``.
    """
    _check_probs(probs, "probs")
    p = _renormalized(probs)
    return torch.special.entr(p).sum(-1).to(probs.dtype)


def renyi_entropy(probs: torch.Tensor, alpha) -> torch.Tensor:
    """Renyi entropy of order alpha: H_alpha(p) = log(sum_i p_i^alpha) / (1 - alpha), in nats.

    Limits: alpha -> 1 gives the Shannon entropy (used for |alpha - 1| < 1e-6, where the formula is 0/0),
    alpha = 0 gives log of the support size, alpha = inf gives -log max_i p_i. H_alpha is non-increasing in
    alpha. TTM (Zheng & Yang 2024, eq. 15) shows that TTM = KD plus a penalty on H_{1/T}(q) of the student.

    ``alpha`` is a number >= 0 (``math.inf`` allowed). Returns shape ``probs.shape[:-1]``.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, Real) or math.isnan(alpha) or alpha < 0:
        raise ValueError(f"alpha must be a number >= 0 (math.inf allowed), got {alpha!r}")
    alpha = float(alpha)
    _check_probs(probs, "probs")
    p = _renormalized(probs)
    if alpha == 0.0:
        result = torch.log((p > 0).sum(-1).to(p.dtype))
    elif math.isinf(alpha):
        result = -torch.log(p.amax(-1))
    elif abs(alpha - 1.0) < 1e-6:
        result = torch.special.entr(p).sum(-1)
    else:
        # log sum_i p_i^alpha = logsumexp(alpha * log p_i): no underflow of p_i^alpha for alpha > 1.
        result = torch.logsumexp(alpha * p.log(), dim=-1) / (1.0 - alpha)
    return result.to(probs.dtype)


def power_sum(probs: torch.Tensor, gamma) -> torch.Tensor:
    """TTM's power sum U_gamma(p) = sum_i p_i^gamma over the last dimension.

    Zheng & Yang (2024), eqs. 22-23: WTTM weights each sample's TTM loss by U_{1/T}(p^t) of the
    *untransformed* teacher distribution (the official code's ``norm``). For 0 < gamma < 1,
    1 <= U_gamma(p) <= K^(1 - gamma), with 1 for a one-hot p and K^(1 - gamma) for the uniform p, and
    U_gamma(p) = exp((1 - gamma) * H_gamma(p)). gamma is a finite number > 0.
    Returns shape ``probs.shape[:-1]``.
    """
    gamma = check_positive(gamma, "gamma")
    _check_probs(probs, "probs")
    p = _renormalized(probs)
    return torch.logsumexp(gamma * p.log(), dim=-1).exp().to(probs.dtype)


def sharpness(logits: torch.Tensor) -> torch.Tensor:
    """DTKD's sharpness of a logit vector: log sum_i exp(v_i) (logsumexp, no mean subtraction).

    Wei & Bai (2024), "Dynamic Temperature Knowledge Distillation", eq. 2. DTKD picks per-sample teacher and
    student temperatures that make the sharpness of v / T_t and z / T_s (nearly) equal.
    Returns shape ``logits.shape[:-1]``.
    """
    check_logits(logits, "logits", min_dim=1)
    return torch.logsumexp(logits.to(compute_dtype(logits.dtype)), dim=-1).to(logits.dtype)


def temperature_for_entropy(logits: torch.Tensor, target_entropy, *, iterations: int = 80) -> torch.Tensor:
    """Per-sample temperature T such that H(softmax(v / T)) = target_entropy.

    For non-constant logits the entropy of softmax(v / T) increases strictly with T, from log m (m = number
    of tied maxima) as T -> 0 to log K as T -> inf, so T is found by bisection on log T (in float64, after
    doubling/halving T from 1 until the target is bracketed).

    Args:
        logits: shape (..., K).
        target_entropy: nats; a number or a tensor broadcastable to ``logits.shape[:-1]``. Each target must lie
            strictly between log m and log K for its sample, otherwise ValueError.
        iterations: bisection steps (80 reach float64 resolution).
    Returns:
        shape (..., 1) in the dtype of ``logits``, ready for ``tempered_softmax(logits, T)``; not differentiable
        (the logits are detached).
    """
    check_logits(logits, "logits", min_dim=1)
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be an int >= 1, got {iterations!r}")
    v = logits.detach().to(torch.float64)
    target = _entropy_target(target_entropy, v.shape[:-1], v.device)
    num_classes = v.shape[-1]
    lowest = torch.log((v == v.amax(-1, keepdim=True)).sum(-1).to(torch.float64))
    reachable = (target > lowest) & (target < math.log(num_classes))
    if not bool(reachable.all()):
        bad = (~reachable).nonzero()[0].tolist()
        raise ValueError(
            "target_entropy must lie strictly between log(number of tied maximal logits) and "
            f"log K = {math.log(num_classes):.6g} for every sample; at index {bad} the target is "
            f"{target[tuple(bad)].item():.6g} and the reachable range is ({lowest[tuple(bad)].item():.6g}, "
            f"{math.log(num_classes):.6g})"
        )

    def entropy_at(log_t):
        log_p = torch.log_softmax(v / log_t.exp().unsqueeze(-1), dim=-1)
        return -(log_p.exp() * log_p).sum(-1)

    # Bracket: log T in [lo, hi] with H(lo) <= target <= H(hi). Doubling / halving is at most ~1100 steps.
    lo = torch.zeros_like(target)
    hi = torch.zeros_like(target)
    for _ in range(1100):
        too_cold = entropy_at(hi) < target
        if not bool(too_cold.any()):
            break
        hi = torch.where(too_cold, hi + math.log(2.0), hi)
    for _ in range(1100):
        too_hot = entropy_at(lo) > target
        if not bool(too_hot.any()):
            break
        lo = torch.where(too_hot, lo - math.log(2.0), lo)
    lo = torch.minimum(lo, hi - math.log(2.0))
    for _ in range(iterations):
        mid = (lo + hi) / 2
        below = entropy_at(mid) < target
        lo = torch.where(below, mid, lo)
        hi = torch.where(below, hi, mid)
    return ((lo + hi) / 2).exp().unsqueeze(-1).to(logits.dtype)


def smoothing_for_entropy(num_classes: int, target_entropy):
    """Label-smoothing epsilon whose smoothed target has entropy ``target_entropy`` (nats).

    Label smoothing (Szegedy et al. 2016; PyTorch's ``cross_entropy(label_smoothing=eps)``) trains against
    (1 - eps) * onehot(y) + eps / K, i.e. 1 - eps + eps / K on the true class and eps / K elsewhere. Its
    entropy grows strictly from 0 (eps = 0) to log K (eps = 1), so eps is found by bisection. Used to compare
    a teacher's tempered distribution with label smoothing of equal entropy (Frank & Davis 2026; Müller et
    al. 2019). Example: K = 5, eps = 0.1 gives H = 0.38967.

    Args:
        num_classes: K >= 2.
        target_entropy: a number in [0, log K], or a tensor of them.
    Returns:
        a float for a number, a float64 tensor of the same shape for a tensor.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    as_float = not isinstance(target_entropy, torch.Tensor)
    if as_float and (isinstance(target_entropy, bool) or not isinstance(target_entropy, Real)):
        raise TypeError(f"target_entropy must be a number or a tensor, got {type(target_entropy).__name__}")
    if not as_float and not target_entropy.is_floating_point():
        raise TypeError(f"target_entropy must be a floating-point tensor, got {target_entropy.dtype}")
    target = torch.as_tensor(target_entropy, dtype=torch.float64)
    log_k = math.log(num_classes)
    # A float32 tensor holding log K rounds above the float64 log K: allow that rounding, then clamp.
    slack = 0.0 if as_float else 4 * torch.finfo(target_entropy.dtype).eps * log_k
    if not bool(((target >= 0) & (target <= log_k + slack)).all()):
        raise ValueError(f"target_entropy must lie in [0, log K] = [0, {log_k:.6g}] nats, got {target_entropy!r}")
    target = target.clamp(0.0, log_k)

    def smoothed_entropy(eps):
        p_true = 1 - eps + eps / num_classes
        p_other = eps / num_classes
        return torch.special.entr(p_true) + (num_classes - 1) * torch.special.entr(p_other)

    lo, hi = torch.zeros_like(target), torch.ones_like(target)
    for _ in range(100):
        mid = (lo + hi) / 2
        below = smoothed_entropy(mid) < target
        lo = torch.where(below, mid, lo)
        hi = torch.where(below, hi, mid)
    eps = (lo + hi) / 2
    return float(eps) if as_float else eps


# ----------------------------------------------------------------------------------------------------------
# Shared private validators (also used by kdlab.losses). Each raises TypeError/ValueError naming the argument.


def _check_probs(tensor, name: str) -> None:
    check_logits(tensor, name, min_dim=1)
    p = tensor.detach().to(compute_dtype(tensor.dtype))
    if not bool(torch.isfinite(p).all()) or bool((p < 0).any()):
        raise ValueError(f"{name} must hold finite probabilities >= 0")
    # 1% catches logits or unnormalised weights passed by mistake, yet accepts probabilities rounded to
    # bfloat16 and cast back (off by ~1e-3).
    tolerance = 1e-2 + 4 * tensor.shape[-1] * torch.finfo(tensor.dtype).eps
    if p.numel() and float((p.sum(-1) - 1).abs().max()) > tolerance:
        raise ValueError(f"{name} must sum to 1 over the last dimension (tolerance {tolerance:.2g})")


def _renormalized(probs: torch.Tensor) -> torch.Tensor:
    """Checked probabilities in the compute dtype, divided by their sum (removes low-precision rounding)."""
    p = probs.to(compute_dtype(probs.dtype))
    return p / p.sum(-1, keepdim=True)


def _entropy_target(target_entropy, batch_shape, device) -> torch.Tensor:
    if isinstance(target_entropy, torch.Tensor):
        if not target_entropy.is_floating_point():
            raise TypeError(f"target_entropy must be a number or a floating-point tensor, got {target_entropy.dtype}")
        target = target_entropy.detach().to(device=device, dtype=torch.float64)
    elif isinstance(target_entropy, bool) or not isinstance(target_entropy, Real):
        raise TypeError(f"target_entropy must be a number or a tensor, got {type(target_entropy).__name__}")
    else:
        target = torch.tensor(float(target_entropy), dtype=torch.float64, device=device)
    try:
        return torch.broadcast_to(target, batch_shape).clone()
    except RuntimeError:
        raise ValueError(
            f"target_entropy must broadcast to the batch shape {tuple(batch_shape)}, got shape {tuple(target.shape)}"
        ) from None
