"""Tests of kdlab.sweep: the batched optimizer, the stacked loss terms, grids, equivalence with distill,
interrupted sweeps, the figure and the CLI."""
import copy
import importlib
import math

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

import kdlab
from kdlab.data import load_dataset
from kdlab.methods import get_method
from kdlab.models import create_model
from kdlab.train import distill

matplotlib.use("Agg")
sweep_module = importlib.import_module("kdlab.sweeps")
StackedOptimizer = sweep_module.StackedOptimizer


# ----------------------------------------------------------------------------------------------------------
# Fixtures: a tiny transfer set and an untrained (but fixed) teacher; equivalence does not need a good one.

@pytest.fixture(scope="module")
def transfer():
    return load_dataset("mnist10k").transfer_set(192)


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(123)
    return create_model("mlp16").eval()


def _max_weight_difference(a, b):
    return max((a.state_dict()[k] - v).abs().max().item() for k, v in b.state_dict().items())


def _relative_weight_difference(a, b):
    return max(((a.state_dict()[k] - v).norm() / v.norm()).item() for k, v in b.state_dict().items())


def _count_group_calls(monkeypatch):
    """Record the size of every group that kdlab.sweep trains as one batched model."""
    calls = []
    original = sweep_module._train_group

    def counting(group, *args):
        calls.append(len(group))
        return original(group, *args)

    monkeypatch.setattr(sweep_module, "_train_group", counting)
    return calls


def test_which_students_are_batched_on_the_cpu_and_on_a_gpu(monkeypatch):
    data = load_dataset("mnist10k").transfer_set(20)
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    batchable = sweep_module._batchable
    assert batchable("mlp64", data, cpu) and batchable("mlp64", data, gpu)
    assert not batchable("small_cnn", data, cpu) and batchable("small_cnn", data, gpu)
    with_dropout = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10), torch.nn.Dropout(0.1))
    inactive_dropout = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10), torch.nn.Dropout(0.0))
    assert not batchable(with_dropout, data, cpu) and not batchable(with_dropout, data, gpu)
    assert batchable(inactive_dropout, data, gpu)
    monkeypatch.setattr(sweep_module, "_VMAP_ON_CPU", True)
    assert batchable("small_cnn", data, cpu) and not batchable(with_dropout, data, cpu)


def test_convolutional_students_train_one_by_one_on_the_cpu(transfer, teacher, monkeypatch):
    calls = _count_group_calls(monkeypatch)
    frame = kdlab.sweep(teacher, transfer, student="small_cnn", grid={"temperature": [2.0, 6.0]}, epochs=1,
                        progress=False)
    assert calls == [] and frame["config"].nunique() == 2  # two distill runs, no batched group


# ----------------------------------------------------------------------------------------------------------
# StackedOptimizer == torch.optim, slice by slice

@pytest.mark.parametrize("kinds, uniform", [(["sgd"] * 3, False), (["adamw"] * 3, False),
                                            (["adamw", "adamw", "sgd", "sgd"], False),
                                            (["sgd"] * 3, True), (["adamw", "sgd", "sgd"], True)])
def test_stacked_optimizer_matches_torch_optim(kinds, uniform):
    """Per-student hyper-parameters; and shared ones, where SGD takes the fused kernel."""
    generator = torch.Generator().manual_seed(0)
    count = len(kinds)
    lrs = [0.1, 0.01, 0.05, 0.2][:count] if not uniform else [0.05] * count
    momenta = [0.9, 0.0, 0.5, 0.9][:count] if not uniform else [0.9] * count
    decays = [0.0, 5e-4, 1e-2, 0.0][:count] if not uniform else [5e-4] * count
    shapes = [(count, 5, 3), (count, 7)]
    stacked = [torch.randn(*shape, generator=generator) for shape in shapes]
    singles = [[tensor[n].clone().requires_grad_() for tensor in stacked] for n in range(count)]
    references = []
    for n, kind in enumerate(kinds):
        if kind == "sgd":
            references.append(torch.optim.SGD(singles[n], lr=lrs[n], momentum=momenta[n], weight_decay=decays[n]))
        else:
            references.append(torch.optim.AdamW(singles[n], lr=lrs[n], weight_decay=decays[n]))
    params = [tensor.clone().requires_grad_() for tensor in stacked]
    optimizer = StackedOptimizer(params, kinds, lrs, momenta, decays)
    fused_calls = []
    if uniform and sweep_module._FUSED_SGD is not None:
        original = sweep_module.StackedOptimizer._fused_sgd
        def recording(start, stop):
            fused_calls.append(original(optimizer, start, stop))
            return fused_calls[-1]

        optimizer._fused_sgd = recording
    for step in range(6):
        if step == 3:  # a schedule changes the learning rates between steps
            lrs = [lr * 0.3 for lr in lrs]
            optimizer.set_lr(lrs)
            for reference, lr in zip(references, lrs):
                reference.param_groups[0]["lr"] = lr
        grads = [torch.randn(*shape, generator=generator) for shape in shapes]
        for param, grad in zip(params, grads):
            param.grad = grad.clone()
        optimizer.step()
        for n, reference in enumerate(references):
            for single, grad in zip(singles[n], grads):
                single.grad = grad[n].clone()
            reference.step()
    for n in range(count):
        for param, single in zip(params, singles[n]):
            torch.testing.assert_close(param[n].detach(), single.detach(), rtol=1e-6, atol=1e-6)
    if uniform and sweep_module._FUSED_SGD is not None:
        assert fused_calls == [True] * 6  # one SGD range, six steps, every one fused


def test_stacked_optimizer_falls_back_when_the_fused_kernel_is_refused(monkeypatch):
    """An older torch without the CPU kernel: the formulas take over and the result is the same."""
    def refuse(*args, **kwargs):
        raise RuntimeError("_fused_sgd_ is not implemented for CPU")

    monkeypatch.setattr(sweep_module, "_FUSED_SGD", refuse)
    generator = torch.Generator().manual_seed(4)
    start = torch.randn(2, 3, generator=generator)
    grads = [torch.randn(2, 3, generator=generator) for _ in range(3)]
    param = start.clone().requires_grad_()
    optimizer = StackedOptimizer([param], ["sgd", "sgd"], 0.1, 0.9, 1e-3)
    reference = start.clone().requires_grad_()
    torch_optimizer = torch.optim.SGD([reference], lr=0.1, momentum=0.9, weight_decay=1e-3)
    for grad in grads:
        param.grad, reference.grad = grad.clone(), grad.clone()
        optimizer.step()
        torch_optimizer.step()
    assert sweep_module._FUSED_SGD is None  # refused once, then not asked again
    torch.testing.assert_close(param.detach(), reference.detach(), rtol=1e-6, atol=1e-7)


def test_stacked_optimizer_rejects_bad_input():
    params = [torch.zeros(2, 3, requires_grad=True)]
    with pytest.raises(ValueError, match="kinds"):
        StackedOptimizer(params, ["sgd", "adam"], 0.1, 0.9, 0.0)
    with pytest.raises(ValueError, match="contiguous"):
        StackedOptimizer([torch.zeros(3, 2)], ["sgd", "adamw", "sgd"], 0.1, 0.9, 0.0)
    with pytest.raises(ValueError, match="lr"):
        StackedOptimizer(params, ["sgd", "sgd"], [0.1, -1.0], 0.9, 0.0)
    with pytest.raises(TypeError, match="params"):
        StackedOptimizer([], [], 0.1, 0.9, 0.0)


# ----------------------------------------------------------------------------------------------------------
# The stacked recipes equal each student's own Method call

@pytest.mark.parametrize("name, overrides", [
    ("ce", [{}, {"ce_weight": 0.5}]),
    ("label_smoothing", [{"smoothing": 0.1}, {"smoothing": 0.3}]),
    ("kd", [{"temperature": 1.0}, {"temperature": 4.0, "kd_weight": 2.0}, {"temperature": 16.0, "warmup": 4}]),
    ("ttm", [{"temperature": 2.0}, {"temperature": 10.0, "beta": 5.0}]),
    ("wttm", [{"temperature": 2.0}, {"temperature": 10.0}]),
    ("lskd", [{"temperature": 1.5}, {"temperature": 3.0}]),
    ("dkd", [{"temperature": 2.0, "warmup": 3}, {"temperature": 4.0, "alpha": 2.0, "beta": 4.0}]),
])
def test_stacked_terms_equal_method_terms(name, overrides):
    generator = torch.Generator().manual_seed(1)
    count, batch, classes = len(overrides), 6, 5
    student_logits = 3 * torch.randn(count, batch, classes, generator=generator)
    teacher_logits = 3 * torch.randn(count, batch, classes, generator=generator)
    targets = torch.randint(0, classes, (count, batch), generator=generator)
    methods = [get_method(name, **o) for o in overrides]
    stacked = sweep_module._stacked_terms(methods, student_logits, teacher_logits, targets, epoch=2)
    for n, method in enumerate(methods):
        expected = method(student_logits[n], teacher_logits[n], targets[n], 2)
        assert list(stacked) == list(expected)
        for term, value in expected.items():
            torch.testing.assert_close(stacked[term][n], value, rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------------------------------------
# Grids

def test_expand_grid_product_and_methods_without_temperature():
    configs = kdlab.expand_grid({"method": ["kd", "ce"], "temperature": [1, 4], "seed": [0, 1]}, lr=0.1)
    assert len(configs) == 2 * 2 + 2  # kd: 2 temperatures x 2 seeds; ce: once per seed
    assert all(c["lr"] == 0.1 for c in configs)
    assert [c for c in configs if c["method"] == "ce"] == [{"method": "ce", "lr": 0.1, "seed": 0},
                                                           {"method": "ce", "lr": 0.1, "seed": 1}]
    assert kdlab.expand_grid() == [{"method": "kd"}]


@pytest.mark.parametrize("grid, error, match", [
    ([1, 2], TypeError, "grid must be a dict"),
    ({"temperature": 4}, TypeError, "grid\\['temperature'\\] must be a list"),
    ({"temperature": []}, ValueError, "at least one value"),
    ({"seed": [0]}, ValueError, "both in grid and as a keyword"),
])
def test_expand_grid_rejects_bad_grids(grid, error, match):
    with pytest.raises(error, match=match):
        kdlab.expand_grid(grid, seed=0)


def test_sweep_rejects_bad_arguments(transfer, teacher):
    with pytest.raises(ValueError, match="unknown keyword"):
        kdlab.sweep(teacher, transfer, grid={"tau": [1.0]}, epochs=1, progress=False)
    with pytest.raises(ValueError, match="teacher must be given"):
        kdlab.sweep(None, transfer, grid={"temperature": [1.0]}, epochs=1, progress=False)
    with pytest.raises(TypeError, match="progress"):
        kdlab.sweep(teacher, transfer, epochs=1, progress="no")
    with pytest.raises(ValueError, match="seed"):
        kdlab.sweep(teacher, transfer, grid={"seed": [-1]}, epochs=1, progress=False)
    with pytest.raises(ValueError, match="optimizer"):
        kdlab.sweep(teacher, transfer, grid={"optimizer": ["adam"]}, epochs=1, progress=False)


# ----------------------------------------------------------------------------------------------------------
# Equivalence with kdlab.distill

@pytest.mark.slow
def test_sweep_students_equal_distill(transfer, teacher):
    """2 methods x 2 optimizers x 2 temperatures x 2 seeds in one batched group, each against distill."""
    grid = {"method": ["kd", "ttm"], "optimizer": ["sgd", "adamw"], "temperature": [2.0, 8.0], "seed": [0, 1]}
    frame, students = kdlab.sweep(teacher, transfer, student="mlp64", grid=grid, epochs=2, lr=0.02,
                                  schedule="cosine", weight_decay=1e-3, progress=False, return_students=True)
    assert len(frame) == 16 * 2 and frame["config"].nunique() == 16
    for config, rows in frame.groupby("config"):
        first = rows.iloc[0]
        student, history = distill(teacher, transfer, student="mlp64", method=first["method"],
                                   temperature=first["temperature"], epochs=2, seed=int(first["seed"]),
                                   optimizer=first["optimizer"], lr=0.02, schedule="cosine", weight_decay=1e-3,
                                   progress=False)
        if first["optimizer"] == "sgd":
            assert _max_weight_difference(students[config], student) < 1e-5
        else:
            # Adam divides by sqrt(v) + 1e-8: where a gradient entry is ~0 up to rounding, float noise of
            # 1e-9 (another summation order in the batched matmul) becomes a step of up to lr in that one
            # entry. The weights agree to 1e-4 in norm and the students compute the same function.
            assert _relative_weight_difference(students[config], student) < 1e-4
        with torch.no_grad():
            images = transfer.test_images[:256]
            torch.testing.assert_close(students[config](images), student(images), rtol=0, atol=1e-3)
        columns = ["ce", first["method"], "loss", "train_acc"]
        np.testing.assert_allclose(rows[columns].to_numpy(float), history[columns].to_numpy(float),
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(rows["test_acc"], history["test_acc"], atol=0.1)  # one image in 2000 = 0.05
        np.testing.assert_allclose(rows["epoch_lr"], history["lr"], rtol=1e-12)


@pytest.mark.slow
def test_sweep_learnable_and_dynamic_temperatures_equal_distill(transfer, teacher):
    """CTKD (a learnable temperature in its own optimizer) and DTKD (per-sample temperatures) call their
    Method per student inside the batched group; ce has no temperature and runs once."""
    grid = {"method": ["ctkd", "dtkd", "ce"], "temperature": [3.0, 6.0]}
    frame, students = kdlab.sweep(teacher, transfer, grid=grid, epochs=2, lr=0.02, progress=False,
                                  return_students=True)
    assert sorted(frame.groupby("config")["method"].first()) == ["ce", "ctkd", "ctkd", "dtkd", "dtkd"]
    assert frame.loc[frame["method"] == "ce", "temperature"].isna().all()
    assert frame.loc[frame["method"] == "ce", "kd"].isna().all()
    for config, rows in frame.groupby("config"):
        first = rows.iloc[0]
        temperature = None if math.isnan(first["temperature"]) else first["temperature"]
        student, history = distill(teacher, transfer, method=first["method"], temperature=temperature,
                                   epochs=2, lr=0.02, progress=False)
        assert _max_weight_difference(students[config], student) < 1e-5
        np.testing.assert_allclose(rows["loss"], history["loss"], rtol=1e-5)
        if first["method"] in ("ctkd", "dtkd"):
            np.testing.assert_allclose(rows["temperature_mean"], history["temperature_mean"], rtol=1e-5)
            np.testing.assert_allclose(rows["temperature_max"], history["temperature_max"], rtol=1e-5)


@pytest.mark.slow
def test_teacherless_and_mixed_recipes_on_the_fast_path_equal_distill(transfer, teacher):
    """Label smoothing (two epsilons) without a teacher; then KD, WTTM and CE sharing one group: every
    recipe of _FUSED stitched into one batched step, each student against distill."""
    frame, students = kdlab.sweep(None, transfer, method="label_smoothing", grid={"smoothing": [0.1, 0.3]},
                                  epochs=2, lr=0.05, progress=False, return_students=True)
    mixed, mixed_students = kdlab.sweep(teacher, transfer, grid={"method": ["kd", "wttm", "ce"],
                                                                 "temperature": [2.0, 5.0]},
                                        epochs=2, lr=0.05, progress=False, return_students=True)
    for table, trained, teacher_model in ((frame, students, None), (mixed, mixed_students, teacher)):
        for config, rows in table.groupby("config"):
            first = rows.iloc[0]
            extra = {}
            if first["method"] == "label_smoothing":
                extra["smoothing"] = first["smoothing"]
            if not math.isnan(first["temperature"]):
                extra["temperature"] = first["temperature"]
            student, history = distill(teacher_model, transfer, method=first["method"], epochs=2, lr=0.05,
                                       progress=False, **extra)
            assert _max_weight_difference(trained[config], student) < 1e-5
            np.testing.assert_allclose(rows["loss"], history["loss"], rtol=1e-5)
    assert sorted(frame.groupby("config")["smoothing"].first()) == [0.1, 0.3]
    assert sorted(mixed.groupby("config")["method"].first()) == ["ce", "kd", "kd", "wttm", "wttm"]


@pytest.mark.slow
def test_sweep_groups_by_batch_size_and_falls_back_for_dropout(transfer, teacher):
    calls = []
    original = sweep_module._train_group

    def counting(group, *args):
        calls.append(len(group))
        return original(group, *args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sweep_module, "_train_group", counting)
        frame = kdlab.sweep(teacher, transfer, grid={"batch_size": [32, 64], "temperature": [1.0, 4.0]},
                            epochs=1, progress=False)
        assert sorted(calls) == [2, 2]  # two groups, one per batch size
        torch.manual_seed(5)
        with_dropout = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 16), torch.nn.Dropout(0.2),
                                           torch.nn.ReLU(), torch.nn.Linear(16, 10))
        torch.manual_seed(6)  # dropout draws from the global RNG, in distill too
        dropped, students = kdlab.sweep(teacher, transfer, student=with_dropout, grid={"temperature": [2.0]},
                                        epochs=1, progress=False, return_students=True)
        assert sorted(calls) == [2, 2]  # not batched: trained by distill
    assert set(frame["batch_size"]) == {32, 64}
    torch.manual_seed(6)
    reference, history = distill(teacher, transfer, student=with_dropout, temperature=2.0, epochs=1,
                                 progress=False)
    assert _max_weight_difference(students[0], reference) == 0.0
    assert dropped["loss"].tolist() == pytest.approx(history["loss"].tolist(), rel=1e-12)


@pytest.mark.slow
def test_batchnorm_students_are_batched_and_equal_distill(transfer, teacher, monkeypatch):
    """BatchNorm: each student normalises by its own batch statistics and keeps its own running statistics
    (vmap over functional_call: the GPU path, forced on the CPU here); weights, running mean and variance
    match distill's."""
    torch.manual_seed(7)
    student = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                  torch.nn.MaxPool2d(4), torch.nn.Flatten(), torch.nn.Linear(4 * 7 * 7, 10))
    monkeypatch.setattr(sweep_module, "_VMAP_ON_CPU", True)
    calls = _count_group_calls(monkeypatch)
    frame, students = kdlab.sweep(teacher, transfer, student=student, grid={"temperature": [2.0, 8.0]},
                                  epochs=2, lr=0.05, progress=False, return_students=True)
    assert calls == [2]  # one batched group
    for config, rows in frame.groupby("config"):
        reference, history = distill(teacher, transfer, student=copy.deepcopy(student),
                                     temperature=rows.iloc[0]["temperature"], epochs=2, lr=0.05, progress=False)
        assert _max_weight_difference(students[config], reference) < 1e-5  # state_dict: running stats too
        assert students[config][1].running_var.sub(1).abs().max() > 1e-3  # the statistics did move
        np.testing.assert_allclose(rows["loss"], history["loss"], rtol=1e-5)
        np.testing.assert_allclose(rows["test_acc"], history["test_acc"], atol=0.1)


@pytest.mark.slow
def test_convolutional_students_on_augmented_data_equal_distill(transfer, teacher, monkeypatch):
    """small_cnn runs through vmap(functional_call) (the GPU path, forced on the CPU here); with
    dataset.augment the batches are augmented with each seed's own generator and the teacher runs on every
    batch, as in distill."""
    import dataclasses

    monkeypatch.setattr(sweep_module, "_VMAP_ON_CPU", True)
    calls = _count_group_calls(monkeypatch)
    augmented = dataclasses.replace(transfer, augment=True)
    grid = {"temperature": [2.0, 6.0], "seed": [0, 3]}
    frame, students = kdlab.sweep(teacher, augmented, student="small_cnn", grid=grid, epochs=1, lr=0.02,
                                  progress=False, return_students=True)
    assert calls == [4]  # one batched group
    for config, rows in frame.groupby("config"):
        first = rows.iloc[0]
        student, history = distill(teacher, augmented, student="small_cnn", temperature=first["temperature"],
                                   seed=int(first["seed"]), epochs=1, lr=0.02, progress=False)
        assert _max_weight_difference(students[config], student) < 1e-5
        np.testing.assert_allclose(rows["loss"], history["loss"], rtol=1e-5)
        np.testing.assert_allclose(rows["test_acc"], history["test_acc"], atol=0.1)


# ----------------------------------------------------------------------------------------------------------
# Output folder: atomic group files, rerun skips finished groups

@pytest.mark.slow
def test_interrupted_sweep_resumes_without_retraining(transfer, teacher, tmp_path):
    grid = {"batch_size": [48, 64], "temperature": [1.0, 4.0]}  # two groups
    calls = []
    original = sweep_module._train_group

    def interrupt_second(group, *args):
        calls.append(tuple(c["settings"]["batch_size"] for c in group))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(group, *args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sweep_module, "_train_group", interrupt_second)
        with pytest.raises(KeyboardInterrupt):
            kdlab.sweep(teacher, transfer, grid=grid, epochs=1, out=tmp_path, progress=False)
    assert len(list((tmp_path / "groups").glob("*.csv"))) == 1
    assert not (tmp_path / "sweep.csv").exists()
    assert not list(tmp_path.rglob("*.tmp"))
    first_batch = calls[0][0]

    calls.clear()

    def counting(group, *args):
        calls.append(tuple(c["settings"]["batch_size"] for c in group))
        return original(group, *args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sweep_module, "_train_group", counting)
        resumed = kdlab.sweep(teacher, transfer, grid=grid, epochs=1, out=tmp_path, progress=False)
        assert len(calls) == 1 and calls[0][0] != first_batch  # only the unfinished group trained
        calls.clear()
        again = kdlab.sweep(teacher, transfer, grid=grid, epochs=1, out=tmp_path, progress=False)
        assert calls == []  # everything finished: nothing trained
    pd.testing.assert_frame_equal(resumed, again)
    fresh = kdlab.sweep(teacher, transfer, grid=grid, epochs=1, progress=False)
    pd.testing.assert_frame_equal(resumed.drop(columns="seconds"), fresh.drop(columns="seconds"),
                                  check_exact=False, rtol=1e-6)
    on_disk = pd.read_csv(tmp_path / "sweep.csv")
    pd.testing.assert_frame_equal(on_disk, again)


# ----------------------------------------------------------------------------------------------------------
# Figure and CLI

def _fake_sweep_table():
    rows = []
    for method in ("kd", "ttm"):
        for temperature in (1.0, 2.0, 4.0, 8.0):
            for seed in (0, 1, 2):
                rows.append({"config": len(rows), "method": method, "temperature": temperature, "seed": seed,
                             "epochs": 2, "epoch": 2, "test_acc": 80 + temperature + seed})
                rows.append({**rows[-1], "epoch": 1, "test_acc": 10.0})
    for seed in (0, 1):
        rows.append({"config": len(rows), "method": "ce", "temperature": math.nan, "seed": seed, "epochs": 2,
                     "epoch": 2, "test_acc": 85.0 + seed})
    return pd.DataFrame(rows)


def test_plot_sweep_draws_mean_and_sd_over_seeds_on_log_axis():
    import matplotlib.pyplot as plt

    figure = kdlab.plots.plot_sweep(_fake_sweep_table())
    ax = figure.axes[0]
    assert ax.get_xscale() == "log"
    legend = {line.get_label(): line.get_color() for line in ax.get_lines() if not line.get_label().startswith("_")}
    assert set(legend) == {"kd", "ttm", "ce (no temperature)"}
    means = {line.get_color(): line for line in ax.get_lines() if line.get_label().startswith("_child")}
    for method in ("kd", "ttm"):  # the mean over seeds of the last epoch, at every temperature
        np.testing.assert_allclose(means[legend[method]].get_xdata(), [1, 2, 4, 8])
        np.testing.assert_allclose(means[legend[method]].get_ydata(), [82, 83, 85, 89])
    bars = np.concatenate([np.asarray(segment) for collection in ax.collections
                           for segment in collection.get_segments()])
    # error bars of +-1 standard deviation over the seeds (80 + T + {0, 1, 2}: sd 1)
    assert {tuple(row) for row in bars.round(6)} >= {(1.0, 81.0), (1.0, 83.0), (8.0, 88.0), (8.0, 90.0)}
    ce_line = [line for line in ax.get_lines() if line.get_label() == "ce (no temperature)"][0]
    np.testing.assert_allclose(ce_line.get_ydata(), [85.5, 85.5])
    plt.close(figure)
    with pytest.raises(ValueError, match="'accuracy' column"):
        kdlab.plots.plot_sweep(_fake_sweep_table(), y="accuracy")
    with pytest.raises(TypeError, match="DataFrame"):
        kdlab.plots.plot_sweep([1, 2])


@pytest.mark.slow
def test_cli_sweep_writes_csv_and_png(tmp_path, monkeypatch):
    from kdlab.cli import main

    monkeypatch.setenv("KDLAB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "sweep1"
    code = main(["sweep", "--method", "kd", "ttm", "--temperature", "1", "4", "--seed", "0", "1",
                 "--teacher", "mlp16", "--teacher-epochs", "1", "--transfer-size", "128", "--epochs", "1", "--no-progress",
                 "--out", str(out)])
    assert code == 0
    table = pd.read_csv(out / "sweep.csv")
    assert table["config"].nunique() == 8 and set(table["method"]) == {"kd", "ttm"}
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import json

    import kdlab

    config = json.loads((out / "config.json").read_text())
    assert config["versions"]["kdlab"] == kdlab.__version__ and config["threads"] >= 1
    assert config["used"]["grid"]["temperature"] == [1.0, 4.0] and config["used"]["transfer_size"] == 128
    assert config["used"]["teacher"]["settings"]["epochs"] == 1


# ----------------------------------------------------------------------------------------------------------
# The CPU fast path: closed-form loss gradients and the MLP's hand-written backward equal autograd

@pytest.mark.parametrize("name, overrides", [
    ("ce", [{}, {"ce_weight": 0.5}]),
    ("label_smoothing", [{"smoothing": 0.1}, {"smoothing": 0.3, "ce_weight": 2.0}]),
    ("kd", [{"temperature": 1.0}, {"temperature": 4.0, "kd_weight": 2.0}, {"temperature": 16.0, "warmup": 4}]),
    ("ttm", [{"temperature": 2.0}, {"temperature": 10.0, "beta": 5.0, "warmup": 3}]),
    ("wttm", [{"temperature": 1.0}, {"temperature": 10.0, "beta": 0.5}]),
])
def test_fused_terms_and_gradient_equal_autograd(name, overrides):
    generator = torch.Generator().manual_seed(2)
    count, batch, classes = len(overrides), 7, 6
    student_logits = (4 * torch.randn(count, batch, classes, generator=generator, dtype=torch.float64))
    teacher_logits = 4 * torch.randn(count, batch, classes, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, classes, (count, batch), generator=generator)
    methods = [get_method(name, **o) for o in overrides]
    for epoch in (1, 2, 6):  # inside and after the warm-ups
        leaf = student_logits.clone().requires_grad_()
        expected = sweep_module._stacked_terms(methods, leaf, teacher_logits, targets, epoch)
        sum(expected.values()).sum().backward()
        terms, loss, grad = sweep_module._fused_terms(methods, student_logits.float(), teacher_logits.float(),
                                                      targets, epoch, cache={})
        assert list(terms) == list(expected)
        for term, value in expected.items():
            torch.testing.assert_close(terms[term].double(), value.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(loss.double(), sum(expected.values()).detach(), rtol=1e-5, atol=1e-6)
        assert grad.shape == student_logits.shape and grad.dtype == torch.float32
        torch.testing.assert_close(grad.double(), leaf.grad, rtol=1e-4, atol=1e-7)


def test_fused_gradient_matches_finite_differences_in_float64():
    """The closed forms themselves, independently of autograd: central differences of the fused loss."""
    generator = torch.Generator().manual_seed(3)
    z = 2 * torch.randn(2, 3, 4, generator=generator, dtype=torch.float64)
    v = 2 * torch.randn(2, 3, 4, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, 4, (2, 3), generator=generator)
    for name, overrides in [("kd", {"temperature": 3.0}), ("wttm", {"temperature": 5.0}),
                            ("label_smoothing", {"smoothing": 0.2})]:
        methods = [get_method(name, **overrides)] * 2
        cache = {}

        def total(logits):  # the loss in float64 (the fused terms are returned in float32)
            return sum(sweep_module._stacked_terms(methods, logits, v, targets, 1).values()).sum()

        _, _, grad = sweep_module._fused_terms(methods, z, v, targets, 1, cache)
        step = 1e-6
        numeric = torch.zeros_like(z)
        for index in np.ndindex(*z.shape):
            plus, minus = z.clone(), z.clone()
            plus[index] += step
            minus[index] -= step
            numeric[index] = (total(plus) - total(minus)) / (2 * step)
        torch.testing.assert_close(grad.double(), numeric, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("shared_input", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_stacked_mlp_backward_equals_autograd(shared_input, bias):
    """Flatten, Linear, ReLU, Linear, Linear (a layer without ReLU before it), with and without biases."""
    from torch import nn
    from torch.func import stack_module_state

    torch.manual_seed(0)
    students = [nn.Sequential(nn.Flatten(), nn.Linear(12, 8, bias=bias), nn.ReLU(), nn.Linear(8, 5, bias=bias),
                              nn.Linear(5, 3, bias=bias)) for _ in range(3)]
    params, buffers = stack_module_state(students)
    # Without a shared input: students 0 and 1 see stream 0 (one seed), student 2 sees stream 1.
    streams = [0, 0, 1]
    runs = sweep_module._stream_runs(streams)
    assert runs == [(0, 2, 0), (2, 3, 1)]
    model = sweep_module._batched_forward(students[0], shared_input, runs)
    assert isinstance(model, sweep_module._StackedMLP)
    images = torch.randn(4, 3, 2, 2) if shared_input else [torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)]
    upstream = torch.randn(3, 4, 3)

    logits = model(params, buffers, images)
    (logits * upstream).sum().backward()
    expected = {name: param.grad.clone() for name, param in params.items()}
    for param in params.values():
        param.grad = None

    manual_logits = model.forward_train(params, images)
    torch.testing.assert_close(manual_logits, logits.detach())
    model.backward(params, upstream)
    for name, param in params.items():
        torch.testing.assert_close(param.grad, expected[name], rtol=1e-5, atol=1e-6, msg=name)
    # and each student's slice equals its own module's autograd gradient
    for n, student in enumerate(students):
        one = images if shared_input else images[streams[n]]
        (student(one) * upstream[n]).sum().backward()
        for name, param in student.named_parameters():
            torch.testing.assert_close(params[name].grad[n], param.grad, rtol=1e-5, atol=1e-6, msg=name)
    with pytest.raises(RuntimeError, match="forward_train"):
        model.backward(params, upstream)
