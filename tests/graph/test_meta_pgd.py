"""Meta-PGD: dense weighted meta-gradient vs autodiff, attack losses, relaxation, sampling, selection."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.sparse as sp

from poisonjax.core.validation import PoisonJaxInputError
from poisonjax.data.synthetic import sbm_graph
from poisonjax.graph import attacks as A
from poisonjax.graph import models

from tests.graph.test_graph_attacks import _tiny


@pytest.fixture(scope="module")
def tiny():
    adj, x, y, tr, un = _tiny()
    return adj, x, y, tr, un, A.make_meta_problem(adj, x, y, tr, un, lambda_=0.5, self_labels="true",
                                                  allow_test_labels=True)


@pytest.mark.parametrize("loss", ["ce", "tanh_margin", "mce"])
def test_dense_weighted_meta_grad_equals_autodiff(tiny, loss):
    *_, prob = tiny
    cfg = A.MetattackConfig(budget=4, num_classes=2, inner_steps=8, ll_constraint=False, loss=loss)
    rng = np.random.default_rng(0)
    p = jnp.asarray(np.triu(rng.random(prob.a_clean.shape) * 0.3, 1), jnp.float32) * prob.allowed
    a = A.relaxed_adj(prob.a_clean, p)  # weighted, symmetric
    key = jax.random.PRNGKey(5)
    l_fast, gh, s = A.meta_grad_hat_dense(prob, a, cfg, key)
    g_fast = A.adj_grad_from_hat(gh, a, s)
    l_ref, g_ref = A.meta_grad_dense(prob, a, cfg, key)
    assert float(l_fast) == pytest.approx(float(l_ref), rel=1e-5)
    scale = float(jnp.abs(g_ref).max())
    assert scale > 0
    np.testing.assert_allclose(np.asarray(g_fast), np.asarray(g_ref), atol=1e-4 * scale)


def test_sparse_path_supports_attack_losses(tiny):
    *_, prob = tiny
    cfg = A.MetattackConfig(budget=4, num_classes=2, inner_steps=6, ll_constraint=False, loss="tanh_margin")
    att = A.metattack(cfg)
    st = att.init(jax.random.PRNGKey(0), prob)
    key = jax.random.PRNGKey(2)
    _, gh, s = A.meta_grad_hat(prob, st, cfg, key)
    _, g_ref = A.meta_grad_dense(prob, st.a, cfg, key)
    g = A.adj_grad_from_hat(gh, st.a, s)
    np.testing.assert_allclose(np.asarray(g), np.asarray(g_ref), atol=1e-4 * float(jnp.abs(g_ref).max()))


def test_attack_losses_match_definitions():
    rng = np.random.default_rng(1)
    z = jnp.asarray(rng.normal(size=(9, 4)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 4, 9))
    w = jnp.asarray(rng.random(9), jnp.float32)
    lp = np.asarray(jax.nn.log_softmax(z))
    yy = np.asarray(y)
    ce = -lp[np.arange(9), yy]
    other = np.array([np.max(np.delete(lp[i], yy[i])) for i in range(9)])
    np.testing.assert_allclose(float(A.attack_loss(z, y, w, "ce")), np.sum(np.asarray(w) * ce), rtol=1e-5)
    np.testing.assert_allclose(float(A.attack_loss(z, y, w, "tanh_margin")),
                               -np.sum(np.asarray(w) * np.tanh(lp[np.arange(9), yy] - other)), rtol=1e-5)
    correct = np.argmax(np.asarray(z), 1) == yy
    np.testing.assert_allclose(float(A.attack_loss(z, y, w, "mce")), np.sum((np.asarray(w) * ce)[correct]),
                               rtol=1e-5)
    with pytest.raises(PoisonJaxInputError, match="loss"):
        A.attack_loss(z, y, w, "hinge")


def test_meta_pgd_raises_attack_loss_and_stays_feasible(tiny):
    adj, *_, prob = tiny
    budget = 6
    cfg = A.MetattackConfig(budget=budget, num_classes=2, inner_steps=8, ll_constraint=False, loss="tanh_margin")
    opt = A.meta_pgd(cfg, steps=15)
    st = opt.init(jax.random.PRNGKey(0), prob)
    step = jax.jit(opt.step)
    losses = []
    for _ in range(15):
        st = step(st, prob)
        losses.append(float(st.loss))
        p = np.asarray(st.p)
        assert p.min() >= -1e-6 and p.max() <= 1 + 1e-6 and p.sum() <= budget + 1e-3
        assert np.all(p[~np.asarray(prob.allowed)] == 0)  # upper triangle of allowed pairs only
    assert np.mean(losses[-3:]) > losses[0]
    a = np.asarray(prob.a_clean)
    sets = A.sample_flip_sets(p, a, budget, samples=5, seed=0)
    assert len(sets) == 6
    for f in sets:
        assert len(f) <= budget
        A.check_perturbation(adj, A.flips_to_adj(adj, f), budget)


def test_meta_pgd_warm_start_and_bad_input(tiny):
    *_, prob = tiny
    cfg = A.MetattackConfig(budget=3, num_classes=2, inner_steps=4, ll_constraint=False)
    p0 = A.flips_to_mask(prob.a_clean.shape[0], np.array([[3, 2], [4, 9], [5, 7]]))
    assert p0[2, 3] == 1 and p0[3, 2] == 0 and p0.sum() == 3
    st = A.meta_pgd(cfg, 2, p0=p0).init(jax.random.PRNGKey(0), prob)
    assert float(st.p.sum()) == 3
    with pytest.raises(PoisonJaxInputError, match="steps"):
        A.meta_pgd(cfg, 0)
    with pytest.raises(PoisonJaxInputError, match="lr"):
        A.meta_pgd(cfg, 3, lr=0.0)
    with pytest.raises(PoisonJaxInputError, match="loss"):
        A.meta_pgd(cfg._replace(loss="hinge"), 3)
    with pytest.raises(PoisonJaxInputError, match="loss"):
        A.metattack(cfg._replace(loss="hinge"))
    a = np.asarray(prob.a_clean)
    with pytest.raises(PoisonJaxInputError, match="samples"):
        A.sample_flip_sets(p0, a, 3, samples=-1)
    with pytest.raises(PoisonJaxInputError, match="p must be"):
        A.sample_flip_sets(p0[:5], a, 3, samples=1)


def test_select_flip_set_takes_the_lowest_proxy():
    adj, y = sbm_graph(60, 3, 0.25, 0.01, seed=4)
    x = np.eye(60, dtype=np.float32)
    tr, va = np.arange(0, 60, 4), np.arange(1, 60, 4)
    un = np.setdiff1d(np.arange(60), tr)
    # a strong set (DICE with a budget of twice the edge count) vs. a set of no flips
    strong = A.dice_attack(adj, y, 2 * int(sp.triu(adj, 1).nnz), seed=0)
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    best, proxy = A.select_flip_set(adj, [np.zeros((0, 2), np.int64), strong], x, y, tr, va, un, keys, 3,
                                    models.GCNConfig(epochs=60))
    assert proxy.shape == (2,) and best == int(np.argmin(proxy)) == 1 and proxy[1] < proxy[0]
    with pytest.raises(PoisonJaxInputError, match="flip_sets"):
        A.select_flip_set(adj, [], x, y, tr, va, un, keys, 3)


def _auto_choice(y, tmp_path=None):
    """The study's lr / steps auto-selection pipeline from the full label vector ``y``: self-training labels
    (from the training labels only), the Meta-Self problem, the vmapped PGD runs and the attacker's scores."""
    from poisonjax.graph.attacks.metapgd import tune_meta_pgd
    adj, _ = sbm_graph(60, 3, 0.25, 0.01, seed=4)
    x = np.eye(60, dtype=np.float32)
    tr, va = np.arange(0, 60, 4), np.arange(1, 60, 4)
    un = np.setdiff1d(np.arange(60), tr)
    key = jax.random.PRNGKey(0)
    sl = A.self_training_labels(adj, x, y, tr, None, key, epochs=40, surrogate="prognn", num_classes=3)
    prob = A.make_meta_problem(adj, x, y, tr, un, sl)
    cfg = A.MetattackConfig(budget=12, num_classes=3, inner_steps=6, ll_constraint=False, loss="tanh_margin")
    return tune_meta_pgd(prob, cfg, (0.5, 2.0, 8.0), (2, 4), key, adj, x, sl, tr, va, un, 3, select_seeds=1,
                         gcn_cfg=models.GCNConfig(epochs=30), workdir=tmp_path, chunk_size=2, progress=False)


def test_meta_pgd_auto_lr_never_reads_test_labels(tmp_path):
    """pgd.lr=auto: the choice and every score are the same when the labels of the non-training nodes are
    permuted (the attacker never sees them); the scores cover the whole lr x steps grid; a rerun resumes."""
    _, y = sbm_graph(60, 3, 0.25, 0.01, seed=4)
    tr = np.arange(0, 60, 4)
    test = np.setdiff1d(np.arange(60), tr)
    y2 = y.copy()
    y2[test] = np.random.default_rng(1).permutation(y[test])
    y2[test[:5]] = (y2[test[:5]] + 1) % 3  # and some labels changed outright
    assert (y2 != y).any()
    a, b = _auto_choice(y), _auto_choice(y2, tmp_path)
    assert (a["lr"], a["steps"]) == (b["lr"], b["steps"])
    assert [r["score"] for r in a["scores"]] == [r["score"] for r in b["scores"]]
    assert {(r["lr"], r["steps"]) for r in a["scores"]} == {(l, s) for l in (0.5, 2.0, 8.0) for s in (2, 4)}
    best = min(a["scores"], key=lambda r: (r["score"], r["steps"], r["lr"]))
    assert (best["lr"], best["steps"]) == (a["lr"], a["steps"])
    np.testing.assert_array_equal(a["p"], b["p"])
    c = _auto_choice(y2, tmp_path)  # resumed from the saved scores: nothing is recomputed
    assert c["resumed_from"] == 4 and c["pgd_seconds"] == 0.0 and (c["lr"], c["steps"]) == (a["lr"], a["steps"])


def test_meta_pgd_lr_batch_matches_single_runs(tiny):
    *_, prob = tiny
    cfg = A.MetattackConfig(budget=4, num_classes=2, inner_steps=4, ll_constraint=False, loss="tanh_margin")
    from poisonjax.core.runner import run
    from poisonjax.graph.attacks.metapgd import meta_pgd_lr_batch
    key = jax.random.PRNGKey(3)
    batch = run(meta_pgd_lr_batch(cfg, (0.5, 2.0)), prob, 3, key=key, progress=False).state
    one = run(A.meta_pgd(cfg, 3, lr=2.0), prob, 3, key=key, progress=False).state  # the batch's second run
    np.testing.assert_allclose(np.asarray(batch.p[1]), np.asarray(one.p), atol=1e-5)
    assert not np.allclose(np.asarray(batch.p[0]), np.asarray(one.p), atol=1e-3)  # lr 0.5 moved less


def test_pgd_lr_and_steps_config_errors():
    from configs.metattack import get_config
    from experiments.metattack import pgd_candidates
    c = get_config("paper").pgd
    lrs, steps, tuned = pgd_candidates(c)  # defaults: lr auto over lr_grid, 80 steps
    assert lrs == (1.0, 2.0, 4.0) and steps == (80,) and tuned
    c.lr, c.steps = "2", "auto"   # the CLI passes numbers of a str field as text
    assert pgd_candidates(c) == ((2.0,), (40, 80, 160), True)
    c.steps, c.steps_grid = 80, ()
    assert pgd_candidates(c) == ((2.0,), (80,), False)
    for bad in (-1, 0, "foo", float("nan")):
        c.lr = bad
        with pytest.raises(PoisonJaxInputError, match="pgd.lr"):
            pgd_candidates(c)
    c.lr = "auto"
    c.lr_grid = (1.0, -2.0)
    with pytest.raises(PoisonJaxInputError, match="pgd.lr_grid"):
        pgd_candidates(c)
    c.lr_grid = (1.0,)
    for bad in ("many", 0, -3):
        c.steps = bad
        with pytest.raises(PoisonJaxInputError, match="pgd.steps"):
            pgd_candidates(c)
    c.steps, c.steps_grid = 80, (40, 0)
    with pytest.raises(PoisonJaxInputError, match="pgd.steps_grid"):
        pgd_candidates(c)
    from poisonjax.graph.attacks.metapgd import check_pgd_lr, holdout_split
    with pytest.raises(PoisonJaxInputError, match="holdout_frac"):
        holdout_split(np.arange(10), 1.5)
    fit, held = holdout_split(np.arange(10), 0.3, seed=0)
    assert len(held) == 3 and len(fit) == 7 and not set(fit) & set(held)
    assert check_pgd_lr("lr", "0.5") == 0.5
    with pytest.raises(PoisonJaxInputError, match="lr"):
        check_pgd_lr("lr", True)
