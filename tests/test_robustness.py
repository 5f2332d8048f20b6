"""Issue 16: kdlab under bad input and faults. One section per cause; each test failed before its fix."""
from __future__ import annotations

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
