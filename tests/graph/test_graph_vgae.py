"""VGAE attacks: the meta attack lowers test AUC more than random and DICE; flags and invariants."""
import jax
import numpy as np
import pytest

from poisonjax.core.validation import PoisonJaxInputError
from poisonjax.data.synthetic import sbm_graph
from poisonjax.graph import attacks as A
from poisonjax.graph import vgae_attacks as V
from poisonjax.graph.models import VGAEConfig
from poisonjax.graph.splits import link_split

VIC = VGAEConfig(epochs=100, lr=0.01)


@pytest.fixture(scope="module")
def setup():
    adj, lab = sbm_graph(120, 3, 0.15, 0.01, seed=0)
    x = np.eye(120, dtype=np.float32)
    split = link_split(adj, seed=0)
    budget = int(0.2 * len(split.train_pos))
    keys = jax.random.split(jax.random.PRNGKey(1), 4)
    return adj, lab, x, split, budget, keys


def _auc(setup, flips):
    adj, lab, x, split, budget, keys = setup
    pert = A.flips_to_adj(split.adj_train, flips)
    A.check_perturbation(split.adj_train, pert, budget)
    held = split.held_out_pairs()
    assert np.all(np.asarray(pert[held[:, 0], held[:, 1]]).ravel() == np.asarray(
        split.adj_train[held[:, 0], held[:, 1]]).ravel()), "a held-out pair was flipped"
    auc, _ = V.evaluate_vgae(pert, x, split, keys, VIC, pad_nnz=2000)
    return float(np.mean(auc))


def test_meta_attack_beats_random_and_dice(setup):
    adj, lab, x, split, budget, keys = setup
    pairs, labels = V.objective_pairs(split, "train")
    prob = V.make_vgae_problem(split, x, pairs, labels)
    cfg = V.VGAEAttackConfig(budget=budget, inner_steps=100, flips_per_step=-(-budget // 4), victim=VIC)
    meta = _auc(setup, V.run_vgae_meta_attack(prob, cfg, jax.random.PRNGKey(3), progress=False))
    rand = _auc(setup, A.random_attack(split.adj_train, budget, seed=0, forbidden_pairs=split.held_out_pairs()))
    dice = _auc(setup, A.dice_attack(split.adj_train, lab, budget, seed=0, forbidden_pairs=split.held_out_pairs()))
    assert meta < dice - 0.02 and meta < rand - 0.04, (meta, dice, rand)


def test_oneshot_and_test_label_flag(setup):
    adj, lab, x, split, budget, keys = setup
    with pytest.raises(PoisonJaxInputError, match="allow_test_labels"):
        V.objective_pairs(split, "test")
    with pytest.raises(PoisonJaxInputError, match="pseudo"):
        V.objective_pairs(split, "self")
    pairs, labels = V.objective_pairs(split, "test", allow_test_labels=True)
    assert len(pairs) == len(split.test_pos) + len(split.test_neg)
    prob = V.make_vgae_problem(split, x, *V.objective_pairs(split, "train"))
    flips = V.vgae_oneshot(prob, budget, jax.random.PRNGKey(0), VIC)
    a = split.adj_train.toarray()
    n_add = int(np.sum(a[flips[:, 0], flips[:, 1]] == 0))
    assert len(flips) <= budget and n_add == -(-budget // 2)
    _auc(setup, flips)  # invariants (budget, symmetry, no singleton, held-out pairs untouched)


def test_pseudo_links_use_no_training_pairs(setup):
    adj, lab, x, split, budget, keys = setup
    z = np.random.default_rng(0).normal(size=(120, 4))
    pairs, labels = V.pseudo_links(z, split, n_pairs=50)
    n = 120
    codes = set((pairs[:, 0] * n + pairs[:, 1]).tolist())
    train = set((np.concatenate([split.train_pos, split.train_neg]) @ np.array([n, 1])).tolist())
    assert not codes & train and labels.sum() == 50 and np.all(pairs[:, 0] < pairs[:, 1])


@pytest.mark.slow
def test_vgae_study_writes_outputs(tmp_path):
    from configs.vgae_attack import get_config
    from experiments.vgae_attack import run
    c = get_config("quick")
    c.attacks = ("meta_self", "random", "dice")
    c.inner_steps, c.n_victims, c.progress = 20, 1, False
    c.victim.epochs = 20
    r = run(c, tmp_path)
    for f in ("results.json", "config.json", "perturbed_adj.npz", "auc_vs_rate.png", "report.md"):
        assert (tmp_path / f).exists(), f
    assert set(r["auc_poisoned"]) == {"meta_self", "random", "dice"} and 0 < r["auc_clean"] <= 1
    with pytest.raises(ValueError, match="unknown variant"):
        get_config("huge")
    # white-box attacks (test labels in the attack loss) are refused before any work unless opted in
    c.attacks = ("a_meta_test", "random")
    with pytest.raises(ValueError, match="allow_test_labels"):
        run(c, tmp_path / "wb")
    wb = get_config("cora_whitebox")
    assert wb.allow_test_labels and wb.oneshot_objective == "test" and "a_meta_test" in wb.attacks


def test_fast_first_order_vgae_grad_equals_dense():
    """The sparse / low-rank first-order path equals the dense first-order meta-gradient (with flips
    already in the state, so the sparse flip slots are exercised)."""
    import jax.numpy as jnp
    adj, _ = sbm_graph(36, 2, 0.25, 0.03, seed=1)
    x = np.random.default_rng(0).random((36, 5)).astype(np.float32)
    split = link_split(adj, seed=1)
    prob = V.make_vgae_problem(split, x, *V.objective_pairs(split, "train"))
    cfg = V.VGAEAttackConfig(budget=6, inner_steps=4, first_order=True, flips_per_step=3,
                             victim=VGAEConfig(epochs=4, lr=0.01), fast=True)
    att = V.vgae_meta_attack(cfg)
    st = att.step(att.init(jax.random.PRNGKey(0), prob), prob)
    assert int(st.n_flips) == 3
    key = jax.random.PRNGKey(5)
    _, g_fast = V.vgae_meta_grad_fast(prob, st, cfg, key)
    _, g_dense = V.vgae_meta_grad(prob, st.a, cfg._replace(fast=False), key)
    scale = float(jnp.abs(g_dense).max())
    assert scale > 0
    np.testing.assert_allclose(np.asarray(g_fast), np.asarray(g_dense), atol=1e-4 * scale)


def test_rank_loss_is_scale_invariant_and_tracks_auc(setup):
    """The "rank" attack loss ignores a rescaling of the embeddings (which changes BCE but not AUC)
    and is larger when the positive pairs score below the negatives."""
    import jax.numpy as jnp
    adj, lab, x, split, budget, keys = setup
    prob = V.make_vgae_problem(split, x, *V.objective_pairs(split, "train"))
    z = jnp.asarray(np.random.default_rng(0).normal(size=(120, 8)), jnp.float32)
    r1, r2 = V.outer_link_loss(z, prob, "rank"), V.outer_link_loss(3.0 * z, prob, "rank")
    b1, b2 = V.outer_link_loss(z, prob, "bce"), V.outer_link_loss(3.0 * z, prob, "bce")
    assert float(r1) == pytest.approx(float(r2), rel=1e-5) and abs(float(b1) - float(b2)) > 0.1
    # embeddings that put linked pairs together (and unlinked apart) have a lower rank loss
    a = jnp.asarray(split.adj_train.toarray())
    z_good = jnp.asarray(np.linalg.eigh(np.asarray(a))[1][:, -8:], jnp.float32) * 10
    assert float(V.outer_link_loss(z_good, prob, "rank")) < float(r1)
    assert np.all(np.asarray(prob.pair_labels)[np.asarray(prob.rank_pos)] == 1)
    assert np.all(np.asarray(prob.pair_labels)[np.asarray(prob.rank_neg)] == 0)
