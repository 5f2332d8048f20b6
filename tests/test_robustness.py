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
