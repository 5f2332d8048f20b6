"""Datasets as tensors that live on the training device.

A :class:`Dataset` is four tensors (train/test images and targets) plus a few facts about them.
Images are float32 ``(N, C, H, W)``, already normalised with the dataset's mean and std, so a
training loop is just ``images[perm[i:i + batch_size]]`` with no DataLoader and no per-sample
Python work.

Names understood by :func:`load_dataset`:

``"mnist10k"`` (default, embedded)
    10,000 real MNIST digits shipped inside the package (``kdlab/_data/mnist10k.npz``, 1.6 MB,
    see ``kdlab/_data/README.md`` for provenance and licence). Fixed stratified split: 8,000
    train / 2,000 test. Works offline, on Binder, everywhere.
``"mnist"``, ``"cifar10"``, ``"cifar100"``
    The full datasets, read from ``root`` (default ``$KDLAB_DATA`` or ``~/.cache/kdlab/data``).
    They are downloaded (through torchvision) only when you pass ``download=True``.

Distilling on less data than the teacher saw, or without some classes (Hinton et al. 2015, §3's
"omitted digit 3" experiment), is :meth:`Dataset.transfer_set`.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import pickle
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from kdlab.common import resolve_device

__all__ = ["Dataset", "load_dataset", "augment_batch", "DATASET_NAMES"]

DATASET_NAMES = ("mnist10k", "mnist", "cifar10", "cifar100")

_EMBEDDED_FILE = Path(__file__).resolve().parent / "_data" / "mnist10k.npz"

# Per-channel statistics of the training pixels in [0, 1]. The CIFAR-100 values are the ones used
# by RepDistiller / mdistiller, so teachers trained here see the same inputs as in those papers.
_MNIST_MEAN, _MNIST_STD = (0.1307,), (0.3081,)
_CIFAR10_MEAN, _CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
_CIFAR100_MEAN, _CIFAR100_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)

_CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]

# Official python-pickle layout of https://www.cs.toronto.edu/~kriz/cifar.html
_CIFAR_LAYOUT = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "archive": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": "batches.meta",
        "labels_key": "labels",
        "names_key": "label_names",
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "archive": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "train": ["train"],
        "test": ["test"],
        "meta": "meta",
        "labels_key": "fine_labels",
        "names_key": "fine_label_names",
    },
}


@dataclasses.dataclass(repr=False)
class Dataset:
    """Train and test splits as normalised tensors on one device.

    Attributes:
        name: e.g. ``"mnist10k"``; a transfer set's name records how it was drawn.
        num_classes, classes: number of classes and their names (index = target value).
        input_shape: ``(C, H, W)`` of one image.
        train_images, test_images: float32 ``(N, C, H, W)``, ``(pixel - mean) / std``.
        train_targets, test_targets: int64 ``(N,)``.
        augment: whether training should apply :func:`augment_batch` (True for CIFAR).
        mean, std: per-channel statistics used for normalisation (see :meth:`to_pixels`).
    """

    name: str
    num_classes: int
    classes: list[str]
    input_shape: tuple[int, int, int]
    train_images: torch.Tensor
    train_targets: torch.Tensor
    test_images: torch.Tensor
    test_targets: torch.Tensor
    augment: bool = False
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        if len(self.classes) != self.num_classes:
            raise ValueError(f"classes must have num_classes={self.num_classes} names, got {len(self.classes)}")
        for split in ("train", "test"):
            images, targets = getattr(self, f"{split}_images"), getattr(self, f"{split}_targets")
            if not (isinstance(images, torch.Tensor) and images.dtype.is_floating_point and images.dim() == 4):
                raise TypeError(f"{split}_images must be a float tensor (N, C, H, W)")
            if tuple(images.shape[1:]) != tuple(self.input_shape):
                raise ValueError(f"{split}_images must have shape (N, *{tuple(self.input_shape)}), got {tuple(images.shape)}")
            if not (isinstance(targets, torch.Tensor) and targets.dtype == torch.int64 and targets.shape == images.shape[:1]):
                raise TypeError(f"{split}_targets must be an int64 tensor of shape ({len(images)},)")
        self.input_shape = tuple(self.input_shape)

    @classmethod
    def from_tensors(cls, train_images, train_targets, test_images, test_targets, classes=None, name="custom",
                     normalize=True, augment=False) -> Dataset:
        """A Dataset from your own images and labels (tensors or NumPy arrays), to distill on your data.

        Args:
            train_images, test_images: ``(N, C, H, W)`` or ``(N, H, W)`` (one channel), uint8 pixels in
                0..255 (divided by 255) or floats (used as they are). Both splits need the same ``(C, H, W)``.
            train_targets, test_targets: integer class indices of shape ``(N,)``, one per image.
            classes: the class names (index = target value); default ``["0", "1", ...]`` with as many
                classes as the largest target + 1 over both splits.
            name: recorded in ``name`` (and in every run key, so two different datasets never share results).
            normalize: subtract the training split's per-channel mean and divide by its std (both splits),
                as ``load_dataset`` does with each dataset's own statistics; ``mean``/``std`` record them so
                ``to_pixels`` undoes it. ``False`` keeps the values (``mean=0, std=1``).
            augment: whether training applies :func:`augment_batch` (random crop + flip, for natural images).

        The tensors are copied to float32 / int64 on the device of ``train_images``.
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty string, got {name!r}")
        for flag, value in (("normalize", normalize), ("augment", augment)):
            if not isinstance(value, bool):
                raise TypeError(f"{flag} must be True or False, got {value!r}")
        splits = {}
        for split, images, targets in (("train", train_images, train_targets), ("test", test_images, test_targets)):
            images = _as_tensor(images, f"{split}_images")
            targets = _as_tensor(targets, f"{split}_targets")
            if images.dim() == 3:
                images = images[:, None]
            if images.dim() != 4:
                raise ValueError(f"{split}_images must have shape (N, C, H, W) or (N, H, W), got {tuple(images.shape)}")
            if images.shape[0] == 0:
                raise ValueError(f"{split}_images must hold at least one image, got 0")
            if images.dtype == torch.uint8:
                images = images.float() / 255.0
            elif images.dtype.is_floating_point:
                images = images.float()
            else:
                raise TypeError(f"{split}_images must be uint8 pixels or floats, got dtype {images.dtype}")
            if not torch.isfinite(images).all():
                raise ValueError(f"{split}_images must be finite (found NaN or inf)")
            if targets.dtype.is_floating_point or targets.dtype == torch.bool or targets.is_complex():
                raise TypeError(f"{split}_targets must hold integer class indices, got dtype {targets.dtype}")
            if targets.shape != images.shape[:1]:
                raise ValueError(f"{split}_targets must have shape ({images.shape[0]},), one class index per image "
                                 f"of {split}_images, got {tuple(targets.shape)}")
            targets = targets.long()
            if int(targets.min()) < 0:
                raise ValueError(f"{split}_targets must be class indices >= 0, got {int(targets.min())}")
            splits[split] = (images, targets)
        if splits["train"][0].shape[1:] != splits["test"][0].shape[1:]:
            raise ValueError(f"train_images and test_images must have the same (C, H, W), got "
                             f"{tuple(splits['train'][0].shape[1:])} and {tuple(splits['test'][0].shape[1:])}")
        largest = max(int(splits["train"][1].max()), int(splits["test"][1].max()))
        if classes is None:
            classes = [str(index) for index in range(largest + 1)]
        else:
            if isinstance(classes, str) or not isinstance(classes, Sequence):
                raise TypeError(f"classes must be a list of class names, got {type(classes).__name__}")
            classes = [str(c) for c in classes]
            if len(set(classes)) != len(classes):
                raise ValueError(f"classes must be distinct names, got {classes}")
            if largest >= len(classes):
                raise ValueError(f"targets go up to {largest} but classes names only {len(classes)} classes "
                                 f"(targets must lie in 0..{len(classes) - 1})")
        if len(classes) < 2:
            raise ValueError(f"a dataset needs at least 2 classes, got {len(classes)}")
        device = splits["train"][0].device
        train_images = splits["train"][0]
        channels = train_images.shape[1]
        if normalize:
            mean = train_images.transpose(0, 1).reshape(channels, -1).double().mean(dim=1)
            std = train_images.transpose(0, 1).reshape(channels, -1).double().std(dim=1)
            if not bool((std > 0).all()):
                raise ValueError("train_images has a channel with zero variance; pass normalize=False")
            mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        else:
            mean, std = (0.0,) * channels, (1.0,) * channels
        mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        scaled = {split: ((images.to(device) - mean_t) / std_t, targets.to(device))
                  for split, (images, targets) in splits.items()}
        return cls(name=name, num_classes=len(classes), classes=classes,
                   input_shape=tuple(train_images.shape[1:]),
                   train_images=scaled["train"][0].contiguous(), train_targets=scaled["train"][1].contiguous(),
                   test_images=scaled["test"][0].contiguous(), test_targets=scaled["test"][1].contiguous(),
                   augment=augment, mean=mean, std=std)

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={len(self.train_targets)}, test={len(self.test_targets)}, "
            f"num_classes={self.num_classes}, input_shape={self.input_shape}, "
            f"device={self.train_images.device}, augment={self.augment})"
        )

    @property
    def device(self) -> torch.device:
        return self.train_images.device

    def to(self, device: str | torch.device) -> Dataset:
        """The same dataset with all four tensors on ``device`` (no copy if they already are)."""
        device = resolve_device(device)
        return dataclasses.replace(
            self,
            train_images=self.train_images.to(device), train_targets=self.train_targets.to(device),
            test_images=self.test_images.to(device), test_targets=self.test_targets.to(device),
        )

    def to_pixels(self, images: torch.Tensor) -> torch.Tensor:
        """Undo the normalisation: ``images * std + mean``, clipped to [0, 1] (for plotting)."""
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(-1, 1, 1)
        return (images * std + mean).clamp(0.0, 1.0)

    def transfer_set(self, size: int | None = None, exclude_classes: Iterable[int | str] = (), seed: int = 0) -> Dataset:
        """A seeded, stratified subset of the training split to distill on.

        Each kept class contributes in proportion to its share of the kept training images
        (largest-remainder rounding, so the sizes add up to exactly ``size``); classes listed in
        ``exclude_classes`` contribute nothing, as in Hinton et al. (2015), who distilled an MNIST
        student on a transfer set without any 3s and then tested it on 3s.

        Memory: only the chosen training rows are gathered (one indexing op on the current device);
        the test tensors are the *same* tensor objects as in ``self`` (shared, not copied), and
        nothing is reloaded from disk. With ``size=None`` and no excluded classes the training
        tensors are shared too.

        Args:
            size: number of training images, 1..(images of the kept classes); None keeps all.
            exclude_classes: class indices (or names from ``self.classes``) to leave out.
            seed: seeds a private ``torch.Generator``; the same seed gives the same subset.
        """
        excluded = _parse_classes(exclude_classes, self.classes)
        if len(excluded) == self.num_classes:
            raise ValueError("exclude_classes must leave at least one class, got all of them")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"seed must be an int, got {seed!r}")

        targets = self.train_targets.cpu()
        kept = torch.ones(self.num_classes, dtype=torch.bool)
        kept[list(excluded)] = False
        available = torch.bincount(targets, minlength=self.num_classes) * kept
        total = int(available.sum())
        if size is None:
            size = total
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= total:
            raise ValueError(f"size must be an int in 1..{total} (training images of the kept classes), got {size!r}")

        index = _stratified_index(targets, available, size, seed)

        description = f"size={size}" + (f", exclude={list(excluded)}" if excluded else "") + f", seed={seed}"
        if len(index) == len(targets):
            train_images, train_targets = self.train_images, self.train_targets
        else:
            index = index.to(self.train_images.device)
            train_images, train_targets = self.train_images[index], self.train_targets[index]
        return dataclasses.replace(
            self, name=f"{self.name}/transfer({description})",
            train_images=train_images, train_targets=train_targets,
        )

    def split_validation(self, size: int, seed: int = 0) -> tuple[Dataset, Dataset]:
        """Hold ``size`` training images out for choosing hyper-parameters: returns ``(training, validation)``.

        The held-out images are a seeded sample stratified by class (every class in proportion to its share),
        never a slice: kdlab's mnist10k stores its training digits sorted by class, so the last rows are all
        7s, 8s and 9s. ``training`` keeps the other training images and the real test split. ``validation``
        has the same training images, and the held-out images as its *test* split, so a student trained on
        it reports validation accuracy where it would report test accuracy. Draw a transfer set from
        ``training`` (``training.transfer_set(...)``) to keep it apart from the validation images.

        Args:
            size: images to hold out, 1..(training images - 1).
            seed: seeds a private ``torch.Generator``; the same seed gives the same split.
        """
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"seed must be an int, got {seed!r}")
        targets = self.train_targets.cpu()
        total = len(targets)
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size < total:
            raise ValueError(f"size must be an int in 1..{total - 1} (training images minus one), got {size!r}")
        held = _stratified_index(targets, torch.bincount(targets, minlength=self.num_classes), size, seed)
        keep = torch.ones(total, dtype=torch.bool)
        keep[held] = False
        device = self.train_images.device
        held, kept = held.to(device), torch.nonzero(keep).flatten().to(device)
        training = dataclasses.replace(self, name=f"{self.name}/training(held out {size}, seed={seed})",
                                       train_images=self.train_images[kept], train_targets=self.train_targets[kept])
        validation = dataclasses.replace(training, name=f"{self.name}/validation({size}, seed={seed})",
                                         test_images=self.train_images[held], test_targets=self.train_targets[held])
        return training, validation


def load_dataset(
    name: str = "mnist10k",
    root: str | os.PathLike | None = None,
    download: bool = False,
    device: str | torch.device = "cpu",
) -> Dataset:
    """Load a dataset as normalised tensors on ``device``.

    Args:
        name: ``"mnist10k"`` (embedded, offline), ``"mnist"``, ``"cifar10"`` or ``"cifar100"``.
        root: folder holding the downloaded datasets (ignored for ``"mnist10k"``). Default:
            ``$KDLAB_DATA`` if set, else ``~/.cache/kdlab/data``.
        download: fetch the dataset through torchvision if it is not in ``root`` yet.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"auto"`` (cuda if available) or a torch.device.

    Raises:
        FileNotFoundError: the dataset is not in ``root`` and ``download`` is False; the message
            says how to get it.
    """
    if name not in DATASET_NAMES:
        raise ValueError(f"name must be one of {list(DATASET_NAMES)}, got {name!r}")
    if not isinstance(download, bool):
        raise TypeError(f"download must be True or False, got {download!r}")
    if root is not None and not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a path or None, got {root!r}")
    device = resolve_device(device)

    if name == "mnist10k":
        arrays = _mnist10k_arrays()
        train, test = arrays["train_index"], arrays["test_index"]
        images, labels = arrays["images"][:, None], arrays["labels"]
        splits = (images[train], labels[train], images[test], labels[test])
        classes, mean, std, augment = [str(d) for d in range(10)], _MNIST_MEAN, _MNIST_STD, False
    elif name == "mnist":
        splits = _full_mnist_arrays(str(_data_root(root)), download)
        classes, mean, std, augment = [str(d) for d in range(10)], _MNIST_MEAN, _MNIST_STD, False
    else:
        folder = _data_root(root)
        if download:
            _download_cifar(name, folder)
        splits, classes = _cifar_arrays(name, str(folder))
        mean, std = (_CIFAR10_MEAN, _CIFAR10_STD) if name == "cifar10" else (_CIFAR100_MEAN, _CIFAR100_STD)
        augment = True

    train_images, train_targets, test_images, test_targets = splits
    return Dataset(
        name=name, num_classes=len(classes), classes=list(classes),
        input_shape=tuple(train_images.shape[1:]),
        train_images=_normalise(train_images, mean, std, device),
        train_targets=torch.tensor(np.asarray(train_targets, dtype=np.int64), device=device),
        test_images=_normalise(test_images, mean, std, device),
        test_targets=torch.tensor(np.asarray(test_targets, dtype=np.int64), device=device),
        augment=augment, mean=mean, std=std,
    )


def augment_batch(
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    padding: int = 4,
    fill: float | Sequence[float] = 0.0,
) -> torch.Tensor:
    """Random crop with ``padding`` pixels of padding, then a random horizontal flip, per image.

    The standard CIFAR recipe (``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip()``) done as
    a few batched tensor ops on the images' device: pad once, draw one offset and one flip bit per
    image, and gather every output pixel with a single advanced-indexing op.

    Random numbers, in this order, from ``generator`` (a CPU generator gives the same result on
    any device): ``offsets = randint(0, 2*padding + 1, (B, 2))`` (row, column) and
    ``flips = randint(0, 2, (B,))``.

    Args:
        images: float tensor ``(B, C, H, W)``.
        generator: a ``torch.Generator`` for reproducibility, or None for the global RNG.
        padding: pixels added on every side before cropping back to ``(H, W)``; 0 = flips only.
        fill: value of the padded pixels, a number or one per channel. Images here are already
            normalised, so 0.0 pads with the mean colour; torchvision pads raw pixels with black,
            which is ``fill = [-m / s for m, s in zip(dataset.mean, dataset.std)]``.

    Returns:
        A new tensor of the same shape, dtype and device.
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.dtype.is_floating_point:
        raise TypeError("images must be a float tensor of shape (B, C, H, W)")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if not isinstance(padding, int) or isinstance(padding, bool) or padding < 0:
        raise ValueError(f"padding must be an int >= 0, got {padding!r}")
    batch, channels, height, width = images.shape
    fill = torch.as_tensor(fill, dtype=images.dtype, device=images.device).flatten()
    if fill.numel() not in (1, channels):
        raise ValueError(f"fill must be a number or {channels} numbers (one per channel), got {fill.numel()}")

    random_device = generator.device if generator is not None else torch.device("cpu")
    offsets = torch.randint(0, 2 * padding + 1, (batch, 2), generator=generator, device=random_device)
    flips = torch.randint(0, 2, (batch,), generator=generator, device=random_device).bool()
    offsets, flips = offsets.to(images.device), flips.to(images.device)

    padded = fill.view(1, -1, 1, 1).expand(batch, channels, height + 2 * padding, width + 2 * padding).clone()
    padded[:, :, padding:padding + height, padding:padding + width] = images
    arange_h = torch.arange(height, device=images.device)
    arange_w = torch.arange(width, device=images.device)
    rows = offsets[:, :1] + arange_h                                          # (B, H)
    cols = offsets[:, 1:] + torch.where(flips[:, None], width - 1 - arange_w, arange_w)  # (B, W)
    batch_index = torch.arange(batch, device=images.device).view(-1, 1, 1, 1)
    channel_index = torch.arange(channels, device=images.device).view(1, -1, 1, 1)
    return padded[batch_index, channel_index, rows[:, None, :, None], cols[:, None, None, :]]


# --------------------------------------------------------------------------------------------------
# private helpers


def _as_tensor(value, name: str) -> torch.Tensor:
    """A torch.Tensor or a NumPy array (copied) as a tensor; anything else is an error naming ``name``."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.array(value))
    if isinstance(value, torch.Tensor):
        return value.detach()
    raise TypeError(f"{name} must be a torch.Tensor or a NumPy array, got {type(value).__name__}")


def _parse_classes(exclude_classes: Iterable[int | str] | int | str, classes: list[str]) -> tuple[int, ...]:
    if isinstance(exclude_classes, (int, str)):
        exclude_classes = [exclude_classes]
    try:
        items = list(exclude_classes)
    except TypeError:
        raise TypeError(f"exclude_classes must be class indices or names, got {exclude_classes!r}") from None
    parsed = set()
    for item in items:
        if isinstance(item, str):
            if item not in classes:
                raise ValueError(f"exclude_classes: unknown class name {item!r}; known: {classes}")
            parsed.add(classes.index(item))
        elif isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            if not 0 <= item < len(classes):
                raise ValueError(f"exclude_classes must be in 0..{len(classes) - 1}, got {item}")
            parsed.add(int(item))
        else:
            raise TypeError(f"exclude_classes must be class indices or names, got {item!r}")
    return tuple(sorted(parsed))


def _stratified_index(targets: torch.Tensor, available: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """Sorted indices of ``size`` rows of ``targets``, per class in proportion to ``available`` (seeded)."""
    per_class = _largest_remainder(available, size)
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label in range(len(available)):
        if per_class[label] > 0:
            members = torch.nonzero(targets == label).flatten()
            chosen.append(members[torch.randperm(len(members), generator=generator)[: per_class[label]]])
    return torch.cat(chosen).sort().values


def _largest_remainder(counts: torch.Tensor, size: int) -> list[int]:
    """Split ``size`` over classes in proportion to ``counts``; the sizes add up exactly."""
    exact = counts.double() * size / counts.sum()
    per_class = exact.floor().long()
    missing = size - int(per_class.sum())
    remainders = exact - per_class
    order = sorted(range(len(counts)), key=lambda label: (-float(remainders[label]), label))
    for label in order[:missing]:
        per_class[label] += 1
    return per_class.tolist()


def _normalise(images: np.ndarray | torch.Tensor, mean: tuple, std: tuple, device: torch.device) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 (pixel/255 - mean) / std, computed on ``device``."""
    if isinstance(images, np.ndarray):
        with warnings.catch_warnings():
            # the cached arrays are read-only on purpose; .float() below copies before any write
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            images = torch.from_numpy(images)
    images = images.to(device)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return images.float().div_(255.0).sub_(mean_t).div_(std_t)


def _data_root(root: str | os.PathLike | None) -> Path:
    if root is None:
        root = os.environ.get("KDLAB_DATA") or Path.home() / ".cache" / "kdlab" / "data"
    return Path(root).expanduser()


@functools.lru_cache(maxsize=1)
def _mnist10k_arrays() -> dict[str, np.ndarray]:
    """The embedded arrays, read once per process (read-only, so the cache cannot be corrupted)."""
    with np.load(_EMBEDDED_FILE, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in ("images", "labels", "train_index", "test_index")}
    for array in arrays.values():
        array.setflags(write=False)
    return arrays


def _full_mnist_arrays(root: str, download: bool):
    """The 60,000 / 10,000 MNIST splits via torchvision (it reads the raw idx files itself)."""
    from torchvision.datasets import MNIST

    try:
        train = MNIST(root, train=True, download=download)
        test = MNIST(root, train=False, download=download)
    except RuntimeError as error:
        if download:
            raise
        raise FileNotFoundError(
            f"MNIST was not found in {Path(root) / 'MNIST' / 'raw'} and download=False. Get it once by adding "
            f"--download to the kdlab command (kdlab teacher --dataset mnist --download) or, in Python, with "
            f"kdlab.load_dataset('mnist', download=True) (needs internet, ~12 MB), or put the four "
            f"unpacked idx files (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
            f"t10k-labels-idx1-ubyte) there, or point root= / $KDLAB_DATA at a folder that has them. "
            f"Offline, use the embedded kdlab.load_dataset('mnist10k')."
        ) from error
    return train.data[:, None], train.targets, test.data[:, None], test.targets


def _download_cifar(name: str, root: Path) -> None:
    """torchvision downloads the official archive, checks its md5 and unpacks it into ``root``."""
    from torchvision.datasets import CIFAR10, CIFAR100

    dataset_class = CIFAR10 if name == "cifar10" else CIFAR100
    dataset_class(str(root), train=True, download=True)


class _RefusedPickle(pickle.UnpicklingError):
    """A CIFAR file asked for a class other than numpy's arrays: refused, never read."""


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """The CIFAR batches are pickles; refuse to build anything but numpy arrays while reading them."""

    _allowed = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._allowed:
            raise _RefusedPickle(f"CIFAR file refers to {module}.{name}, which is not allowed")
        return super().find_class(module, name)


def _read_cifar_file(path: Path) -> dict:
    with open(path, "rb") as handle:
        # latin1 is how Python 3 reads the Python 2 pickles of the official archive (as torchvision does)
        try:
            entry = _NumpyOnlyUnpickler(handle, encoding="latin1").load()
        except _RefusedPickle:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, IndexError) as error:  # cut short or garbled
            raise ValueError(f"{path} cannot be read as a CIFAR pickle ({type(error).__name__}: {error}); "
                             "download and unpack the archive again") from None
    if not isinstance(entry, dict):
        raise ValueError(f"{path} does not look like a CIFAR file: it holds a {type(entry).__name__}, not a dict")
    return {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in entry.items()}


@functools.lru_cache(maxsize=2)
def _cifar_arrays(name: str, root: str):
    """Read the official python-pickle files directly (see the note below), once per process.

    torchvision's CIFAR10 checks the md5 of every extracted batch file before reading, so it
    would reject anything but the exact official files; we use torchvision only to download (it
    verifies the archive's md5 then) and read the documented format ourselves: each batch is a
    dict with ``data`` = uint8 (N, 3072) rows in channel-major (R, G, B planes of 32x32) order
    and a list of labels.
    """
    layout = _CIFAR_LAYOUT[name]
    folder = Path(root) / layout["folder"]
    needed = layout["train"] + layout["test"] + [layout["meta"]]
    missing = [file for file in needed if not (folder / file).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{name} was not found: {folder} lacks {', '.join(missing)}. Get it once by adding --download "
            f"to the kdlab command (kdlab teacher --dataset {name} --download) or, in Python, with "
            f"kdlab.load_dataset({name!r}, download=True) (needs internet), or download "
            f"{layout['archive']}, unpack it so that {folder} exists, or point root= / $KDLAB_DATA "
            f"at the folder that contains {layout['folder']!r}."
        )

    num_classes = 10 if name == "cifar10" else 100
    row_size = 3 * 32 * 32

    def read_split(files: list[str]):
        images, labels = [], []
        for file in files:
            entry = _read_cifar_file(folder / file)
            if "data" not in entry or layout["labels_key"] not in entry:
                raise ValueError(f"{folder / file} does not look like a {name} batch: it lacks "
                                 f"{'data' if 'data' not in entry else layout['labels_key']!r}")
            data = np.asarray(entry["data"])
            if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != row_size:
                raise ValueError(f"{folder / file} does not look like a {name} batch: 'data' must be uint8 rows "
                                 f"of {row_size} pixels (3 x 32 x 32), got {data.dtype} of shape {data.shape}")
            targets = np.asarray(entry[layout["labels_key"]])
            if targets.ndim != 1 or targets.shape[0] != data.shape[0] or (
                    targets.size and not np.issubdtype(targets.dtype, np.integer)):
                raise ValueError(f"{folder / file} does not look like a {name} batch: {layout['labels_key']!r} must "
                                 f"hold one integer label per row ({data.shape[0]} rows), got {targets.dtype} of "
                                 f"shape {targets.shape}")
            if targets.size and (int(targets.min()) < 0 or int(targets.max()) >= num_classes):
                raise ValueError(f"{folder / file} does not look like a {name} batch: labels must lie in "
                                 f"[0, {num_classes}), got values in [{int(targets.min())}, {int(targets.max())}]")
            images.append(data)
            labels.append(targets.astype(np.int64))
        return np.concatenate(images).reshape(-1, 3, 32, 32), np.concatenate(labels)

    train_images, train_labels = read_split(layout["train"])
    test_images, test_labels = read_split(layout["test"])
    meta = _read_cifar_file(folder / layout["meta"])
    classes = list(meta.get(layout["names_key"], ()))
    if len(classes) != num_classes:
        raise ValueError(f"{folder / layout['meta']} does not look like {name}'s meta file: "
                         f"{len(classes)} class names in {layout['names_key']!r}, expected {num_classes}")
    for array in (train_images, train_labels, test_images, test_labels):
        array.setflags(write=False)
    return (train_images, train_labels, test_images, test_labels), classes
