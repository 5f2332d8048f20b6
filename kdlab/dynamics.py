"""What the first optimizer steps of a distillation do: loss, gradient and update size, step by step.

``distill`` and ``sweep`` log one row per *epoch*. When a run collapses in its first epoch (e.g. KD at a
high temperature with SGD at lr 0.1) the epoch averages hide how: did the loss rise, did one step move the
weights far, did the hidden units die? ``first_steps`` replays the first ``steps`` optimizer steps of a run
with exactly ``kdlab.distill``'s protocol (``torch.manual_seed(seed)`` before the student is created, one
``torch.Generator().manual_seed(seed)`` permutation per epoch, consecutive batches, SGD with momentum or
AdamW) and records, for every step k (before it is taken, on the batch of step k):

* the loss terms of the method and their sum,
* the gradient norm ``|g_k|`` over all parameters,
* the update norm ``|theta_{k+1} - theta_k|`` (what the optimizer actually moved: for SGD with momentum it
  includes the velocity of the earlier steps),
* the batch's mean largest absolute student logit ``mean_b max_i |z_bi|``,
* the share of hidden ReLU units that are zero on every image of the batch ("dead"), for models with
  ``nn.ReLU`` modules (NaN otherwise),
* the batch accuracy (percent).

The teacher is run once on the training split (as ``distill`` does with cached teacher logits). Data
augmentation is not applied (students are trained without it in kdlab's recipes). The function follows the
same device rules as ``distill`` but has been run on the CPU only.
"""
from __future__ import annotations

import math

import pandas as pd
import torch
from torch import nn

from kdlab.data import Dataset
from kdlab.methods import get_method
from kdlab.models import create_model
from kdlab.train import RECIPES, predict

__all__ = ["first_steps"]


def first_steps(teacher, dataset: Dataset, student: str = "mlp64", method: str = "kd", steps: int = 20,
                seed: int = 0, optimizer: str = "sgd", lr: float | None = None, momentum: float | None = None,
                weight_decay: float | None = None, batch_size: int | None = None, **method_overrides):
    """Replay the first ``steps`` steps of ``distill(teacher, dataset, student, method, ...)``, one row per step.

    teacher: a trained ``nn.Module`` (or None for "ce"/"label_smoothing"); dataset: a ``Dataset`` (a transfer
    set); student: a model name; method and ``**method_overrides`` (temperature=..., ...) as in ``distill``.
    Settings left as None come from ``kdlab.RECIPES["mnist10k"]["student"]`` (SGD, lr 0.01, momentum 0.9, no
    weight decay, batch 64). With the same arguments, step k here is step k of ``distill`` (tested).

    Returns a DataFrame with the columns "step" (1-based), "epoch", one column per loss term, "loss",
    "grad_norm", "update_norm", "logit_max" (mean over the batch of max_i |z_i|), "dead_units" (share of
    hidden ReLU units that output 0 on the whole batch, NaN for models without ReLU modules), "batch_acc"
    (percent) and the settings "method", "lr", "seed" and "temperature" (NaN for methods without one).
    """
    if not isinstance(dataset, Dataset):
        raise ValueError(f"dataset must be a kdlab Dataset (e.g. load_dataset().transfer_set(1000)), "
                         f"got {type(dataset).__name__}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if optimizer not in ("sgd", "adamw"):
        raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {optimizer!r}")
    recipe = RECIPES["mnist10k"]["student"]
    lr = recipe["lr"] if lr is None else lr
    momentum = recipe["momentum"] if momentum is None else momentum
    weight_decay = recipe["weight_decay"] if weight_decay is None else weight_decay
    batch_size = recipe["batch_size"] if batch_size is None else batch_size
    for name, value in (("lr", lr), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    loss_terms = get_method(method, **method_overrides)
    if loss_terms.needs_teacher and not isinstance(teacher, nn.Module):
        raise ValueError(f"teacher must be a trained nn.Module for method {method!r}, got {type(teacher).__name__}")

    device = dataset.train_images.device
    teacher_logits = predict(teacher, dataset.train_images) if loss_terms.needs_teacher else None
    torch.manual_seed(seed)
    model = create_model(student, num_classes=dataset.num_classes, in_channels=dataset.input_shape[0]).to(device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    else:
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)

    hidden = []
    hooks = [m.register_forward_hook(lambda module, inputs, output: hidden.append(output.detach()))
             for m in model.modules() if isinstance(m, nn.ReLU)]
    generator = torch.Generator().manual_seed(seed)
    images, targets = dataset.train_images, dataset.train_targets
    rows, step, epoch = [], 0, 0
    try:
        while step < steps:
            epoch += 1
            perm = torch.randperm(targets.shape[0], generator=generator).to(device)
            for start in range(0, perm.shape[0], batch_size):
                if step == steps:
                    break
                step += 1
                index = perm[start:start + batch_size]
                hidden.clear()
                student_logits = model(images[index]).float()
                terms = loss_terms(student_logits, None if teacher_logits is None else teacher_logits[index],
                                   targets[index], epoch)
                loss = sum(terms.values())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                before = [p.detach().clone() for p in params]
                grad_norm = _norm([p.grad for p in params if p.grad is not None])
                opt.step()
                update_norm = _norm([p.detach() - b for p, b in zip(params, before)])
                dead = (torch.cat([(h.flatten(2) if h.dim() > 2 else h[..., None]).amax(dim=(0, 2)) <= 0
                                   for h in hidden]).double().mean().item() if hidden else math.nan)
                rows.append({"step": step, "epoch": epoch,
                             **{name: float(value.detach()) for name, value in terms.items()},
                             "loss": float(loss.detach()), "grad_norm": grad_norm, "update_norm": update_norm,
                             "logit_max": float(student_logits.detach().abs().amax(dim=1).mean()),
                             "dead_units": dead,
                             "batch_acc": 100.0 * float((student_logits.argmax(1) == targets[index]).double().mean())})
    finally:
        for hook in hooks:
            hook.remove()
    frame = pd.DataFrame(rows)
    temperature = loss_terms.hparams.get("temperature", math.nan) if loss_terms.uses_temperature else math.nan
    return frame.assign(method=method, lr=float(lr), seed=seed, temperature=float(temperature))


def _norm(tensors):
    return float(torch.sqrt(sum((t.double() ** 2).sum() for t in tensors)))
