"""The one-call API (poisonjax.graph.metattack / meta_pgd / prbcd / vgae_attack / evaluate_gcn) on a small
graph: numpy / scipy in, the same kind out, budget respected, evaluation equal to the building blocks."""
import jax
import numpy as np
import pytest
import scipy.sparse as sp

import poisonjax.graph as pg
from poisonjax.core.validation import PoisonJaxInputError
from poisonjax.data.synthetic import sbm_graph
from poisonjax.graph import attacks as A
from poisonjax.graph import models


@pytest.fixture(scope="module")
def g():
    n = 48
    adj, y = sbm_graph(n, 3, 0.25, 0.02, seed=4)
    rng = np.random.default_rng(0)
    perm = rng.permutation(n)
    x = (rng.random((n, 6)) < 0.3).astype(np.float32)
    return adj, x, y, np.sort(perm[:12]), np.sort(perm[12:20]), np.sort(perm[20:])


def _n_flips(a, b):
    return int(sp.triu(abs(sp.csr_matrix(a, dtype=np.float32) - sp.csr_matrix(b, dtype=np.float32)), 1).nnz)


@pytest.mark.slow
@pytest.mark.extended  # CI runs it after the main suite while time allows (.ci/run)
def test_metattack_same_kind_out_and_budget(g):
    adj, x, y, tr, va, te = g
    dense = adj.toarray().astype(np.float64)
    out_np = pg.metattack(dense, x, y, tr, 6, flips_per_step=3, inner_steps=5)
    assert isinstance(out_np, np.ndarray) and out_np.dtype == np.float64 and out_np.shape == dense.shape
    out_sp = pg.metattack(adj, sp.csr_matrix(x), y, tr, 6, flips_per_step=3, inner_steps=5)
    assert sp.issparse(out_sp)
    np.testing.assert_array_equal(out_np, out_sp.toarray())  # same attack whatever the input kind
    A.check_perturbation(adj, out_sp, 6)
    assert _n_flips(adj, out_sp) == 6
    frac = pg.metattack(adj, x, y, tr, 0.05, flips_per_step=3, inner_steps=5)  # a float: fraction of edges
    assert _n_flips(adj, frac) == int(0.05 * sp.triu(adj, 1).nnz)


@pytest.mark.slow
@pytest.mark.extended  # CI runs it after the main suite while time allows (.ci/run)
def test_meta_pgd_and_prbcd_respect_budget(g):
    adj, x, y, tr, va, te = g
    m = pg.meta_pgd(adj, x, y, tr, 6, idx_val=va, steps=3, samples=2, select_seeds=1, flips_per_step=3,
                    inner_steps=5)
    A.check_perturbation(adj, m, 6)
    assert 0 < _n_flips(adj, m) <= 6
    p = pg.prbcd(adj.toarray(), x, y, tr, 6, epochs=4, inner_steps=5, block_size=200)
    assert isinstance(p, np.ndarray)
    A.check_perturbation(adj, sp.csr_matrix(p), 6)
    assert 0 < _n_flips(adj, p) <= 6


def test_vgae_attack_flips_only_training_pairs(g):
    adj, *_ = g
    split = pg.link_split(adj, 0.05, 0.10, seed=0)
    out = pg.vgae_attack(split, None, 4, objective="train", inner_steps=5, steps_per_budget=2,
                         victim=models.VGAEConfig(epochs=5))
    A.check_perturbation(split.adj_train, out, 4)
    d = sp.triu(abs(out - split.adj_train), 1).tocoo()
    flipped = set(zip(d.row.tolist(), d.col.tolist()))
    held = {(min(i, j), max(i, j)) for i, j in split.held_out_pairs().tolist()}
    assert len(flipped) == 4 and not flipped & held


def test_evaluate_gcn_matches_building_blocks(g):
    adj, x, y, tr, va, te = g
    r = pg.evaluate_gcn(adj, x, y, tr, va, te, seeds=[0, 3], epochs=30)
    keys = jax.numpy.stack([jax.random.PRNGKey(0), jax.random.PRNGKey(3)])
    ref = models.gcn_accuracy_on(adj, models.scipy_to_bcoo(sp.csr_matrix(x)), y, tr, va, te, keys, 3,
                                 models.GCNConfig(epochs=30))
    np.testing.assert_allclose(r["per_seed"], ref, atol=1e-6)
    assert r["seeds"] == [0, 3] and r["accuracy"] == pytest.approx(float(np.mean(ref)))
    assert len(pg.evaluate_gcn(adj.toarray(), None, y, tr, va, te, seeds=2, epochs=5)["per_seed"]) == 2


def test_bad_inputs(g):
    adj, x, y, tr, va, te = g
    with pytest.raises(PoisonJaxInputError, match="budget"):
        pg.metattack(adj, x, y, tr, 1.5)
    with pytest.raises(PoisonJaxInputError, match="budget"):
        pg.metattack(adj, x, y, tr, 0)
    with pytest.raises(PoisonJaxInputError, match="labels"):
        pg.metattack(adj, x, y[:-1], tr, 4)
    with pytest.raises(PoisonJaxInputError, match="features"):
        pg.prbcd(adj, x[:-1], y, tr, 4)
    with pytest.raises(PoisonJaxInputError, match="variant"):
        pg.metattack(adj, x, y, tr, 4, variant="meta_slef")
    with pytest.raises(PoisonJaxInputError, match="seeds"):
        pg.evaluate_gcn(adj, x, y, tr, va, te, seeds=[])
