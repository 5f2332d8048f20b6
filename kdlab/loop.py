"""The training loop of kdlab: one loop for N students at once; ``distill`` and ``train_teacher`` are N = 1.

Many students are a model like any other: called on a batch they give logits (N, B, K). ``OneStudent`` wraps
an ``nn.Module`` (N = 1); ``StackedStudents`` stacks N students of one architecture into one set of
parameters with a leading dimension N (``kdlab.sweeps`` uses it). ``fit`` trains either::

    for epoch in 1..E:
        perm = randperm(n) per seed              # torch.Generator().manual_seed(seed), one per epoch
        for each slice of perm of size B:        # consecutive slices, the last partial batch kept
            z = students(x)                      # (N, B, K)
            v = teacher logits                   # computed once for the split, or per batch if augmented
            terms = method terms per student     # e.g. {"ce": (N,), "kd": (N,)}: each student's weighted terms
            sum_n sum(terms).backward()          # students are independent: each gets its own gradient
            optimizer steps (torch.optim)
        LR schedule step; test metrics; one history row per student

The students are independent, so the gradient of the summed loss with respect to student n's parameters is
exactly student n's own gradient: a student of a sweep equals the same ``distill`` run (tested).
A method's terms are written for ONE student (``kdlab.methods``); :class:`Losses` calls the method itself for a
single student and batches its terms over several with ``torch.func.vmap`` (:class:`BatchedTerms`).

What is fast on a laptop CPU: the data live as tensors on the device, each epoch's order is gathered once
and sliced (no DataLoader); the teacher's logits do not change while the students learn, so when the data
are not augmented they are computed once for the training split (:class:`TeacherLogits`); test metrics are
computed once per epoch in large chunks.
"""
from __future__ import annotations

import contextlib
import copy
import itertools
import json
import math
import time

import pandas as pd
import torch
from torch import nn

from kdlab.common import (
    atomic_save,
    autocast,
    check_logits,
    check_model_logits,
    diverged_term,
    eval_batch_size,
    make_optimizer,
    make_scheduler,
    skip_value_checks,
    tune_cpu_allocator,
)
from kdlab.data import augment_batch
from kdlab.stats import calibration

__all__ = ["TrainingDiverged", "fit", "OneStudent", "StackedStudents", "Batches", "Losses", "TeacherLogits",
           "predict"]


class TrainingDiverged(RuntimeError):
    """Training produced a non-finite loss (NaN or inf): usually a learning rate too large for the loss.

    Raised by ``train_teacher`` and ``distill`` at the end of the first epoch whose mean loss term is not
    finite, before that epoch is checkpointed. ``epoch`` is that epoch, ``term`` the first non-finite loss
    term (e.g. "kd", or "loss"), ``history`` the epochs so far (the last one with the non-finite values).
    ``kdlab.sweep`` does not raise it: it marks the run ``diverged=True`` and trains the others on.
    """

    def __init__(self, message, epoch=None, term=None, history=None):
        super().__init__(message)
        self.epoch, self.term, self.history = epoch, term, history


# ----------------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------------

def fit(students, methods, batches, dataset, settings, *, teacher=None, teacher_logits=None, strict=True,
        on_diverged=None, checkpoint=None, bar=None, description="", progress=False, world_size=1):
    """Train ``students`` (N of them) with ``methods`` (one ``Method`` each); return N histories (lists of rows).

    batches: a :class:`Batches`; settings: "epochs", "batch_size" and "lr" (for messages). teacher_logits: a
    :class:`TeacherLogits` or None (the teacher then runs per batch). strict (one student): a non-finite loss
    raises :class:`TrainingDiverged`; otherwise ``on_diverged(n, epoch, term)`` is called once for student n,
    every later row of it gets ``"diverged": True`` and the others train on. checkpoint (one student):
    {"path", "config" (JSON text), "resume"}: resume from the file when it exists, save after every epoch.
    bar: a tqdm bar to advance by one per epoch (else one is made from ``description`` and ``progress``).
    """
    device = batches.device
    tune_cpu_allocator(device)
    for method in methods:
        method.to(device)
    epochs, batch_size = settings["epochs"], settings["batch_size"]
    histories, start_epoch = [[] for _ in methods], 0
    if checkpoint is not None and checkpoint["resume"] and checkpoint["path"].exists():
        histories, start_epoch = _resume(checkpoint, students, methods, batches, epochs)
    losses = Losses(methods, device, value_checks=strict)  # a sweep marks a run whose logits blow up
    if teacher is not None and teacher_logits is not None and start_epoch < epochs:
        batches.cached = teacher_logits.get()
    own_bar = bar is None
    if own_bar:
        from tqdm.auto import tqdm  # a widget in Jupyter, a text bar in a terminal
        bar = tqdm(desc=description, initial=start_epoch, total=epochs, unit="epoch",
                   disable=not progress or batches.rank != 0)
    teacher_was_training = teacher.training if teacher is not None else None
    if teacher is not None:
        teacher.eval()
    diverged = set()
    try:
        for epoch in range(start_epoch + 1, epochs + 1):
            start_time = time.perf_counter()
            epoch_lrs = students.learning_rates()
            students.train()
            stats = EpochStats(methods, device)
            first = True
            for images, targets, teacher_out in batches.epoch(batch_size):
                with autocast(device):
                    student_logits = students(images)
                student_logits = student_logits.float()
                if first and epoch == start_epoch + 1:
                    check_logits(student_logits[0], "student output", num_classes=dataset.num_classes)
                elif strict and not bool(torch.isfinite(student_logits).all()):
                    names = ", ".join(repr(t) for t in methods[0].term_names)
                    raise TrainingDiverged(
                        f"training diverged at epoch {epoch}: the model's logits became non-finite, so the loss "
                        f"terms ({names}) are NaN; try a smaller learning rate than lr={settings['lr']:g}",
                        epoch=epoch, term="logits", history=pd.DataFrame(histories[0]))
                first = False
                terms, loss = losses(student_logits, teacher_out, targets, epoch)
                students.zero_grad()
                loss.sum().backward()
                if world_size > 1:
                    _average_gradients([p for method in methods for p in method.parameters()], world_size)
                students.step()
                stats.add(terms, loss, student_logits, targets)
            students.schedule()
            students.end_epoch()
            rows = stats.rows(epoch, _test_metrics(students, dataset), epoch_lrs, losses.owned,
                              time.perf_counter() - start_time, world_size)
            for history, row in zip(histories, rows):
                history.append(row)
            _check_divergence(histories, losses.owned, diverged, epoch, strict, on_diverged, settings)
            bar.update(1)
            finite = [row["test_acc"] for row in rows if math.isfinite(row["test_acc"])]
            bar.set_postfix(**({"loss": f"{rows[0]['loss']:.3f}", "test_acc": f"{rows[0]['test_acc']:.2f}"}
                               if len(rows) == 1 else {"best_test_acc": f"{max(finite, default=math.nan):.2f}"}))
            if checkpoint is not None and batches.rank == 0:
                _save_checkpoint(checkpoint, epoch, histories[0], students, methods[0], batches)
    finally:
        if own_bar:
            bar.close()
        if teacher is not None:
            teacher.train(teacher_was_training)
    return histories


def _check_divergence(histories, owned, diverged, epoch, strict, on_diverged, settings):
    """A student whose newest row has a non-finite loss term: raise (``strict``) or mark it and report it once
    (``on_diverged``). Only the student's own terms are looked at (NaN elsewhere means "not a term of this
    method"), then the total loss."""
    for n, history in enumerate(histories):
        row = history[-1]
        term = None if n in diverged else diverged_term(row, [name for name in row if name in owned[n]] + ["loss"])
        if term is not None and strict:
            raise TrainingDiverged(
                f"training diverged at epoch {epoch}: the loss term {term!r} became non-finite "
                f"({row.get(term)}); try a smaller learning rate than lr={settings['lr']:g}",
                epoch=epoch, term=term, history=pd.DataFrame(history))
        if term is not None:
            diverged.add(n)
            on_diverged(n, epoch, term)
        if n in diverged:
            row["diverged"] = True


def _test_metrics(students, dataset):
    """test_acc (percent), test_nll (nats) and test_ece (percent) of every student: lists of N floats."""
    logits = students.test_logits(dataset.test_images)  # (N, test images, K)
    targets = dataset.test_targets.to(logits.device)
    correct = (logits.argmax(dim=-1) == targets).sum(dim=1)
    metrics = {"test_acc": (100.0 * correct.cpu().double() / targets.shape[0]).tolist()}
    metrics.update({f"test_{name}": values for name, values in calibration(logits, targets).items()})
    return metrics


class EpochStats:
    """Running sums of every student's terms, loss, correct predictions and temperatures (DTKD, CTKD) over an
    epoch, and the epoch's history rows: "epoch", the student's terms, "loss", "train_acc", the test
    metrics, "lr", "seconds", "temperature_mean/min/max" (methods with recorded temperatures)."""

    def __init__(self, methods, device):
        self.methods, self.device, self.term_names, self.running, self.seen = methods, device, None, None, 0
        self.correct = torch.zeros(len(methods), dtype=torch.int64, device=device)
        self.temperatures = [[0.0, 0, None, None] for _ in methods]

    def add(self, terms, loss, student_logits, targets):
        batch = targets.shape[1]
        self.seen += batch
        if self.term_names is None:
            self.term_names = list(terms)
        values = torch.stack([terms[name] for name in self.term_names] + [loss.detach()]) * batch
        self.running = values if self.running is None else self.running + values
        self.correct += (student_logits.detach().argmax(dim=-1) == targets).sum(dim=1)
        for method, stats in zip(self.methods, self.temperatures):
            if method.last_temperatures is not None:
                temperatures = method.last_temperatures.detach().float().flatten()
                stats[0] += temperatures.sum()
                stats[1] += temperatures.numel()
                low, high = temperatures.min(), temperatures.max()
                stats[2] = low if stats[2] is None else torch.minimum(stats[2], low)
                stats[3] = high if stats[3] is None else torch.maximum(stats[3], high)

    def rows(self, epoch, test_metrics, epoch_lrs, owned, seconds, world_size=1):
        wide = torch.float32 if self.device.type == "mps" else torch.float64  # MPS has no float64
        count = len(self.methods)
        t_sums = [torch.as_tensor(s[0], device=self.device).to(wide).reshape(1) for s in self.temperatures]
        totals = torch.cat([self.running.to(wide).flatten(), torch.tensor([self.seen], dtype=wide, device=self.device),
                            self.correct.to(wide), *t_sums,
                            torch.tensor([float(s[1]) for s in self.temperatures], dtype=wide, device=self.device)])
        extremes = torch.tensor([v for s in self.temperatures for v in
                                 ((-float(s[2]), float(s[3])) if s[1] else (-math.inf, -math.inf))],
                                dtype=wide, device=self.device)
        if world_size > 1:
            import torch.distributed as dist
            dist.all_reduce(totals)
            dist.all_reduce(extremes, op=dist.ReduceOp.MAX)
        totals, extremes = totals.cpu().double().tolist(), extremes.cpu().double().tolist()
        names, size = self.term_names + ["loss"], len(self.term_names) + 1
        seen = totals[size * count]
        correct, t_sum, t_count = (totals[size * count + 1 + k * count:size * count + 1 + (k + 1) * count]
                                   for k in range(3))
        rows = []
        for n in range(count):
            row = {"epoch": epoch}
            row.update({name: totals[i * count + n] / seen for i, name in enumerate(names)
                        if name in owned[n]})
            row.update({"loss": totals[(size - 1) * count + n] / seen, "train_acc": 100.0 * correct[n] / seen})
            row.update({name: values[n] for name, values in test_metrics.items()})
            row.update({"lr": epoch_lrs[n], "seconds": seconds})
            if t_count[n] > 0:
                row.update({"temperature_mean": t_sum[n] / t_count[n], "temperature_min": -extremes[2 * n],
                            "temperature_max": extremes[2 * n + 1]})
            rows.append(row)
        return rows


# ----------------------------------------------------------------------------------------------------------
# Students: one module, or N stacked ones
# ----------------------------------------------------------------------------------------------------------

class _Optimization:
    """Optimizers and schedulers of a set of students: ``sizes[i]`` students share ``optimizers[i]`` (the
    optimizers after ``len(sizes)`` train method parameters: CTKD's temperature)."""

    def learning_rates(self):
        """This epoch's learning rate of every student (the scheduled value)."""
        return [optimizer.param_groups[0]["lr"] for optimizer, size in zip(self.optimizers, self.sizes)
                for _ in range(size)]

    def add_optimizer(self, params, settings, fused=None):
        optimizer = make_optimizer(params, settings, fused=fused)
        self.optimizers.append(optimizer)
        self.schedulers.append(make_scheduler(optimizer, settings))

    def zero_grad(self):
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)

    def step(self):
        for optimizer in self.optimizers:
            optimizer.step()

    def schedule(self):
        for scheduler in self.schedulers:
            if scheduler is not None:
                scheduler.step()

    def end_epoch(self):
        pass


class OneStudent(_Optimization):
    """An ``nn.Module`` as a set of one student: called on a batch it gives logits (1, B, K).

    One optimizer for the model's parameters and ``extra_params`` (CTKD's temperature), as the training
    protocol says; DistributedDataParallel when ``world_size`` > 1, ``torch.compile`` when ``compile``.
    """

    count = 1

    def __init__(self, model, settings, device, extra_params=(), compile=False, world_size=1):
        model.to(device)
        if device.type == "cuda" and _has_conv(model):
            model.to(memory_format=torch.channels_last)
        self.model, self.world_size, self.sizes = model, world_size, [1]
        self.optimizers, self.schedulers = [], []
        self.add_optimizer(list(model.parameters()) + list(extra_params), settings)
        self.forward_model = model
        if world_size > 1:
            from torch.nn.parallel import DistributedDataParallel
            self.forward_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                         else None)
        if compile:
            self.forward_model = torch.compile(self.forward_model)

    def __call__(self, images):
        return self.forward_model(_memory_format(images, self.model)).unsqueeze(0)

    def train(self):
        self.model.train()

    def test_logits(self, images):
        return predict(self.model, images).unsqueeze(0)

    def end_epoch(self):
        if self.world_size > 1:  # BatchNorm running statistics end the epoch as rank 0's
            import torch.distributed as dist
            for buffer in self.model.buffers():
                dist.broadcast(buffer, src=0)

    def state_dict(self):
        scheduler = self.schedulers[0]
        return {"model": self.model.state_dict(), "optimizer": self.optimizers[0].state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None}

    def load_state_dict(self, state):
        self.model.load_state_dict(state["model"])
        self.optimizers[0].load_state_dict(state["optimizer"])
        if self.schedulers[0] is not None:
            self.schedulers[0].load_state_dict(state["scheduler"])


class StackedStudents(_Optimization):
    """N students of one architecture as one model: parameters stacked along a leading dimension N
    (``torch.func.stack_module_state``); called on a batch it gives logits (N, B, K).

    settings: each student's optimizer settings. Contiguous students with the same settings form a *part*: one
    leaf tensor (n, ...) per parameter, one ``torch.optim`` optimizer (fused kernels where torch has them: the
    same update, one pass over each tensor) and one scheduler, built exactly as for one student.
    streams: the input stream (seed) each student sees, sorted; students of one stream share their first
    layer's product (MLPs: :class:`StackedMLP`), other architectures run through ``vmap(functional_call)``.
    """

    def __init__(self, students, settings, streams, device):
        from torch.func import stack_module_state

        self.students, self.count = students, len(students)
        self.skeleton = copy.deepcopy(students[0]).to("meta")
        params, self.buffers = stack_module_state(students)
        self.parts, self.optimizers, self.schedulers, self.sizes = [], [], [], []
        for _, run in itertools.groupby(range(self.count), key=lambda n: optimizer_key(settings[n])):
            run = list(run)
            part = params if len(run) == self.count else \
                {name: value[run[0]:run[-1] + 1].detach().clone().requires_grad_() for name, value in params.items()}
            self.parts.append(part)
            self.sizes.append(len(run))
            fused = device.type in ("cpu", "cuda") and all(p.is_floating_point() for p in part.values())
            self.add_optimizer(list(part.values()), settings[run[0]], fused=fused or None)
        shared = len(set(streams)) == 1
        self.forward = batched_forward(self.skeleton, shared, stream_runs(streams))
        self.forward_shared = self.forward if shared else batched_forward(self.skeleton, True)
        self.takes_streams = isinstance(self.forward, StackedMLP) and not shared
        self.device = device

    def joined(self):
        """The parts' leaves concatenated along dimension 0 (the leaves themselves when there is one part)."""
        if len(self.parts) == 1:
            return self.parts[0]
        return {name: torch.cat([part[name] for part in self.parts]) for name in self.parts[0]}

    def __call__(self, images):
        return self.forward(self.joined(), self.buffers, images)

    def train(self):
        self.skeleton.train()

    def test_logits(self, images):
        self.skeleton.eval()
        chunks, params, size = [], self.joined(), eval_batch_size(self.device)
        with torch.no_grad(), autocast(self.device):
            for start in range(0, images.shape[0], size):
                chunks.append(self.forward_shared(params, self.buffers, images[start:start + size].to(self.device))
                              .float())
        self.skeleton.train()
        return torch.cat(chunks, dim=1)

    def trained(self):
        """The students (eval mode), each with its slice of the trained parameters and buffers copied back."""
        params = self.joined()
        with torch.no_grad():
            for n, student in enumerate(self.students):
                for name, param in student.named_parameters():
                    param.copy_(params[name][n])
                for name, buffer in student.named_buffers():
                    buffer.copy_(self.buffers[name][n])
        return [student.eval() for student in self.students]


def optimizer_key(settings):
    """Students with equal keys can share one optimizer."""
    return tuple(repr(settings[key]) for key in ("optimizer", "lr", "momentum", "weight_decay", "schedule", "epochs"))


def batched_forward(skeleton, shared_input, runs=None):
    """forward(params, buffers, images) -> logits (N, B, K) of the N stacked students.

    images: (B, C, H, W) seen by every student when ``shared_input``. Otherwise the MLP students take the
    list of the S streams' batches (one per seed) and ``runs``, the (start, stop, stream) ranges of students
    that see each (students are sorted by seed); other architectures take (N, B, C, H, W), one batch each.
    The MLP students (Flatten, Linear, ReLU) get hand-batched layers (:class:`StackedMLP`). Any other
    architecture runs through ``torch.func.vmap`` over ``functional_call`` (same result, more overhead).
    """
    layers = mlp_layers(skeleton)
    if layers is None:
        from torch.func import functional_call, vmap

        def run_one(p, b, images):
            return functional_call(skeleton, (p, b), (images,))

        return vmap(run_one, in_dims=(0, 0, None if shared_input else 0))
    return StackedMLP(layers, [(0, None, 0)] if shared_input else runs)


def stream_runs(streams):
    """[(start, stop, stream)]: the maximal ranges of consecutive students that share an input stream."""
    return [(group[0], group[-1] + 1, stream) for stream, group in
            ((key, [n for n, _ in run]) for key, run in itertools.groupby(enumerate(streams), key=lambda x: x[1]))]


class StackedMLP:
    """The forward pass of N stacked MLP students (Flatten, Linear, ReLU); autograd gives the backward.

    The students that see the same batch (one seed's stream) share their first layer: one (B, D) @ (D, n *
    hidden) product (``addmm``) for the n students of a run, instead of n small ones; the next layers are
    ``baddbmm`` over all N students. ``runs``: (start, stop, stream) ranges of students and the index of the
    input batch they see (stop None: to the last student).
    """

    def __init__(self, layers, runs):
        self.layers, self.runs = layers, runs

    def __call__(self, params, buffers, images):
        hidden = list(images) if isinstance(images, (list, tuple)) else [images]  # the streams' batches
        for kind, name in self.layers:
            if kind == "flatten":  # Flatten comes first (see mlp_layers)
                hidden = [batch.flatten(1) for batch in hidden]
            elif kind == "relu":
                hidden = [batch.relu() for batch in hidden] if isinstance(hidden, list) else hidden.relu()
            else:
                weight, bias = params[name + ".weight"], params.get(name + ".bias")
                if isinstance(hidden, list):  # the first linear layer: one product per run of students
                    hidden = self._first_layer(hidden, weight, bias)
                else:
                    hidden = torch.bmm(hidden, weight.transpose(1, 2)) if bias is None else \
                        torch.baddbmm(bias.unsqueeze(1), hidden, weight.transpose(1, 2))
        return hidden

    def _first_layer(self, streams, weight, bias):
        students, out_features, in_features = weight.shape
        # One split into the runs' pieces, not a slice per run: autograd's backward of a slice writes its
        # gradient into a zero tensor the size of the whole weight, once per run, which cost most of a sweep's
        # time when seeds alternate (dozens of runs); the backward of one split is a single concatenation.
        sizes = [(students if stop is None else stop) - start for start, stop, _ in self.runs]
        if sum(sizes) != students or any(start != sum(sizes[:i]) for i, (start, _, _) in enumerate(self.runs)):
            raise ValueError(f"runs must cover the {students} students in order, got {self.runs}")
        if len(sizes) == 1:  # one run (one seed): the weight itself, no split whose backward copies it
            weights, biases = [weight], [bias]
        else:
            weights = weight.split(sizes)
            biases = bias.split(sizes) if bias is not None else [None] * len(sizes)
        outputs = []
        for (_, _, stream), piece, piece_bias in zip(self.runs, weights, biases):
            w = piece.reshape(-1, in_features).t()
            out = streams[stream] @ w if piece_bias is None else torch.addmm(piece_bias.reshape(-1), streams[stream], w)
            outputs.append(out.view(out.shape[0], -1, out_features))
        return (outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)).transpose(0, 1)


def mlp_layers(model):
    """[(kind, name)] for an ``nn.Sequential`` of Flatten (default dims), Linear and ReLU layers, else None."""
    if not isinstance(model, nn.Sequential):
        return None
    layers = []
    for name, module in model.named_children():
        if type(module) is nn.Flatten and module.start_dim == 1 and module.end_dim == -1 and not layers:
            layers.append(("flatten", name))
        elif type(module) is nn.Linear:
            layers.append(("linear", name))
        elif type(module) is nn.ReLU:
            layers.append(("relu", name))
        else:
            return None
    if not layers or layers[-1][0] != "linear":
        return None
    return layers


# ----------------------------------------------------------------------------------------------------------
# Batches and the teacher's logits
# ----------------------------------------------------------------------------------------------------------

class TeacherLogits:
    """The teacher's logits for the whole training split, computed once on first use and then shared (by
    every group of a sweep); None when there is no teacher or the data are augmented (the teacher then runs
    per batch)."""

    def __init__(self, teacher, dataset):
        self.teacher, self.dataset, self._logits = teacher, dataset, None

    def get(self):
        if self.teacher is None or self.dataset.augment:
            return None
        if self._logits is None:
            logits = predict(self.teacher, self.dataset.train_images)
            check_model_logits(logits, self.dataset.num_classes, "teacher")
            self._logits = logits
        return self._logits


class Batches:
    """The batches of one epoch for every student: one shuffling stream per distinct seed.

    seeds: the distinct seeds; streams: the stream of each student. augment: "none", "crop_flip"
    (``kdlab.data.augment_batch``) or "shift" (:func:`shift_batch`), drawn from ``Generator(seed + 1)``.
    Each stream's epoch order is gathered once and sliced (exactly the images an index per step picks).
    Yields (images, targets (N, B), teacher logits (N, B, K) or None): images are one batch (B, ...) when all
    students share a seed, else the list of the streams' batches (``takes_streams``) or (N, B, ...).
    Under torchrun every rank draws the same permutation, padded by wrapping around to a multiple of the
    world size, and takes every world_size-th index with a local batch of batch_size / world_size.
    """

    def __init__(self, dataset, teacher, seeds, streams, device, augment="none", takes_streams=False, rank=0,
                 world_size=1):
        self.dataset, self.teacher, self.seeds, self.device, self.augment = dataset, teacher, seeds, device, augment
        self.stream_of = torch.tensor(streams, device=device)
        self.count, self.takes_streams, self.rank, self.world_size = len(streams), takes_streams, rank, world_size
        self.generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        self.augment_generators = [torch.Generator().manual_seed(seed + 1) for seed in seeds]
        self.cached = None  # the teacher's logits of the training split (TeacherLogits), set by fit

    def epoch(self, batch_size):
        n_train = self.dataset.train_targets.shape[0]
        perms = [torch.randperm(n_train, generator=generator) for generator in self.generators]
        if self.world_size > 1:
            padded = -(-n_train // self.world_size) * self.world_size
            perms = [torch.cat([perm, perm[:padded - n_train]])[self.rank::self.world_size] for perm in perms]
            batch_size = -(-batch_size // self.world_size)
        perms = [perm.to(self.device) for perm in perms]
        images = [self.dataset.train_images[perm] for perm in perms]
        targets = [self.dataset.train_targets[perm] for perm in perms]
        teacher = [self.cached[perm] for perm in perms] if self.cached is not None else None
        for start in range(0, perms[0].shape[0], batch_size):
            stop = start + batch_size
            batch = [self._images(images[s][start:stop], s) for s in range(len(self.seeds))]
            labels = [stream[start:stop] for stream in targets]
            if self.teacher is None:
                teacher_out = None
            elif teacher is not None:
                teacher_out = [stream[start:stop] for stream in teacher]
            else:
                with torch.inference_mode(), autocast(self.device):
                    teacher_out = [self.teacher(_memory_format(x, self.teacher)).float() for x in batch]
                teacher_out = [logits.clone() for logits in teacher_out]  # normal tensors, out of inference mode
            yield self._arrange(batch, labels, teacher_out)

    def _images(self, batch, stream):
        if self.augment == "crop_flip":
            return augment_batch(batch, generator=self.augment_generators[stream])
        if self.augment == "shift":
            return shift_batch(batch, generator=self.augment_generators[stream])
        return batch

    def _arrange(self, batch, labels, teacher_out):
        if len(self.seeds) == 1:
            teacher_n = None if teacher_out is None else teacher_out[0].expand(self.count, -1, -1)
            return batch[0], labels[0].expand(self.count, -1), teacher_n
        images = batch if self.takes_streams else torch.stack(batch)[self.stream_of]
        teacher_n = None if teacher_out is None else torch.stack(teacher_out)[self.stream_of]
        return images, torch.stack(labels)[self.stream_of], teacher_n


def shift_batch(images, generator, max_shift=2):
    """Move every image by a random (dy, dx) in [-max_shift, max_shift]^2, filling with the background.

    Written as padding + a random crop: (B, C, H, W) -> pad by max_shift with each image's corner value
    (the normalised background of a digit) -> gather the (H, W) window starting at the drawn offsets.
    Offsets come from the CPU ``generator``: ``randint(0, 2 * max_shift + 1, (B, 2))``.
    """
    batch, _, height, width = images.shape
    offsets = torch.randint(0, 2 * max_shift + 1, (batch, 2), generator=generator).to(images.device)
    background = images[:, :, :1, :1]
    padded = background.expand(-1, -1, height + 2 * max_shift, width + 2 * max_shift).clone()
    padded[:, :, max_shift:max_shift + height, max_shift:max_shift + width] = images
    rows = (offsets[:, :1] + torch.arange(height, device=images.device))[:, None, :, None]
    cols = (offsets[:, 1:] + torch.arange(width, device=images.device))[:, None, None, :]
    batch_index = torch.arange(batch, device=images.device)[:, None, None, None]
    channel_index = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    return padded[batch_index, channel_index, rows, cols]


# ----------------------------------------------------------------------------------------------------------
# Loss terms of N students: each method's one-student terms, batched by vmap over students of one method
# ----------------------------------------------------------------------------------------------------------

class Losses:
    """``losses(student_logits (N, B, K), teacher_logits (N, B, K) or None, targets (N, B), epoch)`` ->
    (terms, loss): terms maps a term name to an (N,) tensor (NaN for students whose method has no such term,
    for logging only); loss is the (N,) tensor of each student's sum of terms (what it minimises).

    Contiguous students of one method form a set: one vmapped call of its terms (:class:`BatchedTerms`) when
    the set has several students and the method can be batched, else one ``Method`` call per student.
    ``owned[n]``: the names of student n's terms (known after the first call). ``value_checks=False``: the
    losses' checks of tensor values are skipped (a sweep marks a run whose logits became non-finite).
    """

    def __init__(self, methods, device, value_checks=True):
        self.count, self.sets, self.value_checks = len(methods), [], value_checks
        for _, run in itertools.groupby(range(len(methods)), key=lambda n: methods[n].name):
            run = list(run)
            members = methods[run[0]:run[-1] + 1]
            batched = len(members) > 1 and BatchedTerms.supports(members)
            self.sets.append((run[0], run[-1] + 1, BatchedTerms(members, device) if batched else
                              _per_student_terms(members)))
        self.owned = [() for _ in methods]

    def __call__(self, student_logits, teacher_logits, targets, epoch):
        pieces, losses = {}, []
        for start, stop, terms_of in self.sets:
            whole = start == 0 and stop == self.count
            teacher = None if teacher_logits is None else (teacher_logits if whole else teacher_logits[start:stop])
            with contextlib.nullcontext() if self.value_checks else skip_value_checks():
                values = terms_of(*((student_logits, teacher, targets) if whole else
                                    (student_logits[start:stop], teacher, targets[start:stop])), epoch)
            for term, value in values.items():
                pieces.setdefault(term, []).append((start, stop, value.detach()))
            losses.append(sum(values.values()))
            if not self.owned[start]:
                self.owned[start:stop] = [tuple(values)] * (stop - start)
        if len(self.sets) == 1:
            return {term: parts[0][2] for term, parts in pieces.items()}, losses[0]
        terms = {}
        for term, parts in pieces.items():
            filled = torch.full((self.count,), math.nan, device=student_logits.device)
            for start, stop, value in parts:
                filled[start:stop] = value
            terms[term] = filled
        return terms, torch.cat(losses)


class BatchedTerms:
    """The terms of n students of one method from ONE call of its one-student terms function through
    ``torch.func.vmap``: hyper-parameters the students share are passed as they are, those that differ as one
    0-d tensor per student (a float64 column, dimension 0 mapped). Value checks of the losses (temperatures
    > 0, targets in range) are skipped inside: the values were checked when the methods were made."""

    def __init__(self, methods, device):
        hparams = [method.hparams for method in methods]
        self.methods, self.terms, self.record = methods, methods[0].terms, methods[0].record
        self.learned = list(methods[0].learned)  # one tensor per student each call (CTKD's temperature)
        self.varying = [key for key in hparams[0] if key not in self.learned
                        and len({repr(h[key]) for h in hparams}) > 1]
        self.fixed = {key: value for key, value in hparams[0].items() if key not in self.varying + self.learned}
        wide = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
        self.columns = [torch.tensor([float(h[key]) for h in hparams], dtype=wide, device=device)
                        for key in self.varying]
        self._calls = {}

    @staticmethod
    def supports(methods):
        """Batchable methods whose differing hyper-parameters are all numbers (a flag cannot be a tensor)."""
        if not all(method.batchable for method in methods):
            return False
        first = methods[0].hparams
        return all(isinstance(method.hparams[key], (int, float)) and not isinstance(method.hparams[key], bool)
                   for method in methods for key in first if method.hparams[key] != first[key])

    def __call__(self, student_logits, teacher_logits, targets, epoch):
        from torch.func import vmap

        no_teacher = teacher_logits is None
        if no_teacher not in self._calls:
            names = self.varying + self.learned

            def one(student, teacher, target, epoch, *values):
                hparams = {**self.fixed, **dict(zip(names, values))}
                terms = self.terms(student, teacher, target, epoch, **hparams)
                return terms if self.record is None else (terms, self.record(student, teacher, **hparams))

            in_dims = (0, None if no_teacher else 0, 0, None, *([0] * len(names)))
            self._calls[no_teacher] = vmap(one, in_dims=in_dims)
        learned = [torch.stack([method.hparams_at(epoch)[key] for method in self.methods]) for key in self.learned]
        with skip_value_checks():
            terms = self._calls[no_teacher](student_logits, teacher_logits, targets, epoch, *self.columns, *learned)
        if self.record is not None:
            terms, recorded = terms
            for method, temperatures in zip(self.methods, recorded.detach()):
                method.last_temperatures = temperatures
        return {name: value.float() for name, value in terms.items()}


def _per_student_terms(methods):
    def terms_of(student_logits, teacher_logits, targets, epoch):
        results = [method(student_logits[n], None if teacher_logits is None else teacher_logits[n], targets[n], epoch)
                   for n, method in enumerate(methods)]
        return {term: torch.stack([result[term] for result in results]) for term in results[0]}
    return terms_of


# ----------------------------------------------------------------------------------------------------------
# Inference, checkpoints, distributed
# ----------------------------------------------------------------------------------------------------------

def predict(model, images, batch_size=None):
    """Logits of ``model`` (eval mode, ``torch.inference_mode``) for ``images``, computed in chunks.

    The images are moved to the model's device; the logits come back float32 on that device as a normal
    tensor (usable in autograd). The model's train/eval mode is restored afterwards.
    batch_size: images per forward pass (default: 256 on the CPU, 1,024 on a GPU).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(images, torch.Tensor) or images.dim() < 2:
        raise TypeError("images must be a tensor of shape (N, C, H, W)")
    device = _model_device(model)
    if batch_size is None:
        batch_size = eval_batch_size(device)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    was_training = model.training
    model.eval()
    chunks = []
    with torch.inference_mode(), autocast(device):
        for start in range(0, images.shape[0], batch_size):
            chunk = images[start:start + batch_size].to(device)
            chunks.append(model(_memory_format(chunk, model)).float())
    model.train(was_training)
    if not chunks:
        raise ValueError("images must hold at least one image")
    return torch.cat(chunks).clone()  # clone outside inference mode: a normal tensor


def _has_conv(model):
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def _memory_format(images, model):
    """channels_last inputs for convolutional models on CUDA (faster tensor-core kernels)."""
    if images.is_cuda and images.dim() == 4 and _has_conv(model):
        return images.contiguous(memory_format=torch.channels_last)
    return images


def _model_device(model):
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _average_gradients(params, world_size):
    """DDP averages the model's gradients; the method's own parameters (CTKD's tau) are averaged here."""
    import torch.distributed as dist
    for param in params:
        if param.grad is not None:
            dist.all_reduce(param.grad)
            param.grad /= world_size


_CHECKPOINT_KEYS = ("config", "epoch", "history", "model", "method", "optimizer", "scheduler", "generator",
                    "aug_generator", "torch_rng")


def _save_checkpoint(checkpoint, epoch, history, students, method, batches):
    device = batches.device
    atomic_save({"config": checkpoint["config"], "epoch": epoch, "history": history, **students.state_dict(),
                 "method": method.state_dict(), "generator": batches.generators[0].get_state(),
                 "aug_generator": batches.augment_generators[0].get_state(), "torch_rng": torch.get_rng_state(),
                 "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None},
                checkpoint["path"])


def _resume(checkpoint, students, methods, batches, epochs):
    """Load a one-student checkpoint into the loop's state; return ([history], the last finished epoch)."""
    path, device = checkpoint["path"], batches.device
    state = load_checkpoint(path, checkpoint["config"], device)
    try:  # a file of the right run but the wrong structure, keys or shapes: the same clear error
        students.load_state_dict(state)
        methods[0].load_state_dict(state["method"])
        batches.generators[0].set_state(state["generator"])
        batches.augment_generators[0].set_state(state["aug_generator"])
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        history, start_epoch = [dict(row) for row in state["history"]], int(state["epoch"])
        if not 0 <= start_epoch <= epochs or len(history) != start_epoch:
            raise ValueError(f"epoch {start_epoch} with {len(history)} history rows")
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as error:
        detail = " ".join(str(error).split())  # one line (load_state_dict lists its errors on several)
        raise ValueError(f"checkpoint {path} cannot be read ({type(error).__name__}: {detail}); "
                         "delete it or pass resume=False to start again") from None
    return [history], start_epoch


def load_checkpoint(path, config, device):
    """The checkpoint dict at ``path``, refused with a clear error when unreadable or made by another run."""
    def unreadable(why):
        return ValueError(f"checkpoint {path} cannot be read ({why}); delete it or pass resume=False to start again")

    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # noqa: BLE001
        raise unreadable(f"{type(error).__name__}: {error}") from error
    if not isinstance(state, dict):
        raise unreadable(f"it holds a {type(state).__name__}, not a checkpoint dict")
    missing = [key for key in _CHECKPOINT_KEYS if key not in state]
    if missing:
        raise unreadable(f"it lacks {missing}")
    try:
        old = json.loads(state["config"])
        if not isinstance(old, dict):
            raise TypeError("not a dict")
    except (TypeError, ValueError) as error:
        raise unreadable(f"its config is not a JSON dict: {error}") from None
    if state["config"] != config:
        new = json.loads(config)
        differing = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        made_by = [k for k in ("teacher_fingerprint", "dataset_fingerprint") if k in differing]
        if made_by:
            what = " and ".join({"teacher_fingerprint": "another teacher",
                                 "dataset_fingerprint": "other training data"}[k] for k in made_by)
            raise ValueError(f"checkpoint {path} was made with {what} (its fingerprint differs); finishing it "
                             "with these would mix two runs: use another checkpoint_dir or resume=False")
        raise ValueError(f"checkpoint {path} belongs to a different run (differs in {differing}); use "
                         "another checkpoint_dir or resume=False")
    return state
