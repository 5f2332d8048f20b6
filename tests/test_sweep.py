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
loop_module = importlib.import_module("kdlab.loop")


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
# The batched recipes (one vmapped call of the one-student terms) equal each student's own Method call

@pytest.mark.parametrize("name, overrides", [
    ("ce", [{}, {"ce_weight": 0.5}]),
    ("label_smoothing", [{"smoothing": 0.1}, {"smoothing": 0.3}]),
    ("kd", [{"temperature": 1.0}, {"temperature": 4.0, "kd_weight": 2.0}, {"temperature": 16.0, "warmup": 4}]),
    ("ttm", [{"temperature": 2.0}, {"temperature": 10.0, "beta": 5.0}]),
    ("wttm", [{"temperature": 2.0}, {"temperature": 10.0}]),
    ("lskd", [{"temperature": 1.5}, {"temperature": 3.0}]),
    ("dkd", [{"temperature": 2.0, "warmup": 3}, {"temperature": 4.0, "alpha": 2.0, "beta": 4.0}]),
    ("normkd", [{"temperature": 1.0}, {"temperature": 2.0, "kd_weight": 0.5}]),
])
def test_batched_terms_equal_method_terms(name, overrides):
    generator = torch.Generator().manual_seed(1)
    count, batch, classes = len(overrides), 6, 5
    student_logits = 3 * torch.randn(count, batch, classes, generator=generator)
    teacher_logits = 3 * torch.randn(count, batch, classes, generator=generator)
    targets = torch.randint(0, classes, (count, batch), generator=generator)
    methods = [get_method(name, **o) for o in overrides]
    assert loop_module.BatchedTerms.supports(methods)
    batched = loop_module.BatchedTerms(methods, torch.device("cpu"))
    leaf = student_logits.clone().requires_grad_()
    stacked = batched(leaf, teacher_logits, targets, 2)
    sum(stacked.values()).sum().backward()
    for n, method in enumerate(methods):
        one = student_logits[n].clone().requires_grad_()
        expected = method(one, teacher_logits[n], targets[n], 2)
        sum(expected.values()).backward()
        assert list(stacked) == list(expected)
        for term, value in expected.items():
            torch.testing.assert_close(stacked[term][n], value, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(leaf.grad[n], one.grad, rtol=1e-5, atol=1e-7)


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
# The stacked MLP: each student's logits and gradients equal its own module's

@pytest.mark.parametrize("shared_input", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_stacked_mlp_equals_each_student(shared_input, bias):
    """Flatten, Linear, ReLU, Linear, Linear (a layer without ReLU before it), with and without biases."""
    from torch import nn
    from torch.func import stack_module_state

    torch.manual_seed(0)
    students = [nn.Sequential(nn.Flatten(), nn.Linear(12, 8, bias=bias), nn.ReLU(), nn.Linear(8, 5, bias=bias),
                              nn.Linear(5, 3, bias=bias)) for _ in range(3)]
    params, buffers = stack_module_state(students)
    # Without a shared input: students 0 and 1 see stream 0 (one seed), student 2 sees stream 1.
    streams = [0, 0, 1]
    runs = loop_module.stream_runs(streams)
    assert runs == [(0, 2, 0), (2, 3, 1)]
    model = loop_module.batched_forward(students[0], shared_input, runs)
    assert isinstance(model, loop_module.StackedMLP)
    images = torch.randn(4, 3, 2, 2) if shared_input else [torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)]
    upstream = torch.randn(3, 4, 3)

    logits = model(params, buffers, images)
    (logits * upstream).sum().backward()
    # each student's logits and gradient slice equal its own module's
    for n, student in enumerate(students):
        one = images if shared_input else images[streams[n]]
        torch.testing.assert_close(logits[n].detach(), student(one).detach(), rtol=1e-5, atol=1e-6)
        (student(one) * upstream[n]).sum().backward()
        for name, param in student.named_parameters():
            torch.testing.assert_close(params[name].grad[n], param.grad, rtol=1e-5, atol=1e-6, msg=name)


# ----------------------------------------------------------------------------------------------------------
# A method registered by the user: distill and sweep (batched by vmap) agree on it

def _squared_logit_terms(student_logits, teacher_logits, targets, epoch, temperature, ce_weight, match_weight):
    """CE plus a tempered logit-matching term (ours, for the test): mean_b |z / T - v / T|^2 / K."""
    match = ((student_logits - teacher_logits) / temperature).pow(2).mean(dim=-1).mean()
    return {"ce": ce_weight * kdlab.losses.cross_entropy(student_logits, targets), "match": match_weight * match}


def test_registered_method_is_listed_and_batched_and_equals_distill(transfer, teacher, monkeypatch):
    kdlab.register_method("squared_logits", _squared_logit_terms,
                          {"temperature": 2.0, "ce_weight": 1.0, "match_weight": 0.5})
    try:
        assert kdlab.list_methods()["squared_logits"] == {"temperature": 2.0, "ce_weight": 1.0, "match_weight": 0.5}
        assert get_method("squared_logits").term_names == ("ce", "match")
        calls = _count_group_calls(monkeypatch)
        batched = []
        original = loop_module.BatchedTerms.__call__
        monkeypatch.setattr(loop_module.BatchedTerms, "__call__",
                            lambda self, *args: batched.append(1) or original(self, *args))
        frame, students = kdlab.sweep(teacher, transfer, student="mlp16", method="squared_logits",
                                      grid={"temperature": [1.0, 4.0], "match_weight": [0.5, 2.0]}, epochs=2,
                                      lr=0.05, progress=False, return_students=True)
        assert calls == [4] and batched  # one batched group, its terms from vmapped calls
        final = frame[frame["epoch"] == 2].reset_index(drop=True)
        assert {"ce", "match"} <= set(final.columns)
        for n, row in final.iterrows():
            alone, history = distill(teacher, transfer, student="mlp16", method="squared_logits",
                                     temperature=row["temperature"], match_weight=row["match_weight"], epochs=2,
                                     lr=0.05, progress=False)
            assert _relative_weight_difference(students[int(row["config"])], alone) < 1e-4
            assert row["match"] == pytest.approx(history["match"].iloc[-1], rel=1e-4)
    finally:
        kdlab.unregister_method("squared_logits")
    assert "squared_logits" not in kdlab.list_methods()


def test_register_method_rejects_bad_input():
    with pytest.raises(TypeError, match="terms must be a function"):
        kdlab.register_method("bad", 3, {})
    with pytest.raises(TypeError, match=r"defaults\['temperature'\] must be a finite number"):
        kdlab.register_method("bad", _squared_logit_terms, {"temperature": "2"})
    with pytest.raises(TypeError, match="must return a dict of named scalar"):
        kdlab.register_method("bad", lambda *args, **hp: 1.0, {})
    assert "bad" not in kdlab.list_methods()
