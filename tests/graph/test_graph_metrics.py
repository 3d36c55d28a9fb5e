"""AUC/AP equal scikit-learn; models produce sane outputs; link split invariants."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import average_precision_score, roc_auc_score

from poisonjax.core.validation import PoisonJaxInputError
from poisonjax.data.synthetic import sbm_graph
from poisonjax.graph import metrics, models
from poisonjax.graph.splits import budget_from_rate, link_split


@pytest.mark.parametrize("seed,levels", [(0, 3), (1, 1000), (2, 10)])
def test_auc_ap_match_sklearn(seed, levels):
    rng = np.random.default_rng(seed)
    s = rng.integers(0, levels, 300).astype(np.float32) / levels  # ties when levels is small
    y = rng.integers(0, 2, 300)
    assert float(metrics.roc_auc(s, y)) == pytest.approx(roc_auc_score(y, s), abs=1e-6)
    assert float(metrics.average_precision(s, y)) == pytest.approx(average_precision_score(y, s), abs=1e-6)


def test_link_auc_ap_matches_sklearn():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(30, 4)).astype(np.float32)
    pos, neg = rng.integers(0, 30, (20, 2)), rng.integers(0, 30, (25, 2))
    auc, ap = metrics.link_auc_ap(jnp.asarray(z), jnp.asarray(pos), jnp.asarray(neg))
    s = 1 / (1 + np.exp(-np.concatenate([(z[pos[:, 0]] * z[pos[:, 1]]).sum(1), (z[neg[:, 0]] * z[neg[:, 1]]).sum(1)])))
    y = np.r_[np.ones(20), np.zeros(25)]
    assert float(auc) == pytest.approx(roc_auc_score(y, s), abs=1e-6)
    assert float(ap) == pytest.approx(average_precision_score(y, s), abs=1e-5)


def test_normalize_adj_dense_sparse_jraph_agree():
    adj, _ = sbm_graph(40, 2, 0.2, 0.05, seed=0)
    dense = np.asarray(models.normalize_adj(jnp.asarray(adj.toarray())))
    assert np.allclose(dense, np.asarray(models.normalize_adj_sparse(adj).todense()), atol=1e-6)
    import jraph
    coo = adj.tocoo()
    g = jraph.GraphsTuple(nodes=None, edges=None, senders=coo.row, receivers=coo.col,
                          n_node=np.array([40]), n_edge=np.array([coo.nnz]), globals=None)
    b = models.graphs_tuple_to_bcoo(models.normalize_graphs_tuple(g))
    assert np.allclose(dense, np.asarray(b.todense()), atol=1e-6)


def test_gcn_learns_sbm_and_vmaps_over_seeds():
    adj, y = sbm_graph(120, 3, 0.2, 0.01, seed=1)
    x = jnp.eye(120)
    idx = np.arange(120)
    acc = models.gcn_test_accuracy(models.normalize_adj(jnp.asarray(adj.toarray())), x, jnp.asarray(y),
                                   idx[:30], idx[30:60], idx[60:], jax.random.split(jax.random.PRNGKey(0), 3), 3,
                                   models.GCNConfig(epochs=100))
    assert acc.shape == (3,) and float(acc.mean()) > 0.8


def test_link_split_invariants():
    adj, _ = sbm_graph(100, 2, 0.15, 0.02, seed=0)
    s = link_split(adj, 0.05, 0.1, seed=0)
    e = sp.triu(adj, 1).nnz
    assert len(s.val_pos) == int(0.05 * e) and len(s.test_pos) == int(0.1 * e)
    assert len(s.train_pos) + len(s.val_pos) + len(s.test_pos) == e
    assert sp.triu(s.adj_train, 1).nnz == len(s.train_pos)
    for neg in (s.train_neg, s.val_neg, s.test_neg):
        assert np.all(np.asarray(adj[neg[:, 0], neg[:, 1]]).ravel() == 0) and np.all(neg[:, 0] != neg[:, 1])
    codes = np.concatenate([n[:, 0] * 100 + n[:, 1] for n in (s.train_neg, s.val_neg, s.test_neg)])
    assert len(np.unique(codes)) == len(codes)
    for p in (s.val_pos, s.test_pos):
        assert np.all(np.asarray(s.adj_train[p[:, 0], p[:, 1]]).ravel() == 0)


@pytest.mark.parametrize("rate", [0.0, -0.1, 1.5, float("nan")])
def test_bad_rate(rate):
    with pytest.raises(PoisonJaxInputError, match="rate"):
        budget_from_rate(rate, 100, 1000)


def test_budget_larger_than_flippable():
    with pytest.raises(PoisonJaxInputError, match="flippable"):
        budget_from_rate(1.0, 100, 50)
