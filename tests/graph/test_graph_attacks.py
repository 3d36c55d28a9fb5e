"""Metattack: exact meta-gradient vs dense autodiff vs finite differences; invariants; strength; resume."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

from poisonjax.core.validation import PoisonJaxInputError
from poisonjax.data.synthetic import sbm_graph
from poisonjax.graph import attacks as A
from poisonjax.graph import models


def _tiny(n=24, seed=0, f=10):
    adj, y = sbm_graph(n, 2, 0.3, 0.05, seed=seed)
    adj = adj.tolil()
    adj[0, :] = 0
    adj[:, 0] = 0
    adj[0, 1] = adj[1, 0] = 1          # node 0 has degree 1 (singleton rule)
    adj[n - 1, :] = 0
    adj[:, n - 1] = 0                  # node n-1 isolated (must be handled)
    adj = adj.tocsr()
    x = (np.random.default_rng(seed).random((n, f)) < 0.3).astype(np.float32)
    idx_tr = np.arange(0, n, 3)
    return adj, x, y, idx_tr, np.setdiff1d(np.arange(n), idx_tr)


@pytest.fixture(scope="module")
def tiny():
    adj, x, y, tr, un = _tiny()
    return adj, x, y, tr, un, A.make_meta_problem(adj, x, y, tr, un, lambda_=0.5, self_labels="true",
                                                  allow_test_labels=True)


# the exact (second-order) case is "extended": CI runs it after the main suite while time allows (.ci/run)
@pytest.mark.parametrize("first_order", [pytest.param(False, marks=[pytest.mark.slow, pytest.mark.extended]), True])
def test_fast_meta_grad_equals_dense_autodiff(tiny, first_order):
    *_, prob = tiny
    cfg = A.MetattackConfig(budget=4, num_classes=2, inner_steps=8, first_order=first_order,
                            flips_per_step=2, ll_constraint=False)
    att = A.metattack(cfg)
    st = att.step(att.init(jax.random.PRNGKey(0), prob), prob)  # some flips in the sparse slots
    assert int(st.n_flips) == 2
    key = jax.random.PRNGKey(7)
    _, gh, s = A.meta_grad_hat(prob, st, cfg, key)
    g_fast = A.adj_grad_from_hat(gh, st.a, s)
    _, g_dense = A.meta_grad_dense(prob, st.a, cfg, key)
    scale = float(jnp.abs(g_dense).max())
    assert scale > 0
    np.testing.assert_allclose(np.asarray(g_fast), np.asarray(g_dense), atol=1e-4 * scale)


def test_exact_meta_grad_matches_finite_differences(tiny):
    *_, prob = tiny
    cfg = A.MetattackConfig(budget=2, num_classes=2, inner_steps=6, ll_constraint=False)
    key = jax.random.PRNGKey(3)
    a = prob.a_clean
    _, g = A.meta_grad_dense(prob, a, cfg, key)
    loss = jax.jit(lambda a_: A.meta_grad_dense(prob, a_, cfg, key)[0])
    eps = 1e-2
    rng = np.random.default_rng(0)
    for i, j in [(0, 1), (2, 5), (3, 3)] + [tuple(rng.integers(0, 24, 2)) for _ in range(3)]:
        e = jnp.zeros_like(a).at[i, j].set(eps)
        fd = (float(loss(a + e)) - float(loss(a - e))) / (2 * eps)
        assert fd == pytest.approx(float(g[i, j]), rel=2e-2, abs=2e-5), (i, j)


def test_metattack_invariants_and_ll_filter():
    adj, x, y, tr, un = _tiny(n=40, seed=2)
    prob = A.make_meta_problem(adj, x, y, tr, un)
    for ll in (False, True):
        cfg = A.MetattackConfig(budget=12, num_classes=2, inner_steps=5, flips_per_step=5, ll_constraint=ll)
        st = A.run_metattack(prob, cfg, jax.random.PRNGKey(0), progress=False)
        pert = A.state_to_adj(st)
        info = A.check_perturbation(adj, pert, 12)
        assert info["n_flips"] == int(st.n_flips)
        assert int(st.n_flips) == 12 if not ll else 0 < int(st.n_flips) <= 12  # the LL test may reject pairs
        flips = np.asarray(st.flips)[: int(st.n_flips)]
        signs = np.asarray(st.flip_sign)[: int(st.n_flips)]
        assert np.all(signs == np.where(adj[flips[:, 0], flips[:, 1]].A1 > 0, -1, 1))
        assert np.all(flips[:, 0] < flips[:, 1])
        assert np.asarray(pert.sum(1)).ravel()[0] >= 1  # the degree-1 node kept its edge or gained one


@pytest.mark.slow
def test_metattack_beats_random_on_gcn_accuracy():
    """Scored on test nodes whose labels the attack never saw: make_meta_problem's default gives it the
    training labels plus self-training labels (it used to default to every true label). One flip per
    meta-gradient: with 8, Meta-Self on attacker labels lands within seed noise of random here."""
    adj, y = sbm_graph(150, 3, 0.1, 0.01, seed=3)
    x = np.eye(150, dtype=np.float32)
    rng = np.random.default_rng(0)
    perm = rng.permutation(150)
    tr, va, te = perm[:30], perm[30:45], perm[45:]
    un = np.setdiff1d(np.arange(150), tr)
    prob = A.make_meta_problem(adj, x, y, tr, un)
    budget = int(0.25 * sp.triu(adj, 1).nnz)
    cfg = A.MetattackConfig(budget=budget, num_classes=3, inner_steps=40, flips_per_step=1, ll_constraint=False)
    st = A.run_metattack(prob, cfg, jax.random.PRNGKey(0), progress=False)
    keys = jax.random.split(jax.random.PRNGKey(1), 4)
    cfg_g = models.GCNConfig(epochs=100)

    def acc(a):
        return float(models.gcn_test_accuracy(models.normalize_adj(jnp.asarray(a.toarray(), jnp.float32)), jnp.asarray(x),
                                              y, tr, va, te, keys, 3, cfg_g).mean())

    clean = acc(adj)
    meta = acc(A.state_to_adj(st))
    rand = acc(A.flips_to_adj(adj, A.random_attack(adj, budget, seed=0)))
    assert meta < rand - 0.03 and meta < clean - 0.05, (clean, rand, meta)


def test_metattack_resume_equals_uninterrupted(tmp_path):
    adj, x, y, tr, un = _tiny(n=30, seed=1)
    prob = A.make_meta_problem(adj, x, y, tr, un, self_labels="true", allow_test_labels=True)
    cfg = A.MetattackConfig(budget=6, num_classes=2, inner_steps=4, flips_per_step=1, ll_constraint=False)
    from poisonjax.core.runner import run
    full = run(A.metattack(cfg), prob, 6, None, key=jax.random.PRNGKey(0), chunk_size=2, progress=False).state
    run(A.metattack(cfg), prob, 4, tmp_path, key=jax.random.PRNGKey(0), chunk_size=2, progress=False,
        config={"c": 1})
    resumed = run(A.metattack(cfg), prob, 6, tmp_path, key=jax.random.PRNGKey(0), chunk_size=2, progress=False,
                  config={"c": 1})
    assert resumed.resumed_from == 4
    np.testing.assert_array_equal(np.asarray(resumed.state.flips), np.asarray(full.flips))
    np.testing.assert_array_equal(np.asarray(resumed.state.a), np.asarray(full.a))


def test_baselines_respect_invariants():
    adj, y = sbm_graph(60, 3, 0.2, 0.02, seed=0)
    forb = np.array([[0, 1], [2, 3]])
    for flips in (A.random_attack(adj, 20, seed=1, forbidden_pairs=forb),
                  A.random_attack(adj, 20, seed=1, mode="remove"),
                  A.dice_attack(adj, y, 20, seed=1, forbidden_pairs=forb)):
        assert len(flips) == 20
        assert not set(map(tuple, np.sort(flips, 1).tolist())) & {(0, 1), (2, 3)}
        A.check_perturbation(adj, A.flips_to_adj(adj, flips), 20)
    d = A.dice_attack(adj, y, 20, seed=1)
    a = np.asarray(adj.toarray())
    removed = d[a[d[:, 0], d[:, 1]] > 0]
    added = d[a[d[:, 0], d[:, 1]] == 0]
    assert np.all(y[removed[:, 0]] == y[removed[:, 1]]) and np.all(y[added[:, 0]] != y[added[:, 1]])


def test_pgd_attack_budget_and_direction():
    adj, y = sbm_graph(50, 2, 0.2, 0.02, seed=0)
    a = jnp.asarray(adj.toarray(), jnp.float32)
    allowed = jnp.asarray(A.upper_pairs_mask(50, None))
    target = jnp.asarray(y[:, None] != y[None, :], jnp.float32)
    loss = lambda a_: jnp.sum(a_ * target)  # rewards inter-class edges
    flips = A.pgd_attack(loss, a, allowed, 15, jax.random.PRNGKey(0), steps=30)
    assert 0 < len(flips) <= 15
    A.check_perturbation(adj, A.flips_to_adj(adj, flips), 15)
    assert np.mean(y[flips[:, 0]] != y[flips[:, 1]]) > 0.9


def test_bad_inputs():
    adj, x, y, tr, un = _tiny()
    with pytest.raises(PoisonJaxInputError, match="features"):
        A.make_meta_problem(adj, x[:5], y, tr, un)
    with pytest.raises(PoisonJaxInputError, match="budget"):
        A.metattack(A.MetattackConfig(budget=0, num_classes=2))
    with pytest.warns(UserWarning, match="symmetric"):
        A.make_meta_problem(sp.triu(adj, 1) * 2.0, x, y, tr, un)


@pytest.mark.slow
def test_metattack_study_writes_outputs(tmp_path):
    from configs.metattack import get_config
    from experiments.metattack import run
    c = get_config("quick")
    c.rate, c.flips_per_step, c.inner_steps, c.n_victims, c.progress = 0.002, 5, 5, 1, False
    c.gcn.epochs = 20
    r = run(c, tmp_path)
    assert r["n_perturbations"] == 10 and r["test_acc_reference"] is None
    adj = sp.load_npz(tmp_path / "perturbed_adj.npz")
    assert adj.shape == (2485, 2485)
    for f in ("results.json", "config.json", "accuracy.png", "report.md"):
        assert (tmp_path / f).exists(), f


@pytest.mark.slow  # CI budget: ~30-100 s; the property is also covered by faster tests
def test_meta_pgd_study_resumes_and_reports(tmp_path):
    """attack=meta_pgd end to end on Cora at a tiny budget: greedy warm start, PGD, sampling and
    selection; a second run resumes both checkpoints and reproduces the graph; a bad init path is refused."""
    from configs.metattack import get_config
    from experiments.metattack import run
    c = get_config("quick")
    c.attack, c.rate, c.flips_per_step, c.inner_steps, c.n_victims, c.progress = "meta_pgd", 0.002, 5, 5, 1, False
    c.gcn.epochs = 20
    c.pgd.steps, c.pgd.samples, c.pgd.select_seeds = 3, 2, 1
    c.pgd.lr = 2.0  # the fixed-lr path (lr="auto" is tested in tests/graph/test_metattack_study.py)
    r = run(c, tmp_path)
    assert r["n_perturbations"] <= 10 and r["meta_gradients"] == 2 + 3
    cands = r["meta_pgd"]["candidates"]
    assert [x["name"] for x in cands] == ["top_b", "sample_0", "sample_1", "init"]
    assert r["meta_pgd"]["selected"] == min(cands, key=lambda x: x["proxy_acc"])["name"]
    assert r["test_acc_init"] is not None
    adj1 = sp.load_npz(tmp_path / "perturbed_adj.npz")
    r2 = run(c, tmp_path)
    assert r2["meta_pgd"]["pgd_resumed_from_step"] == 3 and r2["meta_pgd"]["greedy_resumed_from_step"] == 3
    assert (sp.load_npz(tmp_path / "perturbed_adj.npz") != adj1).nnz == 0
    c.pgd.steps = 2  # other PGD settings: a new PGD folder, the greedy stage is reused
    r3 = run(c, tmp_path)
    assert r3["meta_pgd"]["pgd_resumed_from_step"] is None and r3["meta_pgd"]["greedy_resumed_from_step"] == 3
    assert r3["meta_pgd"]["pgd_dir"] != r2["meta_pgd"]["pgd_dir"]
    c.pgd.init = str(tmp_path / "warm_start_adj.npz")  # the saved greedy graph as a warm start elsewhere
    r4 = run(c, tmp_path / "from_file")
    assert r4["test_acc_init"] == r3["test_acc_init"] and r4["meta_pgd"]["greedy_seconds"] == 0.0
    c.pgd.init = str(tmp_path / "missing.npz")
    with pytest.raises(FileNotFoundError, match="pgd.init"):
        run(c, tmp_path / "other")
    c.pgd.init, c.pgd.loss = "none", "hinge"
    with pytest.raises(Exception, match="pgd.loss"):
        run(c, tmp_path / "other2")


@pytest.mark.slow
def test_meta_pgd_cora_5pct_as_strong_as_prognn(tmp_path):
    """The issue's target on real data: our attack on Cora at 5% lowers GCN accuracy at least as much
    as Pro-GNN's DeepRobust-made Metattack graph, under the same split and GCN training (5 seeds).
    Greedy Meta-Self alone (the same algorithm as DeepRobust's; our meta-gradient equals theirs to
    1e-8) gives 0.785 ± 0.004 against Pro-GNN's 0.774 ± 0.004, so the study's ``meta_pgd`` attack
    (Meta-PGD warm-started from it, attacker-side selection) is what meets the target; its warm start
    is reported too and must be weaker. About 12 minutes on 2 free cores."""
    from configs.metattack import get_config
    from experiments.metattack import run
    c = get_config("paper")
    c.attack, c.rate, c.progress = "meta_pgd", 0.05, False
    r = run(c, tmp_path)
    ours, ref, clean, init = r["test_acc_poisoned"], r["test_acc_reference"], r["test_acc_clean"], r["test_acc_init"]
    assert r["n_perturbations"] <= 253
    assert ours["mean"] < clean["mean"] - 0.05, (ours, clean)
    assert ours["mean"] <= ref["mean"], (ours, ref)
    assert ours["mean"] < init["mean"], (ours, init)


def test_gcn_deeprobust_init():
    """DeepRobust's GraphConvolution init: weights and biases in U(+-1/sqrt(out)); an unknown init is refused."""
    x = jnp.ones((4, 300))
    a = jnp.eye(4)
    p = models.GCN(hidden=16, num_classes=3, weight_init="deeprobust").init(jax.random.PRNGKey(0), a, x)["params"]
    assert float(jnp.abs(p["w1"]).max()) <= 0.25 and float(jnp.abs(p["b1"]).max()) > 0
    assert float(jnp.abs(p["w2"]).max()) <= 1 / np.sqrt(3) and float(jnp.abs(p["b2"]).max()) > 0
    g = models.GCN(hidden=16, num_classes=3).init(jax.random.PRNGKey(0), a, x)["params"]
    assert float(jnp.abs(g["b1"]).max()) == 0  # Glorot default: zero biases
    with pytest.raises(ValueError, match="init"):
        models.train_gcn(a, x, jnp.zeros(4, jnp.int32), jnp.arange(2), jnp.arange(2, 4), jax.random.PRNGKey(0), 3,
                         models.GCNConfig(weight_init="kaiming"))
