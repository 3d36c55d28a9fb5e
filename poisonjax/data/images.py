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
