"""SASRec / GRU4Rec: causality, training reduces the loss, vmapped K-seed training equals K single runs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from poisonjax.core.validation import PoisonJaxInputError
from poisonjax.data.synthetic import interaction_logs
from poisonjax.data.sequences import leave_one_out
from poisonjax.recsys import metrics as M
from poisonjax.recsys.models import make_model
from poisonjax.recsys.training import make_trainer, next_item_loss


@pytest.mark.parametrize("name", ["sasrec", "gru4rec"])
def test_causal(name):
    V, L = 20, 6
    m = make_model(name, V, L, hidden=8, num_blocks=1, dropout=0.0)
    p = m.init(jax.random.PRNGKey(0), jnp.ones((1, L), jnp.int32), True)
    a = jnp.array([[0, 3, 4, 5, 6, 7]])
    b = jnp.array([[0, 3, 4, 9, 1, 2]])
    ha, hb = m.apply(p, a, True), m.apply(p, b, True)
    np.testing.assert_allclose(ha[:, :3], hb[:, :3], atol=1e-5)      # positions <= 2 ignore the future
    assert not np.allclose(ha[:, 3:], hb[:, 3:])


@pytest.fixture(scope="module")
def synthetic():
    seqs = interaction_logs(300, 40, mean_length=8, seed=0)
    return leave_one_out(seqs, 8)


@pytest.mark.parametrize("name,loss", [("sasrec", "bce"), ("gru4rec", "sampled_softmax")])
def test_training_learns_the_markov_structure(synthetic, name, loss):
    sp = synthetic
    m = make_model(name, 40, 8, hidden=16, num_blocks=1, dropout=0.1)
    tr = make_trainer(m, 40, epochs=25, batch_size=64, lr=5e-3, loss=loss, num_negatives=20)
    P = tr.train(jnp.asarray(sp.train_x), jnp.asarray(sp.train_y), jax.random.split(jax.random.PRNGKey(0), 2))
    r = np.asarray(M.make_ensemble_ranker(m, 128)(P, sp.test_x, sp.test_y, sp.history))
    # half of the transitions are i -> i+1: a trained model must beat random ranking (HR@10 ~ 10/40) clearly
    hr = [M.hit_ndcg(rk, (10,))["hr@10"] for rk in r]
    assert min(hr) > 0.45, hr


def test_vmapped_k_seeds_equal_sequential(synthetic):
    sp = synthetic
    m = make_model("sasrec", 40, 8, hidden=8, num_blocks=1, dropout=0.1)
    tr = make_trainer(m, 40, epochs=2, batch_size=64, lr=1e-3)
    keys = jax.random.split(jax.random.PRNGKey(3), 2)
    x, y = jnp.asarray(sp.train_x), jnp.asarray(sp.train_y)
    P = tr.train(x, y, keys)
    for k in range(2):
        single = tr.train_single(x, y, keys[k])
        for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(jax.tree.map(lambda l: l[k], P))):
            np.testing.assert_allclose(a, b, atol=5e-4, rtol=1e-3)
    many = tr.train_many(jnp.stack([x, x]), jnp.stack([y, y]), keys, jnp.ones((2, x.shape[0])))
    for a, b in zip(jax.tree.leaves(P), jax.tree.leaves(jax.tree.map(lambda l: l[1], many))):
        np.testing.assert_allclose(a, b, atol=5e-4, rtol=1e-3)


def test_bad_model_inputs():
    with pytest.raises(PoisonJaxInputError, match="model"):
        make_model("bert", 10, 5)
    with pytest.raises(PoisonJaxInputError, match="max_len"):
        make_model("sasrec", 10, 1)
    with pytest.raises(PoisonJaxInputError, match="loss"):
        next_item_loss(make_model("sasrec", 10, 5), 10, loss="bpr")
