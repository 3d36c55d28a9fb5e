"""Centralised datasets for federated studies, by name (loaders live in :mod:`poisonjax.data`)."""
from __future__ import annotations

import numpy as np

from poisonjax.core.validation import check_choice

DATASETS = ("digits", "mnist", "cifar10", "nslkdd", "nslkdd5")


def load(name: str, data_dir=None, seed: int = 0, **kw):
    """``(x_train, y_train, x_test, y_test, num_classes)`` for ``digits`` (scikit-learn, no files),
    ``mnist`` (shared 5k subset + official test set), ``cifar10`` (shared JPEG subset), ``nslkdd``
    (binary) / ``nslkdd5`` (5-class) via :mod:`poisonjax.data.nslkdd`. Images are NHWC in [0, 1]."""
    check_choice("dataset", name, DATASETS)
    if name in ("nslkdd", "nslkdd5"):
        from poisonjax.data import nslkdd
        d = nslkdd.load_nslkdd("binary" if name == "nslkdd" else "5class", data_dir, **kw)
        return (np.asarray(d.x_train, np.float32), np.asarray(d.y_train, np.int32), np.asarray(d.x_test, np.float32),
                np.asarray(d.y_test, np.int32), int(d.num_classes))
    from poisonjax.data.images import load_image_dataset
    d = load_image_dataset(name, data_dir, seed=seed, **kw)
    return d.x_train, d.y_train, d.x_test, d.y_test, d.num_classes
