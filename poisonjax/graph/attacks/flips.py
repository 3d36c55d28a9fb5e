r"""Flip machinery shared by the graph structure attacks: applying and checking edge flips, the
degree power-law likelihood-ratio filter, and greedy budgeted flipping as an
:class:`~poisonjax.core.types.AttackOptimizer`.

Every attack returns symmetric, unweighted edge flips ``[k, 2]`` of the clean adjacency :math:`A`
within a budget :math:`B` (:func:`poisonjax.graph.splits.budget_from_rate`); none adds a self-loop,
none removes the last edge of a node (no singletons), and a pair is flipped at most once
(:func:`check_perturbation` checks this).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from poisonjax.core.types import AttackOptimizer
from poisonjax.core.validation import check_positive_int


# ----------------------------------------------------------------------------------------------
# applying and checking flips
# ----------------------------------------------------------------------------------------------

def flips_to_adj(adj: sp.spmatrix, flips: np.ndarray) -> sp.csr_matrix:
    """Apply undirected flips ``[k, 2]`` (``A_ij <- 1 - A_ij`` for ``(i, j)`` and ``(j, i)``)."""
    a = sp.lil_matrix(adj, dtype=np.float32)
    for i, j in np.asarray(flips, np.int64).reshape(-1, 2):
        v = 1.0 - a[i, j]
        a[i, j] = v
        a[j, i] = v
    out = a.tocsr()
    out.eliminate_zeros()
    return out


def diff_flips(clean: sp.spmatrix, pert: sp.spmatrix) -> np.ndarray:
    """The undirected flips ``[k, 2]`` (``i < j``) that turn ``clean`` into ``pert``."""
    d = sp.triu(abs(sp.csr_matrix(pert, dtype=np.float32) - sp.csr_matrix(clean, dtype=np.float32)), 1).tocoo()
    d.eliminate_zeros()
    return np.stack([d.row, d.col], 1).astype(np.int64)


def check_perturbation(clean: sp.spmatrix, pert: sp.spmatrix, budget: int, allow_singletons: bool = False) -> dict:
    """Check the invariants of a structure attack and return counts; raises ``AssertionError`` if
    ``pert`` is not symmetric 0/1, has a self-loop, exceeds ``budget`` flips, or creates singletons
    (nodes of degree 0 that had degree > 0)."""
    p = sp.csr_matrix(pert, dtype=np.float32)
    assert abs(p - p.T).nnz == 0, "perturbed adjacency is not symmetric"
    assert p.nnz == 0 or set(np.unique(p.data).tolist()) <= {1.0}, "perturbed adjacency is not 0/1"
    assert p.diagonal().sum() == 0, "perturbed adjacency has self-loops"
    flips = diff_flips(clean, p)
    assert len(flips) <= budget, f"{len(flips)} flips exceed the budget {budget}"
    d0 = np.asarray(clean.sum(1)).ravel()
    d1 = np.asarray(p.sum(1)).ravel()
    new_singletons = int(np.sum((d1 == 0) & (d0 > 0)))
    if not allow_singletons:
        assert new_singletons == 0, f"{new_singletons} nodes became singletons"
    added = int(sum(clean[i, j] == 0 for i, j in flips))
    return {"n_flips": int(len(flips)), "added": added, "removed": int(len(flips)) - added,
            "new_singletons": new_singletons}


def upper_pairs_mask(n: int, forbidden: Optional[np.ndarray]) -> np.ndarray:
    """``[N, N]`` bool: the upper triangle of flippable pairs (``i < j``), minus ``forbidden`` ``[k, 2]``."""
    allowed = np.triu(np.ones((n, n), dtype=bool), 1)
    if forbidden is not None and len(forbidden):
        f = np.asarray(forbidden, np.int64)
        allowed[f[:, 0], f[:, 1]] = False
        allowed[f[:, 1], f[:, 0]] = False
    return allowed


def flips_to_mask(n: int, flips: np.ndarray) -> np.ndarray:
    """Upper-triangular 0/1 ``[N, N]`` mask of ``flips`` ``[K, 2]``."""
    m = np.zeros((n, n), np.float32)
    f = np.asarray(flips, np.int64).reshape(-1, 2)
    m[np.minimum(f[:, 0], f[:, 1]), np.maximum(f[:, 0], f[:, 1])] = 1.0
    return m


def drop_singleton_flips(a: np.ndarray, flips: np.ndarray) -> np.ndarray:
    """Drop removals (in order) that would leave a node with degree 0."""
    deg = a.sum(1).astype(np.int64)
    keep = []
    for i, j in flips:
        if a[i, j] > 0:
            if deg[i] <= 1 or deg[j] <= 1:
                continue
            deg[i] -= 1
            deg[j] -= 1
        keep.append((int(i), int(j)))
    return np.asarray(keep, np.int64).reshape(-1, 2)


# ----------------------------------------------------------------------------------------------
# degree power-law likelihood-ratio filter (Zügner et al. 2018, as in DeepRobust)
# ----------------------------------------------------------------------------------------------

def _phi_diff(a, b, a_minus_b, c, log_dmin):
    """phi(a) - phi(b) for phi(r) = log α + α log d_min + (α + 1) r, α = 1 + 1/(r - c), written in terms
    of ``a - b`` so that it stays accurate in float32 when a ≈ b."""
    den = (a - c) * (b - c)
    d_alpha = -a_minus_b / den
    alpha_b = 1.0 + 1.0 / (b - c)
    return jnp.log1p(d_alpha / alpha_b) + d_alpha * log_dmin + a_minus_b * (2.0 - c / den)


def ll_ratio_mask(a: jax.Array, a_clean: jax.Array, d_min: float = 2.0, cutoff: float = 0.004) -> jax.Array:
    r"""``[N, N]`` bool: flips whose power-law degree log-likelihood ratio statistic stays below
    ``cutoff`` (the unnoticeability constraint of Nettack/Metattack, with DeepRobust's formulas:
    :math:`\ell(n, S) = n\log\alpha + n\alpha\log d_{min} + (\alpha+1)S`,
    :math:`\alpha = 1 + n/(S - n\log(d_{min}-\tfrac12))`, over degrees :math:`\ge d_{min}`; statistic
    :math:`-2\ell(n_0+n', S_0+S') + 2(\ell(n', S') + \ell(n_0, S_0))` for the sequence after the flip).

    Since :math:`\ell` is homogeneous of degree one, the statistic equals
    :math:`2[n'(\varphi(r') - \varphi(r_c)) + n_0(\varphi(r_0) - \varphi(r_c))]` with :math:`r = S/n`; it is
    evaluated from the *changes* :math:`(\delta n, \delta S)` relative to the clean sequence, which keeps it
    accurate in float32 (a direct evaluation differences numbers of size ~10^4 against a cutoff of 0.004).
    """
    d0 = jnp.sum(a_clean, 1)
    d = jnp.sum(a, 1)
    stats = _ll_seq_stats(d, d0, d_min)
    return _ll_ratio(stats, d[:, None], d[None, :], 1.0 - 2.0 * a, d_min) < cutoff


def _ll_seq_stats(d, d0, d_min):
    """``(n0, S0, δn, δS)``: clean count / sum-log of degrees >= d_min and the current changes."""
    t0 = (d0 >= d_min).astype(jnp.float32)
    l0 = jnp.where(d0 >= d_min, jnp.log(jnp.maximum(d0, 1.0)), 0.0)
    t = (d >= d_min).astype(jnp.float32)
    l = jnp.where(d >= d_min, jnp.log(jnp.maximum(d, 1.0)), 0.0)
    ds_cur = jnp.sum(jnp.where((d >= d_min) & (d0 >= d_min), jnp.log(jnp.maximum(d, 1.0) / jnp.maximum(d0, 1.0)), l - l0))
    return jnp.sum(t0), jnp.sum(l0), jnp.sum(t - t0), ds_cur


def _ll_ratio(stats, di, dj, delta, d_min):
    """The LR statistic after flipping pairs with endpoint degrees ``di``, ``dj`` (broadcastable) by
    ``delta`` (+1 add / -1 remove), given :func:`_ll_seq_stats`."""
    n0, s0, dn_cur, ds_cur = stats
    c = jnp.log(d_min - 0.5)
    log_dmin = jnp.log(d_min)

    def change(dv):  # per-endpoint change of (count, sum log) when its degree moves by delta
        new = dv + delta
        both = (dv >= d_min) & (new >= d_min)
        dl = jnp.where(both, jnp.log1p(delta / jnp.maximum(dv, 1.0)),
                       jnp.where(new >= d_min, jnp.log(jnp.maximum(new, 1.0)), 0.0)
                       - jnp.where(dv >= d_min, jnp.log(jnp.maximum(dv, 1.0)), 0.0))
        dt = (new >= d_min).astype(jnp.float32) - (dv >= d_min).astype(jnp.float32)
        return dt, dl

    dti, dli = change(di)
    dtj, dlj = change(dj)
    dn = dn_cur + dti + dtj
    ds = ds_cur + dli + dlj
    n_new = n0 + dn
    r_new = (s0 + ds) / n_new
    r0 = s0 / n0
    r_c = (2.0 * s0 + ds) / (2.0 * n0 + dn)
    num = n0 * ds - s0 * dn
    new_minus_c = num / (n_new * (2.0 * n0 + dn))
    zero_minus_c = -num / (n0 * (2.0 * n0 + dn))
    return 2.0 * (n_new * _phi_diff(r_new, r_c, new_minus_c, c, log_dmin)
                  + n0 * _phi_diff(r0, r_c, zero_minus_c, c, log_dmin))


def ll_ratio_reference(a: np.ndarray, a_clean: np.ndarray, pairs: np.ndarray, d_min: float = 2.0) -> np.ndarray:
    """Float64 NumPy transcription of DeepRobust's ``likelihood_ratio_filter`` statistic for ``pairs``
    ``[P, 2]`` (used to test :func:`ll_ratio_mask`)."""
    def seq(dg):
        dg = dg[dg >= d_min]
        return len(dg), np.log(dg).sum()

    def alpha(n, s):
        return 1 + n / (s - n * np.log(d_min - 0.5))

    def ll(n, s):
        al = alpha(n, s)
        return n * np.log(al) + n * al * np.log(d_min) + (al + 1) * s

    d0 = a_clean.sum(0).astype(np.float64)
    d = a.sum(1).astype(np.float64)
    n0, s0 = seq(d0)
    n, s = seq(d)
    delta = 1 - 2 * a[pairs[:, 0], pairs[:, 1]]
    old = d[pairs]
    new = old + delta[:, None]
    s_new = s - np.log(np.clip(old * (old >= d_min), 1, None)).sum(1) + np.log(np.clip(new * (new >= d_min), 1, None)).sum(1)
    n_new = n - (old >= d_min).sum(1) + (new >= d_min).sum(1)
    return -2 * ll(n0 + n_new, s0 + s_new) + 2 * (ll(n_new, s_new) + ll(n0, s0))


# ----------------------------------------------------------------------------------------------
# greedy budgeted flipping
# ----------------------------------------------------------------------------------------------

class MetaState(NamedTuple):
    """``a`` ``[N, N]`` current adjacency; ``flips`` ``[B, 2]`` / ``flip_sign`` ``[B]`` (+1 added, -1
    removed, 0 unused slot); ``n_flips``; ``key``; ``loss`` (attack loss at the last meta-gradient)."""

    a: jax.Array
    flips: jax.Array
    flip_sign: jax.Array
    n_flips: jax.Array
    key: jax.Array
    loss: jax.Array


def _greedy_select(score, a, a_clean, allowed, k: int, n_left, ll_cutoff: Optional[float] = None,
                   max_per_node: Optional[int] = None):
    """Pick up to ``min(k, n_left)`` pairs greedily from the top candidates of ``score`` (upper
    triangle, masked), re-checking validity (no singleton, no pair twice) after each accepted flip.

    With ``ll_cutoff``, each candidate is also re-checked against the degree likelihood-ratio test on
    the degrees *after* the flips already accepted in this step (O(N) per candidate). With
    ``max_per_node = m``, a candidate is skipped if one of its nodes already has ``m`` flips *in this
    step* (spreads the ``k`` flips of one meta-gradient instead of stacking them on the node with the
    largest gradient row, where the first-order view of one gradient is least accurate); a second,
    uncapped pass over the same pool then fills the step up to ``k``. The pool is the top ``4k``
    entries (``16k`` with a per-node cap).

    Returns ``(a_new, pairs [k, 2], accepted [k] bool)``."""
    n = a.shape[0]
    deg = jnp.sum(a, 1)
    deg0 = jnp.sum(a_clean, 1)
    valid = allowed & (a == a_clean)
    m = min((16 if max_per_node is not None else 4) * k, n * (n - 1) // 2)
    vals, idx = jax.lax.top_k(jnp.where(valid, score, -jnp.inf).reshape(-1), m)
    rows, cols = idx // n, idx % n
    cap = jnp.inf if max_per_node is None else float(max_per_node)

    def body(c, tt):
        a_, deg_, cnt_, n_acc = c
        t, capped = tt
        i, j, v = rows[t], cols[t], vals[t]
        is_edge = a_[i, j] > 0
        ok = jnp.isfinite(v) & (n_acc < jnp.minimum(k, n_left)) & (a_[i, j] == a_clean[i, j])
        ok &= jnp.where(is_edge, (deg_[i] > 1) & (deg_[j] > 1), True)
        ok &= ~capped | ((cnt_[i] < cap) & (cnt_[j] < cap))
        if ll_cutoff is not None:
            stats = _ll_seq_stats(deg_, deg0, 2.0)
            ok &= _ll_ratio(stats, deg_[i], deg_[j], jnp.where(is_edge, -1.0, 1.0), 2.0) < ll_cutoff
        delta = jnp.where(is_edge, -1.0, 1.0) * ok
        a_ = a_.at[i, j].add(delta).at[j, i].add(delta)
        deg_ = deg_.at[i].add(delta).at[j].add(delta)
        okf = ok.astype(jnp.float32)
        cnt_ = cnt_.at[i].add(okf).at[j].add(okf)
        return (a_, deg_, cnt_, n_acc + ok.astype(jnp.int32)), (jnp.stack([i, j]), ok)

    init = (a, deg, jnp.zeros((n,), jnp.float32), jnp.int32(0))
    ts = jnp.arange(m)
    if max_per_node is None:
        xs = (ts, jnp.zeros((m,), bool))
    else:  # a capped pass, then an uncapped pass over the same pool to spend what the cap left
        xs = (jnp.concatenate([ts, ts]), jnp.concatenate([jnp.ones((m,), bool), jnp.zeros((m,), bool)]))
    (a_new, _, _, _), (pairs, ok) = jax.lax.scan(body, init, xs)
    # compact the accepted pairs into the first k slots
    order = jnp.argsort(~ok, stable=True)[:k]
    return a_new, pairs[order].astype(jnp.int32), ok[order]


def greedy_flip_optimizer(score_fn, budget: int, flips_per_step: int = 1, ll_constraint: bool = False,
                          ll_cutoff: float = 0.004, max_per_node: Optional[int] = None) -> AttackOptimizer:
    """Greedy budgeted flipping as an :class:`~poisonjax.core.types.AttackOptimizer`.

    ``score_fn(problem, state, key) -> (loss, score [N, N])`` (higher = better flip; symmetric).
    ``problem`` must have fields ``a_clean`` ``[N, N]`` and ``allowed`` ``[N, N]`` bool (upper
    triangle). Each ``step`` flips up to ``flips_per_step`` valid pairs (no singletons, no pair twice,
    optional degree likelihood-ratio filter, optionally at most ``max_per_node`` flips per node and
    step) and never more than ``budget`` in total; the state is a
    :class:`MetaState`. Steps after the budget is spent leave the state unchanged apart from the key."""
    check_positive_int("budget", budget)
    check_positive_int("flips_per_step", flips_per_step)
    k = min(flips_per_step, budget)

    def init(key, prob) -> MetaState:
        return MetaState(a=prob.a_clean, flips=jnp.zeros((budget, 2), jnp.int32),
                         flip_sign=jnp.zeros((budget,), jnp.float32), n_flips=jnp.int32(0), key=key,
                         loss=jnp.float32(0.0))

    def step(state: MetaState, prob) -> MetaState:
        # once the budget is spent, steps are no-ops (no meta-gradient is computed)
        return jax.lax.cond(state.n_flips < budget, lambda s: _step(s, prob), lambda s: s, state)

    def _step(state: MetaState, prob) -> MetaState:
        key, sub = jax.random.split(state.key)
        loss, score = score_fn(prob, state, sub)
        allowed = prob.allowed
        if ll_constraint:
            allowed = allowed & ll_ratio_mask(state.a, prob.a_clean, cutoff=ll_cutoff)
        a_new, pairs, ok = _greedy_select(score, state.a, prob.a_clean, allowed, k, budget - state.n_flips,
                                          ll_cutoff if (ll_constraint and k > 1) else None,
                                          max_per_node if k > 1 else None)
        sign = jnp.where(state.a[pairs[:, 0], pairs[:, 1]] > 0, -1.0, 1.0) * ok
        slots = jnp.where(ok, state.n_flips + jnp.cumsum(ok) - 1, budget)  # out of range -> dropped
        flips = state.flips.at[slots].set(pairs, mode="drop")
        flip_sign = state.flip_sign.at[slots].set(sign, mode="drop")
        return MetaState(a_new, flips, flip_sign, state.n_flips + jnp.sum(ok).astype(jnp.int32), key,
                         loss.astype(jnp.float32))

    def metrics(state, prob):
        return {"attack_loss": state.loss, "n_flips": state.n_flips.astype(jnp.float32)}

    return AttackOptimizer(init, step, metrics)


def num_steps(cfg) -> int:
    """Greedy steps to run: ``ceil(budget / k)`` for ``k = flips_per_step``, plus 25% slack when
    ``k > 1`` (a step may accept fewer than ``k`` flips when candidates fail the singleton / LL checks;
    steps after the budget is spent cost nothing)."""
    k = min(cfg.flips_per_step, cfg.budget)
    n = -(-cfg.budget // k)
    return n if k == 1 else n + -(-n // 4)


def state_to_adj(state: MetaState) -> sp.csr_matrix:
    """The perturbed adjacency of a :class:`MetaState` as scipy CSR."""
    a = sp.csr_matrix(np.asarray(state.a))
    a.eliminate_zeros()
    return a
