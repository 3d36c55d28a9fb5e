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
