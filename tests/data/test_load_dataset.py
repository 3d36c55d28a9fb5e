"""data.load_dataset: dispatches every name; unknown names list the valid ones."""
import pytest

from poisonjax.core.validation import PoisonJaxInputError
from poisonjax.data import DATASETS, load_dataset


@pytest.mark.requires_data("sst2_trec_text", "cora")
def test_dispatch_small_sets():
    assert load_dataset("digits").x_train.shape[1:] == (8, 8, 1)
    assert len(load_dataset("trec", split="test").texts) == 500
    g = load_dataset("cora")
    assert g.num_nodes == 2485


def test_unknown_dataset():
    with pytest.raises(PoisonJaxInputError, match="unknown dataset 'imagenet'.*digits"):
        load_dataset("imagenet")
    assert "beauty" in DATASETS and "nslkdd5" in DATASETS


def test_one_registry_federated_reexports_it():
    import numpy as np
    from poisonjax import data
    from poisonjax.federated import datasets as fd
    assert fd.load is data.load_arrays and set(fd.DATASETS) == set(data.ARRAY_DATASETS) <= set(DATASETS)
    xtr, ytr, xte, yte, k = data.load_arrays("digits")
    assert xtr.dtype == np.float32 and ytr.dtype == np.int32 and k == 10 and xtr.shape[1:] == (8, 8, 1)
    assert 0.0 <= xtr.min() and xtr.max() <= 1.0 and len(xtr) + len(xte) == 1797
    with pytest.raises(PoisonJaxInputError, match="digits"):
        data.load_arrays("cora")


@pytest.mark.slow  # decodes 30,000 JPEGs (about 15 s on an idle 2-core machine)
@pytest.mark.requires_data("cifar10_20k")
def test_cifar10_20k_by_name_subsets_are_stratified_and_in_split_order():
    """``load_dataset("cifar10_20k", n_train=, n_test=)``: class-balanced subsets of the 10k/10k set whose rows
    are rows of ``load_cifar10_20k_split`` in the same order (so a study's subset is reproducible)."""
    import numpy as np
    from poisonjax.data.images import load_cifar10_20k_split
    d = load_dataset("cifar10_20k", n_train=500, n_test=200, seed=0)
    assert d.x_train.shape == (500, 32, 32, 3) and d.x_test.shape == (200, 32, 32, 3) and d.name == "cifar10_20k"
    assert np.bincount(d.y_train, minlength=10).tolist() == [50] * 10
    assert np.bincount(d.y_test, minlength=10).tolist() == [20] * 10
    xte, yte = load_cifar10_20k_split("test")
    flat = xte.reshape(len(xte), -1)
    pos = [int(np.flatnonzero((flat == r.reshape(1, -1)).all(1))[0]) for r in d.x_test[:20]]
    assert pos == sorted(pos) and (yte[pos] == d.y_test[:20]).all()
