"""MNIST (IDX/CSV) and CIFAR-10 JPEG-folder loaders: counts as stated in the datasets' PROVENANCE.md."""
import gzip

import numpy as np
import pytest

from poisonjax.data._base import DataNotFoundError
from poisonjax.data.images import load_cifar10_jpeg, load_image_dataset, load_mnist, read_idx


def test_mnist_counts_match_provenance():
    d = load_mnist()
    assert d.x_train.shape == (5000, 28, 28, 1) and d.x_test.shape == (10000, 28, 28, 1)
    assert d.x_train.dtype == np.float32 and 0.0 <= d.x_train.min() and d.x_train.max() <= 1.0
    assert np.bincount(d.y_train).tolist() == [500] * 10
    assert np.bincount(d.y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert d.y_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert abs(float(d.x_test.mean()) - 0.1325) < 1e-3


def test_mnist_stratified_subset():
    d = load_mnist(n_train=1000, n_test=500)
    assert np.bincount(d.y_train).tolist() == [100] * 10 and len(d.y_test) == 500


def test_cifar10_jpeg_counts_match_provenance():
    d = load_cifar10_jpeg()
    assert d.x_train.shape == (2000, 32, 32, 3) and d.x_test.shape == (1000, 32, 32, 3)
    assert np.bincount(d.y_train).tolist() == [200] * 10
    assert np.bincount(d.y_test).tolist() == [100] * 10
    assert 0.0 <= d.x_train.min() and d.x_train.max() <= 1.0


def test_read_idx_roundtrip(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = bytes([0, 0, 0x08, 3]) + np.array([2, 3, 4], ">i4").tobytes() + a.tobytes()
    p = tmp_path / "x-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(raw))
    np.testing.assert_array_equal(read_idx(p), a)
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="IDX"):
        read_idx(bad)


def test_missing_data_is_reported(tmp_path):
    with pytest.raises(DataNotFoundError, match="mnist"):
        load_mnist(data_dir=tmp_path)
    with pytest.raises(ValueError, match="dataset"):
        load_image_dataset("imagenet")
