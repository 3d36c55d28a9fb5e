"""Autoregressive generator constraints, DDSP/baseline generators and bad-input errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from poisonjax.core import autoregressive
from poisonjax.core.validation import PoisonJaxInputError
from poisonjax.recsys import attacks as A
from poisonjax.recsys.models import make_model


def _const_scores(pref):
    pref = jnp.asarray(pref, jnp.float32)
    return lambda prefix, t, k, aux: pref


def test_generate_respects_caps_gaps_and_shared_counts():
    V, S, T = 12, 30, 8
    pref = jnp.arange(V, dtype=jnp.float32)          # always prefers the largest id
    caps = jnp.full((V,), 1).at[V - 1].set(3)        # token 11 up to 3x per sequence, others once
    gaps = jnp.ones((V,), jnp.int32).at[V - 1].set(2)
    res = autoregressive.generate(_const_scores(pref), S, T, V, jax.random.PRNGKey(0), num_candidates=V,
                                  token_caps=caps, min_gap=gaps, max_global=20,
                                  banned=jnp.zeros((V,), bool).at[0].set(True),
                                  global_exempt=jnp.zeros((V,), bool).at[V - 1].set(True))
    tok = np.asarray(res.tokens)
    assert tok.shape == (S, T) and (tok != 0).all()
    assert ((tok == V - 1).sum(1) == 3).all()                        # the favourite, capped at 3
    pos = [np.nonzero(r == V - 1)[0] for r in tok]
    assert all(np.diff(p).min() >= 2 for p in pos)                   # never twice in a row
    for r in tok:                                                    # others at most once per sequence
        vals, cnt = np.unique(r[r != V - 1], return_counts=True)
        assert cnt.max() == 1
    counts = np.bincount(tok.ravel(), minlength=V)
    assert (np.asarray(res.counts) == counts).all()
    # shared cap: a token chosen simultaneously may overshoot within one step, never across steps
    assert counts[:V - 1].max() <= 20 + S


def test_generate_without_constraints_is_greedy_and_forced_tokens_win():
    V = 6
    res = autoregressive.generate(_const_scores(jnp.arange(V) * 1.0), 4, 5, V, jax.random.PRNGKey(0),
                                  num_candidates=3, forced=jnp.array([-1, 2, -1, 2, -1]),
                                  first_tokens=jnp.array([1, 1, 3, 3]))
    assert np.asarray(res.tokens).tolist() == [[1, 2, 5, 2, 5]] * 2 + [[3, 2, 5, 2, 5]] * 2


def test_generate_with_lengths_pads_and_keeps_counts_exact():
    V, S, T = 9, 5, 6
    lengths = jnp.array([2, 6, 3, 6, 4])
    res = autoregressive.generate(_const_scores(jnp.arange(V) * 1.0), S, T, V, jax.random.PRNGKey(0), num_candidates=V,
                                  token_caps=jnp.ones((V,), jnp.int32), banned=jnp.zeros((V,), bool).at[0].set(True),
                                  lengths=lengths)
    tok = np.asarray(res.tokens)
    live = np.arange(T)[None] < np.asarray(lengths)[:, None]
    assert (tok[~live] == 0).all() and (tok[live] > 0).all()
    assert tok[0].tolist() == [8, 7, 0, 0, 0, 0] and tok[1].tolist() == [8, 7, 6, 5, 4, 3]
    counts = np.bincount(tok[live], minlength=V)
    assert (np.asarray(res.counts) == counts).all() and counts[0] == 0     # padding never counted


def test_generate_uses_prefix_and_per_seq_aux():
    # score = prefer (last token + aux) mod V: a deterministic chain per sequence
    V = 10

    def score(prefix, t, k, aux):
        last = jnp.where(t > 0, prefix[jnp.maximum(t - 1, 0)], aux)
        return -jnp.abs(jnp.arange(V) - (last + 1) % V).astype(jnp.float32)

    res = autoregressive.generate(score, 2, 4, V, jax.random.PRNGKey(0), num_candidates=V,
                                  per_seq=jnp.array([2, 6]))
    assert np.asarray(res.tokens).tolist() == [[3, 4, 5, 6], [7, 8, 9, 0]]


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
