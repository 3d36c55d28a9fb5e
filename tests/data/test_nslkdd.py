"""NSL-KDD loader: counts from PROVENANCE.md, encodings, framings, bad input."""
import numpy as np
import pytest

from poisonjax.core.validation import PoisonJaxInputError
from poisonjax.data._base import DataNotFoundError
from poisonjax.data import nslkdd


@pytest.fixture(scope="module")
def binary():
    return nslkdd.load_nslkdd("binary")


@pytest.fixture(scope="module")
def five():
    return nslkdd.load_nslkdd("5class")


def test_provenance_counts_binary(binary):
    assert binary.x_train.shape[0] == 25192 and binary.x_test.shape[0] == 22544
    assert np.bincount(binary.y_train).tolist() == [13449, 11743]
    assert np.bincount(binary.y_test).tolist() == [9711, 12833]
    assert len(set(binary.attack_train)) == 22 and len(set(binary.attack_test)) == 38
    assert binary.class_names == ("normal", "attack")


def test_five_class_counts_and_mapping(five):
    assert np.bincount(five.y_train, minlength=5).tolist() == [13449, 9234, 2289, 209, 11]
    assert np.bincount(five.y_test, minlength=5).tolist() == [9711, 7460, 2421, 2885, 67]
    # spot checks of the standard mapping
    cat = dict(zip(five.attack_train, five.y_train))
    assert cat["neptune"] == 1 and cat["satan"] == 2 and cat["guess_passwd"] == 3 and cat["rootkit"] == 4


def test_features_onehot_and_standardized(binary):
    x, names = binary.x_train, binary.feature_names
    assert x.dtype == np.float32 and x.shape[1] == len(names) and np.all(np.isfinite(binary.x_test))
    for c, n_vals in (("protocol_type", 3), ("flag", 11)):
        cols = [i for i, n in enumerate(names) if n.startswith(c + "=")]
        assert len(cols) == n_vals
        np.testing.assert_array_equal(x[:, cols].sum(1), 1.0)
    svc = [i for i, n in enumerate(names) if n.startswith("service=")]
    assert len(svc) >= 66
    num = [i for i, n in enumerate(names) if "=" not in n]
    assert len(num) == 38
    sd = x[:, num].std(0)
    np.testing.assert_allclose(x[:, num].mean(0), 0.0, atol=1e-4)
    # num_outbound_cmds is constant 0 in NSL-KDD -> sd 0; the others are unit variance
    assert np.sum(np.isclose(sd, 1.0, atol=1e-3)) >= 36


def test_subsample_keeps_every_class():
    d = nslkdd.load_nslkdd("5class", max_train=2000, max_test=1000)
    assert 1900 <= len(d.y_train) <= 2100 and set(np.unique(d.y_train)) == {0, 1, 2, 3, 4}
    assert set(np.unique(d.y_test)) == {0, 1, 2, 3, 4}


def test_bad_input(tmp_path):
    with pytest.raises(PoisonJaxInputError, match="framing"):
        nslkdd.load_nslkdd("3class")
    with pytest.raises(DataNotFoundError, match="KDDTrain"):
        nslkdd.load_nslkdd("binary", data_dir=tmp_path)
    with pytest.raises(PoisonJaxInputError, match="unknown NSL-KDD attack"):
        nslkdd.encode_labels(["normal", "not_an_attack"], "binary")
