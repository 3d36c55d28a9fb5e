"""DDSP/baseline generators and bad-input errors (core.autoregressive is tested in tests/core)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from poisonjax.core.validation import PoisonJaxInputError
from poisonjax.recsys import attacks as A
from poisonjax.recsys.models import make_model


@pytest.fixture(scope="module")
def surrogate():
    V, L = 40, 8
    model = make_model("sasrec", V, L, hidden=16, num_blocks=1, dropout=0.0)
    params = model.init(jax.random.PRNGKey(0), jnp.ones((1, L), jnp.int32), True)
    rng = np.random.default_rng(0)
    seqs = rng.integers(1, V + 1, (50, L)).astype(np.int32)
    return A.build_surrogate(model, params, seqs, seqs, num_preferred=5)


def test_ddsp_and_yue_generators(surrogate):
    target, S, T = 7, 24, 8
    ddsp = np.asarray(A.surrogate_generate(surrogate, target, S, T, jax.random.PRNGKey(1)))
    assert ddsp.shape == (S, T) and ddsp.min() >= 1 and ddsp.max() <= 40
    assert ((ddsp == target).sum(1) == 1).all()                     # default: the target once per fake user
    assert (np.nonzero(ddsp == target)[1] >= (T - 1) // 2).all()    # ... in the second half
    assert all(np.unique(r).size == T for r in ddsp)                # no item twice: distinct ratio 1, as real users
    share = np.asarray(A.surrogate_generate(surrogate, target, S, T, jax.random.PRNGKey(1), max_target_per_seq=0))
    assert ((share == target).sum(1) == 2).all()                    # cap ceil(0.25 * 8) = 2, always used
    assert all(np.diff(np.nonzero(r == target)[0]).min() >= 2 for r in share)
    other = [r[r != target] for r in share]
    assert all(np.unique(o).size == o.size for o in other)          # no reuse within a sequence
    lens = np.array([2, 3, 8, 5] * (S // 4))
    var = np.asarray(A.surrogate_generate(surrogate, target, S, T, jax.random.PRNGKey(1), lengths=lens))
    assert ((var > 0).sum(1) == lens).all() and ((var == target).sum(1) == 1).all()
    assert (var[np.arange(T)[None] >= lens[:, None]] == 0).all()
    nodiv = np.asarray(A.surrogate_generate(surrogate, target, S, T, jax.random.PRNGKey(1), diversity=False))
    assert (nodiv == target).mean() > (ddsp == target).mean()
    yue = np.asarray(A.yue_generate(surrogate, target, S, T, jax.random.PRNGKey(2)))
    assert (yue[:, 1::2] == target).all() and (yue[:, 0::2] != target).all()
    yv = np.asarray(A.yue_generate(surrogate, target, S, T, jax.random.PRNGKey(2), lengths=lens))
    assert ((yv > 0).sum(1) == lens).all() and (yv[:, :2] == yue[:, :2]).all()
    # deterministic given the key
    again = np.asarray(A.surrogate_generate(surrogate, target, S, T, jax.random.PRNGKey(1)))
    assert (again == ddsp).all()


def test_dual_objective_keeps_preferred_items_and_plain_does_not(surrogate):
    E = surrogate.E
    t, pref = 7, jnp.array([3, 4, 5])
    g_dual = jax.grad(A.dual_promotion_loss, argnums=1)(E[t], E, pref, t)
    assert float(jnp.abs(g_dual[pref]).max()) == 0.0               # preferred items are not pushed
    g_plain = jax.grad(lambda E_: A.plain_promotion_loss(E_[t], E_, surrogate.H[0], t))(E)
    assert float(jnp.abs(g_plain[pref]).max()) > 0.0                # the plain objective moves them


def test_heuristics_and_targets():
    pop = np.array([0, 50, 40, 30, 20, 10, 5, 1, 0, 3])
    assert A.select_targets(pop, 3).tolist() == [1, 5, 8]          # ranks 0, 4, 8 (coldest last)
    assert A.popularity_bucket(1, pop) == "head" and A.popularity_bucket(8, pop) == "cold"
    lens = np.array([2, 5, 8, 3, 8, 6, 4, 7, 8, 2])
    for m in ("random", "popular", "bandwagon"):
        f = A.heuristic_generate(m, 4, 10, 8, pop, seed=0)
        assert f.shape == (10, 8) and ((f == 4).sum(1) >= 1).all() and f.min() >= 1
        f2 = A.heuristic_generate(m, 4, 10, 8, pop, seed=0, max_target_per_seq=2, lengths=lens)
        assert ((f2 > 0).sum(1) == lens).all() and ((f2 == 4).sum(1) >= 2).all()
    assert A.target_cap(8, 1) == 1 and A.target_cap(8, 0, 0.25) == 2 and A.target_cap(3, 5) == 1
    ls = A.sample_lengths([3, 3, 4, 40], 500, seed=0, max_length=10)
    assert set(np.unique(ls)) == {3, 4, 10} and abs((ls == 3).mean() - 0.5) < 0.08
    rep = A.heuristic_generate("repetition", 4, 10, 8, pop)
    assert ((rep[:, 1:] == 4).all())


def test_bad_inputs(surrogate):
    pop = np.ones(41)
    with pytest.raises(PoisonJaxInputError, match="outside the catalog"):
        A.generate_fake("ddsp", surrogate, 41, 5, 8, jax.random.PRNGKey(0), pop)
    with pytest.raises(PoisonJaxInputError, match="outside the catalog"):
        A.heuristic_generate("random", 0, 5, 8, pop)
    for r in (0, 0.0, 1.5, -0.1):
        with pytest.raises(PoisonJaxInputError, match="fake_ratio"):
            A.num_fake_users(1000, r)
    assert A.num_fake_users(1000, 1.0) == 1000 and A.num_fake_users(1000, 0.01) == 10
    with pytest.raises(PoisonJaxInputError, match="fake_length"):
        A.generate_fake("ddsp", surrogate, 3, 5, 1, jax.random.PRNGKey(0), pop)
    with pytest.raises(PoisonJaxInputError, match="method"):
        A.generate_fake("shilling", surrogate, 3, 5, 4, jax.random.PRNGKey(0), pop)
    with pytest.raises(PoisonJaxInputError, match="lengths"):
        A.generate_fake("ddsp", surrogate, 3, 4, 6, jax.random.PRNGKey(0), pop, lengths=[2, 3, 7, 4])


@pytest.mark.parametrize("override,match", [
    (("attack", "fake_ratio", 0.0), "fake_ratio"),
    (("attack", "fake_ratio", 1.5), "fake_ratio"),
    (("attack", "fake_length", 1), "fake_length"),
    (("attack", "length_dist", "gauss"), "length_dist"),
    (("attack", "methods", ("ddsp", "nuke")), "nuke"),
    (("attack", "targets", (12102,)), "outside the catalog"),
])
def test_study_rejects_bad_config_before_training(tmp_path, override, match):
    from configs.ddsp import get_config
    from experiments import ddsp as study
    c = get_config("quick")
    c.num_users = 300
    c.train.epochs = 1
    sec, key, val = override
    c[sec][key] = val
    with pytest.raises(PoisonJaxInputError, match=match):
        study.run(c, tmp_path)


def test_attacker_view_refuses_held_out_items_without_the_flag():
    """Issue 15 part 1 (recsys): the attacker sees each user's training items; sequences holding the
    held-out validation items are refused unless allow_test_labels=True."""
    from poisonjax.data.sequences import leave_one_out
    seqs = [np.arange(1, 7), np.arange(3, 9)]
    sp = leave_one_out(seqs, 6)
    u, h = A.attacker_view(sp)
    held = {int(s[-1]) for s in seqs} | {int(s[-2]) for s in seqs}
    assert all(not (set(r[r > 0].tolist()) & {int(s[-1]), int(s[-2])}) for r, s in zip(u, seqs)) and held
    with pytest.raises(PoisonJaxInputError, match="allow_test_labels"):
        A.attacker_view(sp, "validation")
    u2, _ = A.attacker_view(sp, "validation", allow_test_labels=True)
    assert int(u2[0][-1]) == int(seqs[0][-2])
