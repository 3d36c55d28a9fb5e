"""core.autoregressive.generate: constrained autoregressive generation (caps, gaps, shared counts,
forced tokens, lengths, prefixes, per-sequence aux) -- moved here from tests/recsys."""
import jax
import jax.numpy as jnp
import numpy as np

from poisonjax.core import autoregressive


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
