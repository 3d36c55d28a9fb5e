"""What an attack may see: without ``allow_test_labels`` no graph attack (Metattack, Meta-PGD, PR-BCD,
DICE in the study) and no VGAE attack can read the labels of held-out nodes / pairs."""
import jax
import numpy as np
import pytest

from poisonjax.core.validation import PoisonJaxInputError
from poisonjax.data.synthetic import sbm_graph
from poisonjax.graph import attacks as A
from poisonjax.graph import vgae_attacks as V
from poisonjax.graph.splits import LinkSplit, link_split


def _graph(n=60, seed=0):
    adj, y = sbm_graph(n, 3, 0.2, 0.02, seed=seed)
    rng = np.random.default_rng(seed)
    x = (rng.random((n, 8)) < 0.3).astype(np.float32)
    tr = np.sort(rng.permutation(n)[: n // 4])
    un = np.setdiff1d(np.arange(n), tr)
    y_scrambled = y.copy()
    y_scrambled[un] = (y[un] + 1 + rng.integers(0, 2, len(un))) % 3  # every held-out label changed
    return adj, x, y, y_scrambled, tr, un


def test_meta_problem_reads_only_training_labels():
    adj, x, y, ys, tr, un = _graph()
    key = jax.random.PRNGKey(0)
    p1 = A.make_meta_problem(adj, x, y, tr, un, key=key)
    p2 = A.make_meta_problem(adj, x, ys, tr, un, key=key)
    np.testing.assert_array_equal(np.asarray(p1.labels), np.asarray(p2.labels))
    cfg = A.MetattackConfig(budget=6, num_classes=3, inner_steps=5, flips_per_step=3, ll_constraint=False)
    s1 = A.run_metattack(p1, cfg, key, progress=False)
    s2 = A.run_metattack(p2, cfg, key, progress=False)
    np.testing.assert_array_equal(np.asarray(s1.flips), np.asarray(s2.flips))
    # the oracle needs the flag, and then it does see the held-out labels
    with pytest.raises(PoisonJaxInputError, match="allow_test_labels"):
        A.make_meta_problem(adj, x, y, tr, un, self_labels="true")
    o1 = A.make_meta_problem(adj, x, y, tr, un, self_labels="true", allow_test_labels=True)
    o2 = A.make_meta_problem(adj, x, ys, tr, un, self_labels="true", allow_test_labels=True)
    assert np.any(np.asarray(o1.labels) != np.asarray(o2.labels))


def test_prbcd_problem_reads_only_training_labels_and_accepts_sparse_features():
    import scipy.sparse as sp
    adj, x, y, ys, tr, un = _graph()
    key = jax.random.PRNGKey(0)
    p1 = A.make_prbcd_problem(adj, x, y, tr, un, key=key)
    p2 = A.make_prbcd_problem(adj, sp.csr_matrix(x), ys, tr, un, key=key)  # scipy features as well
    np.testing.assert_array_equal(np.asarray(p1.labels), np.asarray(p2.labels))
    np.testing.assert_array_equal(np.asarray(p1.x), np.asarray(p2.x))
    with pytest.raises(PoisonJaxInputError, match="allow_test_labels"):
        A.make_prbcd_problem(adj, x, y, tr, un, self_labels="true")


@pytest.mark.slow
@pytest.mark.extended  # CI runs it after the main suite while time allows (.ci/run)
def test_one_call_metattack_does_not_depend_on_held_out_labels():
    import poisonjax.graph as pg
    adj, x, y, ys, tr, un = _graph(n=45, seed=1)
    kw = dict(flips_per_step=4, inner_steps=5, seed=0)
    a1 = pg.metattack(adj, x, y, tr, 8, **kw)
    a2 = pg.metattack(adj, x, ys, tr, 8, **kw)
    assert (a1 != a2).nnz == 0 and (a1 != adj).nnz == 16  # 8 undirected flips


def test_vgae_attack_problems_do_not_depend_on_test_pair_labels():
    adj, _ = sbm_graph(80, 2, 0.2, 0.02, seed=0)
    split = link_split(adj, 0.05, 0.10, seed=0)
    # the held-out pairs with their labels swapped: an attack without the flag must not notice
    swapped = LinkSplit(split.adj_train, split.train_pos, split.train_neg, split.val_neg, split.val_pos,
                        split.test_neg, split.test_pos)
    x = np.eye(80, dtype=np.float32)
    z = np.random.default_rng(0).normal(size=(80, 4))
    for obj in ("train", "self"):
        pseudo = V.pseudo_links(z, split, seed=0)
        assert pseudo[0].shape == V.pseudo_links(z, swapped, seed=0)[0].shape
        pa = V.make_vgae_problem(split, x, *V.objective_pairs(split, obj, pseudo))
        pb = V.make_vgae_problem(swapped, x, *V.objective_pairs(swapped, obj, V.pseudo_links(z, swapped, seed=0)))
        for f in ("allowed", "pairs", "pair_labels", "a_clean"):
            np.testing.assert_array_equal(np.asarray(getattr(pa, f)), np.asarray(getattr(pb, f)), err_msg=f)
    with pytest.raises(PoisonJaxInputError, match="allow_test_labels"):
        V.objective_pairs(split, "test")
    import poisonjax.graph as pg
    with pytest.raises(PoisonJaxInputError, match="allow_test_labels"):
        pg.vgae_attack(split, None, 4, objective="test")
