"""data.text: counts equal those in sst2_trec_text/PROVENANCE.md; missing data gets a clear error."""
import numpy as np
import pytest

from poisonjax.core.validation import PoisonJaxInputError
from poisonjax.data._base import DataNotFoundError
from poisonjax.data.text import load_sst2, load_trec


@pytest.mark.requires_data("sst2_trec_text")
def test_sst2_counts():
    for split, n, neg, pos in (("train", 6920, 3310, 3610), ("dev", 872, 428, 444), ("test", 1821, 912, 909)):
        d = load_sst2(split)
        assert len(d.texts) == n and np.bincount(d.labels).tolist() == [neg, pos]


@pytest.mark.requires_data("sst2_trec_text")
def test_trec_counts():
    d = load_trec("train")
    assert len(d.texts) == 5452 and np.bincount(d.labels).tolist() == [86, 1162, 1250, 1223, 835, 896]
    assert len(set(d.fine_labels)) == 50
    t = load_trec("test")
    assert len(t.texts) == 500 and np.bincount(t.labels).tolist() == [9, 138, 94, 65, 81, 113]


def test_missing_data_and_bad_split(tmp_path):
    with pytest.raises(DataNotFoundError, match="POISONJAX_DATA"):
        load_sst2("train", data_dir=tmp_path)
    with pytest.raises(PoisonJaxInputError, match="split"):
        load_trec("dev")
