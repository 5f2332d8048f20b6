"""Issue 16: kdlab under bad input and faults. One section per cause; each test failed before its fix."""
from __future__ import annotations

import math
import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import kdlab
from kdlab.data import load_dataset


# ----------------------------------------------------------------------------------------------------------
# Cause 11 (data): the CIFAR reader checks what it reads, naming the file; device="cuda" without CUDA

def _write_cifar10(root: Path, labels=None, data=None, test_labels=None) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for index, file in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        pixels = np.random.default_rng(index).integers(0, 256, size=(3, 3072), dtype=np.uint8)
        rows = [index % 10, (index + 1) % 10, (index + 2) % 10]
        if file == "data_batch_2" and labels is not None:
            rows = labels
        if file == "data_batch_2" and data is not None:
            pixels = data
        if file == "test_batch" and test_labels is not None:
            rows = test_labels
        with open(folder / file, "wb") as handle:
            pickle.dump({"labels": rows, "data": pixels}, handle, protocol=2)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, handle, protocol=2)
    return folder


@pytest.mark.parametrize("labels, test_labels, file, message", [
    ([0, 1, 10], None, "data_batch_2", r"labels must lie in \[0, 10\), got values in \[0, 10\]"),
    ([-1, 1, 2], None, "data_batch_2", r"labels must lie in \[0, 10\), got values in \[-1, 2\]"),
    (None, [0, 1, 12], "test_batch", r"labels must lie in \[0, 10\), got values in \[0, 12\]"),
    (None, [-3, 1, 2], "test_batch", r"labels must lie in \[0, 10\), got values in \[-3, 2\]"),
    ([0, 1], None, "data_batch_2", "one integer label per row"),
])
def test_cifar_reader_checks_label_ranges_of_both_splits_and_names_the_file(tmp_path, labels, test_labels,
                                                                             file, message):
    folder = _write_cifar10(tmp_path, labels=labels, test_labels=test_labels)
    with pytest.raises(ValueError, match=message) as info:
        load_dataset("cifar10", root=tmp_path)
    assert str(folder / file) in str(info.value)


def test_cifar_reader_checks_row_sizes_and_truncation_naming_the_file(tmp_path):
    folder = _write_cifar10(tmp_path, data=np.zeros((3, 3071), dtype=np.uint8))
    with pytest.raises(ValueError, match="rows of 3072 pixels") as info:
        load_dataset("cifar10", root=tmp_path)
    assert str(folder / "data_batch_2") in str(info.value)
    _write_cifar10(tmp_path)  # a sound set again, then one file cut short
    raw = (folder / "data_batch_4").read_bytes()
    (folder / "data_batch_4").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="cannot be read") as info:
        load_dataset("cifar10", root=tmp_path)
    assert str(folder / "data_batch_4") in str(info.value)


def test_a_sound_tiny_cifar_still_loads(tmp_path):
    _write_cifar10(tmp_path)
    data = load_dataset("cifar10", root=tmp_path)
    assert data.train_images.shape == (15, 3, 32, 32) and int(data.test_targets.max()) == 7


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_load_dataset_on_cuda_without_cuda_is_a_value_error():
    with pytest.raises(ValueError, match="CUDA is not available"):
        load_dataset("mnist10k", device="cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        load_dataset("mnist10k", device=torch.device("cuda", 0))


# ----------------------------------------------------------------------------------------------------------
# Cause 9: zero means nothing, not everything

@pytest.mark.parametrize("key, value", [
    ("transfer_size", 0), ("transfer_size", -5), ("transfer_size", 2.5), ("epochs", 0), ("training_epochs", 0),
    ("teacher_epochs", 0), ("pretrain_epochs", 0), ("finetune_epochs", 0), ("top_k", 0), ("batch_sizes", (32, 0)),
    ("batch_sizes", ()), ("early_epoch", 0),
])
def test_study_sizes_reject_zero(key, value):
    from kdlab.studies import study_settings

    with pytest.raises(ValueError, match=key):
        study_settings("mnist10k", **{key: value})
    assert study_settings("mnist10k", transfer_size=None)["transfer_size"] is None


def test_run_study_with_transfer_size_zero_trains_nothing(monkeypatch):
    from kdlab import studies

    def must_not_sweep(*args, **kwargs):
        raise AssertionError("a sweep ran")

    monkeypatch.setattr(studies._StudyContext, "sweep", must_not_sweep)
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    with pytest.raises(ValueError, match="transfer_size must be an int >= 1"):
        studies.run_study("methods", teacher, "mnist10k", transfer_size=0, progress=False)


def test_cli_study_transfer_size_zero_fails_before_the_teacher_trains(tmp_path, monkeypatch, capsys):
    import kdlab.train
    from kdlab.cli import main

    def must_not_train(*args, **kwargs):
        raise AssertionError("the teacher trained")

    monkeypatch.setattr(kdlab.train, "train_teacher", must_not_train)
    with pytest.raises(SystemExit) as info:
        main(["study", "methods", "--transfer-size", "0", "--out", str(tmp_path / "out"), "--no-progress"])
    assert info.value.code == 2
    assert "transfer_size must be an int >= 1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------------------
# Cause 10: study_results validates what it loads; verdicts from fewer than 2 seeds are inconclusive

def _methods_frame(seeds=(0, 1), temperatures=(1.0, 4.0), lrs=(0.01, 0.1), methods=("kd", "ttm"), epochs=2):
    rows, config = [], 0
    for method in methods:
        for temperature in temperatures:
            for lr in lrs:
                for seed in seeds:
                    for epoch in range(1, epochs + 1):
                        rows.append({"study": "methods", "config": config, "method": method,
                                     "temperature": temperature, "lr": lr, "seed": seed, "epoch": epoch,
                                     "epochs": epochs, "test_acc": 50.0 + seed + epoch + temperature})
                    config += 1
    return pd.DataFrame(rows)


def _must_not_run():
    raise AssertionError("the saved file should have been used")


def test_study_results_loads_a_complete_saved_study(tmp_path):
    from kdlab.studies import study_results

    _methods_frame().to_csv(tmp_path / "methods.csv", index=False)
    frame, source = study_results("methods", _must_not_run, directory=tmp_path)
    assert source == str(tmp_path / "methods.csv") and len(frame) == 2 * 2 * 2 * 2 * 2


@pytest.mark.parametrize("damage, message", [
    (lambda f: f.iloc[0:0], "holds no rows"),
    (lambda f: f.drop(columns=["lr"]), r"lacks the column\(s\) \['lr'\]"),
    (lambda f: f.assign(study="training"), "must hold study 'methods' only"),
    (lambda f: f[~((f["method"] == "ttm") & (f["temperature"] == 4.0))], r"lacks temperature\(s\) \[4.0\]"),
    (lambda f: f[~((f["method"] == "kd") & (f["seed"] == 1))], r"lacks seed\(s\) \[1\]"),
    (lambda f: f[~((f["method"] == "kd") & (f["seed"] == 1) & (f["lr"] == 0.1) & (f["temperature"] == 1.0))],
     r"lacks 1 run\(s\) of its grid"),
    (lambda f: f[~((f["config"] == 3) & (f["epoch"] == 2))], r"expected 1..2"),
    (lambda f: f.assign(test_acc=f["test_acc"].astype(object).where(f.index != 5, "garbled")),
     "column 'test_acc' must be numbers"),
])
def test_study_results_says_what_is_wrong_with_a_saved_file(tmp_path, damage, message):
    from kdlab.studies import study_results

    damage(_methods_frame()).to_csv(tmp_path / "methods.csv", index=False)
    with pytest.raises(ValueError, match=message) as info:
        study_results("methods", _must_not_run, directory=tmp_path)
    assert str(tmp_path / "methods.csv") in str(info.value)


def test_study_results_an_empty_file_is_a_value_error(tmp_path):
    from kdlab.studies import study_results

    (tmp_path / "relational.csv").write_text("")
    with pytest.raises(ValueError, match="is empty"):
        study_results("relational", _must_not_run, directory=tmp_path)


def test_verdicts_from_one_seed_are_inconclusive():
    from kdlab import studies

    one_seed = _methods_frame(seeds=(0,), temperatures=(1.0, 4.0, 8.0), lrs=(0.01,), methods=("kd", "ttm", "wttm"))
    # ttm far better than kd at every temperature, wttm far worse: with one seed nothing can be concluded
    one_seed.loc[one_seed["method"] == "ttm", "test_acc"] += 30
    one_seed.loc[one_seed["method"] == "wttm", "test_acc"] -= 30
    assert studies.conclude_methods(one_seed).agrees is None
    entropy = one_seed[one_seed["method"] != "wttm"].assign(
        target=lambda f: f["method"].map({"kd": "label_smoothing", "ttm": "teacher"}))
    assert studies.conclude_entropy(entropy).agrees is None
    relational = one_seed.assign(ablation=lambda f: f["method"].map({"kd": "none", "ttm": "shuffle", "wttm": "flatten"}))
    assert studies.conclude_relational(relational).agrees is None
    shift = one_seed[one_seed["method"] != "wttm"].copy()
    shift.loc[(shift["method"] == "ttm") & (shift["temperature"] == 1.0), "test_acc"] += 100
    assert studies.conclude_best_temperature_shift(shift, "method", "it shifts").agrees is None
    training = one_seed.assign(optimizer=lambda f: f["method"].map({"kd": "sgd", "ttm": "adamw", "wttm": "x"}),
                               batch_size=32)
    training = training[training["optimizer"] != "x"]
    assert studies.conclude_optimizers(training).agrees is None
    assert studies.conclude_training_length(training, early_epoch=1).agrees is None
    # the same data with five seeds is conclusive (the check can fail)
    five = _methods_frame(seeds=(0, 1, 2, 3, 4), temperatures=(1.0, 4.0, 8.0), lrs=(0.01,), methods=("kd", "ttm"))
    five.loc[five["method"] == "ttm", "test_acc"] += 30 + five["seed"] * 0.1
    assert studies.conclude_entropy(five.assign(
        target=lambda f: f["method"].map({"kd": "label_smoothing", "ttm": "teacher"}))).agrees is True


# ----------------------------------------------------------------------------------------------------------
# Cause 11 (browser test): the JupyterLab token is not on the command line

@pytest.mark.slow
def test_jupyterlab_token_is_not_on_the_command_line(tmp_path):
    import urllib.error
    import urllib.request

    from _jupyterlab import JupyterLabServer

    notebooks = tmp_path / "nb"
    notebooks.mkdir()
    server = JupyterLabServer(notebooks, tmp_path / "work", tmp_path / "cache", startup_timeout=120)
    assert server.token not in " ".join(server.command())
    with server:
        cmdline = Path(f"/proc/{server.process.pid}/cmdline").read_bytes().decode(errors="replace")
        assert "jupyter" in cmdline and server.token not in cmdline
        # the server does use the token: with it the API answers, without it the request is refused
        with urllib.request.urlopen(f"{server.url}/api/status?token={server.token}", timeout=10) as response:
            assert response.status == 200
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{server.url}/api/sessions", timeout=10)
        assert info.value.code == 403
    config = tmp_path / "work" / "jupyter" / "config" / "jupyter_server_config.json"
    assert config.stat().st_mode & 0o077 == 0


# ----------------------------------------------------------------------------------------------------------
# Cause 1: non-finite logits

import torch.nn.functional as F  # noqa: E402

from kdlab import losses as L  # noqa: E402

_LOSSES = {
    "kd": lambda z, v, t=4.0: L.kd_loss(z, v, t),
    "ttm": lambda z, v, t=4.0: L.ttm_loss(z, v, t),
    "wttm": lambda z, v, t=4.0: L.wttm_loss(z, v, t),
    "dtkd": lambda z, v, t=4.0: L.dtkd_loss(z, v, t),
    "lskd": lambda z, v, t=2.0: L.lskd_loss(z, v, t),
    "normkd": lambda z, v, t=2.0: L.normkd_loss(z, v, t),
    "dkd": lambda z, v, t=4.0: L.dkd_loss(z, v, torch.tensor([0, 1, 2, 3]), temperature=t),
}


def _pair(seed=0):
    generator = torch.Generator().manual_seed(seed)
    return (3 * torch.randn(4, 6, generator=generator, dtype=torch.float64),
            3 * torch.randn(4, 6, generator=generator, dtype=torch.float64))


@pytest.mark.parametrize("name", list(_LOSSES))
@pytest.mark.parametrize("bad", [math.nan, math.inf])
@pytest.mark.parametrize("which", ["student_logits", "teacher_logits"])
def test_every_loss_refuses_nan_and_plus_inf_naming_the_argument(name, bad, which):
    student, teacher = _pair()
    (student if which == "student_logits" else teacher)[1, 2] = bad
    with pytest.raises(ValueError, match=which):
        _LOSSES[name](student, teacher)


@pytest.mark.parametrize("name", list(_LOSSES))
def test_student_minus_inf_is_refused_and_a_teacher_row_of_minus_inf_too(name):
    student, teacher = _pair()
    student[0, 0] = -math.inf
    with pytest.raises(ValueError, match="student_logits must be finite"):
        _LOSSES[name](student, teacher)
    student, teacher = _pair()
    teacher[2] = -math.inf
    with pytest.raises(ValueError, match="teacher_logits must have at least one finite logit"):
        _LOSSES[name](student, teacher)


@pytest.mark.parametrize("name", list(_LOSSES))
def test_a_minus_inf_teacher_logit_gives_a_finite_loss_and_finite_gradients(name):
    student, teacher = _pair()
    teacher[0, 3] = -math.inf
    teacher[1, 0] = -math.inf  # sample 1's target class (dkd's targets are 0, 1, 2, 3) ... and a non-target
    student.requires_grad_()
    loss = _LOSSES[name](student, teacher)
    assert torch.isfinite(loss)
    loss.backward()
    assert bool(torch.isfinite(student.grad).all())
    # the limit of a very negative finite logit (probability 0 to double precision at these temperatures)
    limit = teacher.clone()
    limit[torch.isneginf(limit)] = -1e5
    if name not in ("lskd", "normkd"):  # those standardise by the spread, which a -1e5 logit changes
        torch.testing.assert_close(loss.detach(), _LOSSES[name](student.detach(), limit), rtol=1e-10, atol=1e-12)


def test_minus_inf_teacher_follows_kl_div_convention():
    student, teacher = _pair(3)
    teacher[:, 4] = -math.inf
    for temperature in (1.0, 4.0, 20.0):
        expected = temperature ** 2 * F.kl_div(torch.log_softmax(student / temperature, -1),
                                               torch.softmax(teacher / temperature, -1), reduction="batchmean")
        torch.testing.assert_close(L.kd_loss(student, teacher, temperature).double(), expected, rtol=1e-12, atol=0)
        expected = F.kl_div(torch.log_softmax(student, -1), torch.softmax(teacher / temperature, -1),
                            reduction="batchmean")
        torch.testing.assert_close(L.ttm_loss(student, teacher, temperature).double(), expected, rtol=1e-12, atol=0)


def test_minus_inf_teacher_with_a_learnable_temperature_has_finite_gradients():
    student, teacher = _pair(4)
    teacher[:, 0] = -math.inf
    temperature = L.LearnableTemperature()
    loss = L.kd_loss(student, teacher, temperature(5))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(temperature.theta.grad)


def test_methods_refuse_non_finite_logits():
    student, teacher = _pair()
    teacher[0, 0] = math.nan
    for name in ("kd", "ttm", "wttm", "dtkd", "lskd", "dkd", "ctkd", "normkd"):
        with pytest.raises(ValueError, match="teacher_logits"):
            kdlab.get_method(name)(student, teacher, torch.tensor([0, 1, 2, 3]), 1)


# ----------------------------------------------------------------------------------------------------------
# Cause 2: huge temperatures: an upper bound (MAX_TEMPERATURE) for T^2 losses and every method

@pytest.mark.parametrize("name", ["kd", "dtkd", "lskd", "normkd", "dkd"])
@pytest.mark.parametrize("temperature", [1.0000001e4, 1e100, 1.4e154, 1e200, 1e300])
def test_t_squared_losses_refuse_temperatures_above_the_bound(name, temperature):
    student, teacher = _pair()
    with pytest.raises(ValueError, match="MAX_TEMPERATURE"):
        _LOSSES[name](student, teacher, temperature)


@pytest.mark.parametrize("name", list(_LOSSES))
def test_every_loss_is_finite_up_to_the_bound(name):
    student, teacher = _pair()
    assert L.MAX_TEMPERATURE == 1e4
    values = [float(_LOSSES[name](student, teacher, t)) for t in (1e2, 1e3, L.MAX_TEMPERATURE)]
    assert all(math.isfinite(v) and v >= 0 for v in values)


def test_kd_at_the_bound_is_consistent_with_its_logit_matching_limit():
    # T^2 KL -> sum_i (d_i - mean d)^2 / (2K) as T -> inf (d = z - v): at T = 1e4 it is still that, to 1e-6
    student, teacher = _pair(1)
    d = student - teacher
    limit = ((d - d.mean(-1, keepdim=True)) ** 2).sum(-1).mean() / (2 * d.shape[1])
    torch.testing.assert_close(L.kd_loss(student, teacher, 1e4).double(), limit, rtol=1e-4, atol=0)


def test_ttm_and_wttm_stay_finite_and_consistent_for_any_finite_temperature():
    student, teacher = _pair()
    for loss in (L.ttm_loss, L.wttm_loss):
        values = [float(loss(student, teacher, t)) for t in (1e6, 1e100, 1e300)]
        assert all(math.isfinite(v) for v in values) and max(values) - min(values) < 1e-4 * max(values)


@pytest.mark.parametrize("name", ["kd", "ttm", "wttm", "dtkd", "lskd", "dkd", "normkd"])
def test_every_method_refuses_a_temperature_above_the_bound(name):
    with pytest.raises(ValueError, match="MAX_TEMPERATURE"):
        kdlab.get_method(name, temperature=1e100)
    assert kdlab.get_method(name, temperature=1e4).hparams["temperature"] == 1e4


# ----------------------------------------------------------------------------------------------------------
# Causes 1 and 3 in training: a NaN teacher, and runs that diverge

@pytest.fixture(scope="module")
def small():
    data = load_dataset("mnist10k")
    teacher, _ = kdlab.train_teacher(data, progress=False)  # the shipped teacher: instant
    return data, data.transfer_set(200), teacher


class _NaNTeacher(torch.nn.Module):
    def __init__(self, teacher, value=math.nan):
        super().__init__()
        self.teacher, self.value = teacher, value

    def forward(self, images):
        logits = self.teacher(images).clone()
        logits[:3, 1] = self.value
        return logits


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_distill_and_sweep_refuse_a_teacher_that_outputs_nan_or_inf(small, value):
    _, transfer, teacher = small
    broken = _NaNTeacher(teacher, value)
    with pytest.raises(ValueError, match="teacher returned non-finite logits"):
        kdlab.distill(broken, transfer, student="mlp16", epochs=1, progress=False)
    with pytest.raises(ValueError, match="teacher returned non-finite logits"):
        kdlab.sweep(broken, transfer, student="mlp16", grid={"temperature": [1, 4]}, epochs=1, progress=False)


def test_distill_accepts_a_teacher_with_minus_inf_logits(small):
    _, transfer, teacher = small
    student, history = kdlab.distill(_NaNTeacher(teacher, -math.inf), transfer, student="mlp16", epochs=1,
                                     progress=False)
    assert bool(history[["kd", "loss"]].notna().all().all()) and math.isfinite(history["loss"].iloc[-1])


def test_training_diverged_is_an_exported_runtime_error():
    assert issubclass(kdlab.TrainingDiverged, RuntimeError) and "TrainingDiverged" in kdlab.train.__all__


def test_distill_and_train_teacher_raise_training_diverged_naming_epoch_and_term(small):
    _, transfer, teacher = small
    with pytest.raises(kdlab.TrainingDiverged, match=r"epoch \d+.*smaller learning rate") as info:
        kdlab.distill(teacher, transfer, student="mlp16", lr=1e6, temperature=1, epochs=5, progress=False)
    assert info.value.epoch >= 1 and info.value.term in ("ce", "kd", "loss", "logits")
    assert "'ce'" in str(info.value) or f"'{info.value.term}'" in str(info.value)
    with pytest.raises(kdlab.TrainingDiverged, match=r"epoch \d+.*smaller learning rate"):
        kdlab.train_teacher(transfer, model="mlp16", lr=1e6, epochs=5, cache=False, pretrained=False, progress=False)


def test_a_diverged_epoch_is_not_checkpointed(small, tmp_path):
    _, transfer, teacher = small
    with pytest.raises(kdlab.TrainingDiverged) as info:
        kdlab.distill(teacher, transfer, student="mlp16", lr=1e6, temperature=1, epochs=5, progress=False,
                      checkpoint_dir=tmp_path)
    if (tmp_path / "checkpoint.pt").exists():
        state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
        assert state["epoch"] < info.value.epoch


def test_sweep_marks_a_diverged_run_and_trains_the_others(small, capsys):
    _, transfer, teacher = small
    with pytest.warns(RuntimeWarning, match=r"diverged at epoch \d+.*smaller learning rate"):
        frame = kdlab.sweep(teacher, transfer, student="mlp16", grid={"lr": [0.01, 1e6], "temperature": [1.0]},
                            epochs=3, progress=False)
    assert frame["diverged"].dtype == bool
    per_run = frame.groupby("lr")["diverged"].agg(["all", "any"])
    assert bool(per_run.loc[1e6, "all"]) and not bool(per_run.loc[0.01, "any"])
    healthy = frame[(frame["lr"] == 0.01) & (frame["epoch"] == 3)]
    assert len(healthy) == 1 and healthy["test_acc"].iloc[0] > 30
    # with the progress bar on, the message is in the progress output
    kdlab.sweep(teacher, transfer, student="mlp16", grid={"lr": [1e6]}, temperature=1.0, epochs=3, progress=True)
    assert "diverged at epoch" in capsys.readouterr().err


def test_sweep_marks_a_diverged_run_of_a_student_it_cannot_batch(small):
    _, transfer, teacher = small
    student = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 32), torch.nn.ReLU(), torch.nn.Dropout(0.1),
                                  torch.nn.Linear(32, 10))  # active dropout: trained one by one (distill)
    with pytest.warns(RuntimeWarning, match="diverged at epoch"):
        frame = kdlab.sweep(teacher, transfer, student=student, grid={"lr": [0.01, 1e6]}, temperature=1.0,
                            epochs=3, progress=False)
    assert set(frame.loc[frame["diverged"], "lr"]) == {1e6}
    assert (frame.loc[~frame["diverged"], "epoch"].max()) == 3


# ----------------------------------------------------------------------------------------------------------
# Cause 4: the CLI checks its output paths before any work and prints no traceback for a user's error

_UNWRITABLE = "/sys/kdlab-robustness-test"  # sysfs: no new entries, even for root (chmod does not stop root)


def _forbid_training(monkeypatch):
    import kdlab.train

    def must_not_train(*args, **kwargs):
        raise AssertionError("something trained before the paths were checked")

    monkeypatch.setattr(kdlab.train, "train_teacher", must_not_train)
    monkeypatch.setattr(kdlab.train, "distill", must_not_train)


@pytest.mark.parametrize("command", [
    ["teacher"], ["distill"], ["sweep", "--temperature", "1"], ["study", "methods"],
    ["choose-temperature", "--temperature", "1", "2"],
])
@pytest.mark.parametrize("where", ["file", "under_file", "unwritable"])
def test_cli_refuses_bad_out_before_any_work(tmp_path, monkeypatch, capsys, command, where):
    from kdlab.cli import main

    _forbid_training(monkeypatch)
    (tmp_path / "a_file").write_text("not a folder")
    out = {"file": tmp_path / "a_file", "under_file": tmp_path / "a_file" / "sub",
           "unwritable": Path(_UNWRITABLE) / "out"}[where]
    with pytest.raises(SystemExit) as info:
        main([*command, "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "--out" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("command", [["teacher"], ["distill"]])
@pytest.mark.parametrize("where", ["file", "unwritable"])
def test_cli_refuses_bad_checkpoint_dir_before_any_work(tmp_path, monkeypatch, capsys, command, where):
    from kdlab.cli import main

    _forbid_training(monkeypatch)
    (tmp_path / "a_file").write_text("not a folder")
    checkpoints = tmp_path / "a_file" if where == "file" else Path(_UNWRITABLE)
    with pytest.raises(SystemExit) as info:
        main([*command, "--checkpoint-dir", str(checkpoints), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "--checkpoint-dir" in err and "Traceback" not in err


def test_python_api_checks_checkpoint_dir_and_out_before_training(small, tmp_path, monkeypatch):
    _, transfer, teacher = small
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ValueError, match="checkpoint_dir .* is an existing file"):
        kdlab.distill(teacher, transfer, student="mlp16", epochs=1, progress=False, checkpoint_dir=tmp_path / "a_file")
    with pytest.raises(ValueError, match="out .* lies under"):
        kdlab.sweep(teacher, transfer, student="mlp16", epochs=1, progress=False, out=tmp_path / "a_file" / "x")


def test_cli_an_os_error_during_the_run_is_one_line_not_a_traceback(tmp_path, monkeypatch, capsys):
    import kdlab.cli
    import kdlab.data

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(kdlab.data, "load_dataset", disk_full)
    with pytest.raises(SystemExit) as info:
        kdlab.cli.main(["teacher", "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "No space left on device" in err and "Traceback" not in err


def test_cli_a_diverged_run_is_one_line_with_advice(tmp_path, capsys):
    from kdlab.cli import main

    with pytest.raises(SystemExit) as info:
        main(["distill", "--student", "mlp16", "--transfer-size", "200", "--epochs", "5", "--lr", "1e6",
              "--temperature", "1", "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert info.value.code == 1 and "diverged at epoch" in err and "smaller learning rate" in err
    assert "Traceback" not in err


def test_cli_huge_temperature_is_an_error_not_a_traceback(tmp_path, capsys):
    from kdlab.cli import main

    with pytest.raises(SystemExit) as info:
        main(["distill", "--temperature", "1e300", "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "MAX_TEMPERATURE" in err and "Traceback" not in err


# ----------------------------------------------------------------------------------------------------------
# Causes 5 and 8: the teacher cache: a write failure is a warning; a changed byte is detected

def _tiny_teacher(transfer, **kwargs):
    return kdlab.train_teacher(transfer, model="mlp16", epochs=1, pretrained=False, progress=False, **kwargs)


@pytest.mark.parametrize("fault", ["read_only", "uncreatable", "directory_in_place", "disk_full"])
def test_a_cache_write_failure_warns_and_returns_the_teacher(small, tmp_path, monkeypatch, fault):
    import kdlab.common

    _, transfer, _ = small
    (tmp_path / "a_file").write_text("x")
    cache = {"read_only": Path(_UNWRITABLE), "uncreatable": tmp_path / "a_file" / "cache",
             "directory_in_place": tmp_path / "cache", "disk_full": tmp_path / "cache"}[fault]
    monkeypatch.setenv("KDLAB_CACHE", str(cache))
    if fault == "directory_in_place":
        model, history = _tiny_teacher(transfer)  # find where the file goes, then put a folder there
        path = Path(history.attrs["cache_path"])
        path.unlink()
        path.mkdir()
        (path / "keep").write_text("x")
    if fault == "disk_full":
        def full(path, write):
            raise OSError(28, "No space left on device")
        monkeypatch.setattr(kdlab.common, "atomic_write", full)
    with pytest.warns(RuntimeWarning, match="could not be stored in the cache"):
        model, history = _tiny_teacher(transfer)
    assert isinstance(model, torch.nn.Module) and history.attrs["source"] == "trained"
    assert kdlab.evaluate(model, transfer) > 15


def test_a_flipped_byte_in_a_cached_teacher_is_detected(small, tmp_path, monkeypatch):
    _, transfer, _ = small
    monkeypatch.setenv("KDLAB_CACHE", str(tmp_path))
    model, history = _tiny_teacher(transfer)
    path = Path(history.attrs["cache_path"])
    weight = model.state_dict()["net.1.weight"] if "net.1.weight" in model.state_dict() else \
        next(iter(model.state_dict().values()))
    raw = bytearray(path.read_bytes())
    at = bytes(raw).find(weight.detach().cpu().contiguous().numpy().tobytes()[:64])
    assert at > 0
    raw[at + 17] ^= 0x20
    path.write_bytes(bytes(raw))
    with pytest.warns(RuntimeWarning, match="checksum"):
        again, history = _tiny_teacher(transfer)
    assert history.attrs["source"] == "trained"  # retrained, not the changed weights
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[name])
    # the retrained teacher was stored again, intact: the next call loads it
    _, history = _tiny_teacher(transfer)
    assert history.attrs["source"] == "cache"


# ----------------------------------------------------------------------------------------------------------
# Cause 6: resume checks what made the checkpoint

def test_resume_with_another_teacher_is_refused(small, tmp_path):
    data, transfer, teacher = small
    kdlab.distill(teacher, transfer, student="mlp16", epochs=2, progress=False, checkpoint_dir=tmp_path)
    other, _ = _tiny_teacher(transfer, cache=False)
    with pytest.raises(ValueError, match="made with another teacher"):
        kdlab.distill(other, transfer, student="mlp16", epochs=2, progress=False, checkpoint_dir=tmp_path,
                      resume=True)
    # the same teacher finishes it
    _, history = kdlab.distill(teacher, transfer, student="mlp16", epochs=2, progress=False,
                               checkpoint_dir=tmp_path, resume=True)
    assert history["epoch"].tolist() == [1, 2]


def test_resume_with_other_data_of_the_same_size_is_refused(small, tmp_path):
    data, transfer, teacher = small
    kdlab.distill(teacher, transfer, student="mlp16", epochs=2, progress=False, checkpoint_dir=tmp_path)
    other = data.transfer_set(200, seed=1)
    with pytest.raises(ValueError, match="made with other training data"):
        kdlab.distill(teacher, other, student="mlp16", epochs=2, progress=False, checkpoint_dir=tmp_path,
                      resume=True)


@pytest.mark.parametrize("damage", ["not_a_dict", "missing_keys", "wrong_shapes", "bad_history", "bad_config"])
def test_malformed_checkpoints_get_the_clear_error(small, tmp_path, damage):
    _, transfer, teacher = small
    kdlab.distill(teacher, transfer, student="mlp16", epochs=2, progress=False, checkpoint_dir=tmp_path)
    path = tmp_path / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    if damage == "not_a_dict":
        state = [1, 2, 3]
    elif damage == "missing_keys":
        del state["optimizer"]
    elif damage == "wrong_shapes":
        name = next(iter(state["model"]))
        state["model"][name] = torch.zeros(3, 3)
    elif damage == "bad_history":
        state["history"] = "garbage"
    else:
        state["config"] = "{not json"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"cannot be read .* delete it or pass resume=False"):
        kdlab.distill(teacher, transfer, student="mlp16", epochs=2, progress=False, checkpoint_dir=tmp_path,
                      resume=True)


# ----------------------------------------------------------------------------------------------------------
# Cause 7: saved sweep groups are verified before reuse

def _one_group(tmp_path, teacher, transfer, epochs=4):
    return kdlab.sweep(teacher, transfer, student="mlp16", grid={"temperature": [1.0, 4.0]}, epochs=epochs,
                       out=tmp_path, progress=False)


@pytest.mark.parametrize("damage", ["cut_short", "missing_epochs", "garbled_cell", "no_record", "extra_row"])
def test_a_damaged_group_file_is_reported_and_retrained(small, tmp_path, damage):
    _, transfer, teacher = small
    first = _one_group(tmp_path, teacher, transfer)
    [path] = list((tmp_path / "groups").glob("*.csv"))
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    if damage == "cut_short":
        text = text[: len(text) * 2 // 3]
    elif damage == "missing_epochs":  # 3 of a run's 4 epochs gone: the file is still a valid CSV
        text = "".join([lines[0], lines[1]] + lines[5:])
    elif damage == "garbled_cell":
        text = "".join([lines[0], lines[1].replace(".", "#", 1)] + lines[2:])
    elif damage == "no_record":
        path.with_suffix(".json").unlink()
    else:
        text = text + lines[-1]
    path.write_text(text)
    with pytest.warns(RuntimeWarning, match="is not reused"):
        again = _one_group(tmp_path, teacher, transfer)
    assert len(again) == len(first) == 8 and again.groupby("config")["epoch"].max().tolist() == [4, 4]
    cols = ["config", "epoch", "test_acc", "loss"]
    pd.testing.assert_frame_equal(again[cols], first[cols])
    import matplotlib

    matplotlib.use("Agg")
    kdlab.plots.plot_sweep(again)
    # repaired: the next run reuses it without a warning
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        _one_group(tmp_path, teacher, transfer)


# ----------------------------------------------------------------------------------------------------------
# Cause 11 (the rest): --resume without --checkpoint-dir; --set conflicts; two grids into one --out; stale *.tmp

def test_resume_without_checkpoint_dir_is_an_error_even_on_a_cache_hit(small, tmp_path, capsys):
    from kdlab.cli import main

    data, _, _ = small
    with pytest.raises(ValueError, match="resume=True needs checkpoint_dir"):
        kdlab.train_teacher(data, resume=True, progress=False)  # the shipped teacher would be a hit
    with pytest.raises(SystemExit) as info:
        main(["teacher", "--resume", "--out", str(tmp_path / "out"), "--no-progress"])
    assert info.value.code == 2 and "--resume needs --checkpoint-dir" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", [["sweep", "--temperature", "1"], ["distill"],
                                     ["choose-temperature", "--temperature", "1", "2"]])
def test_set_may_not_repeat_a_training_option(tmp_path, monkeypatch, capsys, command):
    from kdlab.cli import main

    _forbid_training(monkeypatch)
    with pytest.raises(SystemExit) as info:
        main([*command, "--epochs", "2", "--set", "epochs=1", "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "--set epochs=1 names a training option" in err


@pytest.mark.slow
def test_two_sweeps_with_different_grids_into_one_out_are_refused(tmp_path, capsys):
    from kdlab.cli import main

    out = tmp_path / "sweep"
    base = ["sweep", "--student", "mlp16", "--transfer-size", "200", "--epochs", "1", "--out", str(out),
            "--no-progress"]
    assert main([*base, "--temperature", "1", "4"]) == 0
    before = (out / "sweep.csv").read_text()
    with pytest.raises(SystemExit) as info:
        main([*base, "--temperature", "2", "8"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "already holds a sweep with other options" in err and "--temperature" in err
    assert (out / "sweep.csv").read_text() == before
    assert main([*base, "--temperature", "1", "4"]) == 0  # the same grid again continues (reuses) it


def test_stale_temporaries_of_a_killed_write_are_removed_on_the_next_run(small, tmp_path):
    import subprocess
    import sys

    from kdlab.common import atomic_write_text, remove_stale_temporaries

    _, transfer, teacher = small
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (tmp_path / "groups").mkdir(parents=True)
    stale = [tmp_path / f"sweep.csv.{dead}.abc123.tmp", tmp_path / "groups" / f"x.csv.{dead}.q1w2e3.tmp"]
    live = tmp_path / f"sweep.csv.{os.getpid()}.zzz.tmp"  # a write of a running process: kept
    for path in [*stale, live]:
        path.write_text("half a file")
    kdlab.sweep(teacher, transfer, student="mlp16", grid={"temperature": [1.0]}, epochs=1, out=tmp_path,
                progress=False)
    assert not any(path.exists() for path in stale) and live.exists()
    # and atomic_write names its temporaries so: <name>.<pid>.<random>.tmp
    old = tmp_path / "old.12.tmp"
    old.write_text("x")
    os.utime(old, (0, 0))  # a pid-less temporary of an older kdlab, long stale
    assert old in remove_stale_temporaries(tmp_path)
    atomic_write_text(tmp_path / "a.txt", "done")
    assert (tmp_path / "a.txt").read_text() == "done" and not list(tmp_path.glob("a.txt.*.tmp"))


def test_checkpoint_and_cli_folders_lose_their_stale_temporaries(small, tmp_path):
    import subprocess
    import sys

    _, transfer, teacher = small
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    tmp_path.mkdir(exist_ok=True)
    stale = tmp_path / f"checkpoint.pt.{dead}.k9k9k9.tmp"
    stale.write_bytes(b"half")
    kdlab.distill(teacher, transfer, student="mlp16", epochs=1, progress=False, checkpoint_dir=tmp_path)
    assert not stale.exists() and (tmp_path / "checkpoint.pt").exists()
