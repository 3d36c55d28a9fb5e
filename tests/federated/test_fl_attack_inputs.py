"""Issue 15 part 1 (federated): what an FL attack may see. Model-poisoning attacks receive this round's
client updates, the malicious mask, a key and the RoundContext (global model, server auxiliary data
drawn from the *training* set); data-poisoning attacks receive a malicious client's own local data.
No argument carries the test set, so no attack can read test labels."""
import numpy as np

from poisonjax.federated import attacks as atk
from poisonjax.federated import simulation as S


def test_round_context_and_data_carry_no_test_labels():
    assert not {f for f in S.RoundContext._fields if "test" in f}
    r = np.random.default_rng(0)
    xtr = r.random((60, 4)).astype(np.float32)
    ytr = (np.arange(60) % 3).astype(np.int32)
    xte = r.random((20, 4)).astype(np.float32) + 10.0          # disjoint from the training set
    yte = (np.arange(20) % 3).astype(np.int32)
    d = S.federate_arrays(xtr, ytr, xte, yte, num_classes=3, num_clients=4, aux_size=6, malicious_fraction=0.25, partition="iid",
                          data_attack="label_flip", seed=0)
    # the server's auxiliary data (what attacks and defenses see in the context) is training data
    assert np.asarray(d.x_aux).max() < 1.0 and len(d.y_aux) == 6
    # malicious clients' flipped labels come from their own data: C - 1 - y ("reverse"), never test labels
    mal = np.flatnonzero(np.asarray(d.malicious))
    assert mal.size == 1
    valid = np.asarray(d.mask)[mal[0]] > 0
    assert np.asarray(d.x)[mal[0]][valid].max() < 1.0


def test_data_attacks_are_functions_of_local_data_only():
    y = np.array([0, 1, 2, 2])
    np.testing.assert_array_equal(atk.flip_labels(y, 3), [2, 1, 0, 0])
    x = np.zeros((4, 3), np.float32)
    xb, yb = atk.add_backdoor(x, y, np.ones(4, np.float32), target=1, fraction=0.5, size=1, seed=0)
    assert xb.shape == x.shape and int((yb == 1).sum()) >= 2
