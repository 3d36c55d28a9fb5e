r"""Structure-poisoning attacks on GCN node classification: Metattack (exact and approximate
meta-gradients) and the random / DICE / PGD baselines, plus the shared flip machinery.

Every attack returns symmetric, unweighted edge flips of the clean adjacency :math:`A` within a budget
:math:`B = \lfloor \text{rate}\cdot|E| \rfloor` (:func:`poisonjax.graph.splits.budget_from_rate`); none
adds a self-loop, none removes the last edge of a node (no singletons), and a pair is flipped at most once.

Metattack (Zügner & Günnemann, "Adversarial Attacks on Graph Neural Networks via Meta Learning",
ICLR 2019; as implemented by DeepRobust):

* inner problem: a linearised two-layer GCN :math:`f(A) = \mathrm{softmax}(\hat A \hat A X W_1 W_2)`
  re-initialised at every greedy step and trained for ``T`` steps of heavy-ball SGD (lr 0.1, momentum
  0.9) on the labelled nodes;
* outer (attack) loss :math:`\mathcal{L} = \lambda\,\mathrm{CE}_{train}(y) + (1-\lambda)\,
  \mathrm{CE}_{unlabelled}(\hat y_{self})` with self-training labels from a linearised surrogate
  trained on the clean graph (Meta-Self: :math:`\lambda=0`; Meta-Train: :math:`\lambda=1`);
* score :math:`S = (\nabla_A\mathcal{L} + \nabla_A\mathcal{L}^\top)\odot(1 - 2A)`, masked (self-loops,
  singletons, already-flipped pairs, forbidden pairs, optionally the degree power-law likelihood-ratio
  test with cutoff 0.004); the best pair is flipped; repeated until the budget is spent.
* ``first_order=True`` is A-Meta-Self: :math:`\sum_t \nabla_A \mathcal{L}(\theta_t)` along an Adam
  (lr 0.01) trajectory, with no differentiation through the updates.
* ``flips_per_step=k`` flips the ``k`` best valid pairs per meta-gradient (a speed/strength trade-off).

**Speed.** The meta-gradient is computed with :func:`poisonjax.core.bilevel.low_rank_matmul_meta_grad`:
the unrolled inner training runs with a *sparse* :math:`\hat A` (O(|E|) per product) and sparse
features, and the dense :math:`\nabla_{\hat A}\mathcal{L} = \sum_t \bar U_t M_t^\top` is one GEMM of inner
size :math:`T (2H + 2C) + H + C`; the chain rule through :math:`\tilde D^{-1/2}(A+I)\tilde D^{-1/2}` and
the scoring are O(N^2) element-wise. The whole greedy step is one jitted function.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.sparse as sp

from poisonjax.core import bilevel
from poisonjax.core.types import AttackOptimizer
from poisonjax.core.validation import PoisonJaxInputError, check_choice, check_positive_int
from poisonjax.graph.models import _fan_out_uniform, normalize_adj


# ----------------------------------------------------------------------------------------------
# shared flip machinery
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


def _upper_pairs_mask(n: int, forbidden: Optional[np.ndarray]) -> np.ndarray:
    allowed = np.triu(np.ones((n, n), dtype=bool), 1)
    if forbidden is not None and len(forbidden):
        f = np.asarray(forbidden, np.int64)
        allowed[f[:, 0], f[:, 1]] = False
        allowed[f[:, 1], f[:, 0]] = False
    return allowed


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


# ----------------------------------------------------------------------------------------------
# degree power-law likelihood-ratio filter (Zügner et al. 2018, as in DeepRobust)
# ----------------------------------------------------------------------------------------------

def _pl_alpha(n, sum_log, d_min):
    return 1.0 + n / (sum_log - n * jnp.log(d_min - 0.5))


def _pl_ll(n, alpha, sum_log, d_min):
    return n * jnp.log(alpha) + n * alpha * jnp.log(d_min) + (alpha + 1.0) * sum_log


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
    :math:`\ell(n, S) = n\loglpha + nlpha\log d_{min} + (lpha+1)S`,
    :math:`lpha = 1 + n/(S - n\log(d_{min}-	frac12))`, over degrees :math:`\ge d_{min}`; statistic
    :math:`-2\ell(n_0+n', S_0+S') + 2(\ell(n', S') + \ell(n_0, S_0))` for the sequence after the flip).

    Since :math:`\ell` is homogeneous of degree one, the statistic equals
    :math:`2[n'(arphi(r') - arphi(r_c)) + n_0(arphi(r_0) - arphi(r_c))]` with :math:`r = S/n`; it is
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
# Metattack
# ----------------------------------------------------------------------------------------------

class MetaProblem(NamedTuple):
    """Fixed inputs of Metattack (all arrays; build with :func:`make_meta_problem`).

    ``a_clean`` ``[N, N]`` 0/1; ``allowed`` ``[N, N]`` bool (upper triangle of flippable pairs);
    sparse features ``x_rows, x_cols, x_vals`` ``[nnz_X]`` with ``x_dim`` ``[F]`` (only its shape is
    used); clean edges ``e_rows, e_cols`` ``[2|E|]``; ``labels`` ``[N]`` (self-training labels);
    ``train_w`` ``[N]`` (1/|train| on training nodes) and ``attack_w`` ``[N]`` (the weights of the
    attack loss: :math:`\lambda/|train|` on training, :math:`(1-\lambda)/|U|` on unlabelled nodes)."""

    a_clean: jax.Array
    allowed: jax.Array
    x_rows: jax.Array
    x_cols: jax.Array
    x_vals: jax.Array
    x_dim: jax.Array
    e_rows: jax.Array
    e_cols: jax.Array
    labels: jax.Array
    train_w: jax.Array
    attack_w: jax.Array
    train_idx: jax.Array


class MetaState(NamedTuple):
    """``a`` ``[N, N]`` current adjacency; ``flips`` ``[B, 2]`` / ``flip_sign`` ``[B]`` (+1 added, -1
    removed, 0 unused slot); ``n_flips``; ``key``; ``loss`` (attack loss at the last meta-gradient)."""

    a: jax.Array
    flips: jax.Array
    flip_sign: jax.Array
    n_flips: jax.Array
    key: jax.Array
    loss: jax.Array


class MetattackConfig(NamedTuple):
    """Static settings. DeepRobust defaults: hidden 16, ``T=100`` inner steps, lr 0.1, momentum 0.9
    (exact); Adam lr 0.01 (``first_order``); ``lambda_=0`` (Meta-Self); LL constraint on; attack
    loss ``"ce"`` (see :func:`attack_loss` for ``"tanh_margin"`` and ``"mce"``)."""

    budget: int
    num_classes: int
    hidden: int = 16
    inner_steps: int = 100
    lr: float = 0.1
    momentum: float = 0.9
    lambda_: float = 0.0
    first_order: bool = False
    approx_lr: float = 0.01
    flips_per_step: int = 1
    ll_constraint: bool = True
    ll_cutoff: float = 0.004
    remat: bool = False
    loss: str = "ce"


def make_meta_problem(adj: sp.spmatrix, features, labels, idx_train, idx_unlabeled,
                      self_labels: Optional[np.ndarray] = None, lambda_: float = 0.0,
                      forbidden_pairs: Optional[np.ndarray] = None) -> MetaProblem:
    """Build a :class:`MetaProblem`. ``features``: ``[N, F]`` dense or scipy sparse; ``self_labels``:
    predicted labels of a surrogate (training nodes keep their true labels); ``None`` uses ``labels``."""
    from poisonjax.data.graphs import as_symmetric_unweighted
    adj = as_symmetric_unweighted(adj, "adj")
    n = adj.shape[0]
    x = sp.coo_matrix(features, dtype=np.float32)
    if x.shape[0] != n:
        raise PoisonJaxInputError(f"features must have {n} rows (one per node), got shape {x.shape}")
    y = np.asarray(labels if self_labels is None else self_labels, np.int32).copy()
    y[idx_train] = np.asarray(labels)[idx_train]
    tw = np.zeros(n, np.float32)
    tw[idx_train] = 1.0 / len(idx_train)
    aw = np.zeros(n, np.float32)
    if lambda_ > 0:
        aw[idx_train] += lambda_ / len(idx_train)
    if lambda_ < 1:
        aw[idx_unlabeled] += (1 - lambda_) / len(idx_unlabeled)
    coo = adj.tocoo()
    return MetaProblem(
        a_clean=jnp.asarray(adj.toarray(), jnp.float32), allowed=jnp.asarray(_upper_pairs_mask(n, forbidden_pairs)),
        x_rows=jnp.asarray(x.row, jnp.int32), x_cols=jnp.asarray(x.col, jnp.int32),
        x_vals=jnp.asarray(x.data, jnp.float32), x_dim=jnp.zeros((x.shape[1],), jnp.float32),
        e_rows=jnp.asarray(coo.row, jnp.int32), e_cols=jnp.asarray(coo.col, jnp.int32),
        labels=jnp.asarray(y), train_w=jnp.asarray(tw), attack_w=jnp.asarray(aw),
        train_idx=jnp.asarray(np.sort(np.asarray(idx_train)), jnp.int32))


def _spmm(rows, cols, vals, m, n):
    """Sparse ``[n, n] @ m``: :math:`(\\hat A m)_r = \\sum_{e: r_e = r} v_e\\, m_{c_e}`."""
    return jax.ops.segment_sum(vals[:, None] * m[cols], rows, num_segments=n)


def _sparse_norm_adj(prob: MetaProblem, state: MetaState):
    """Slots (clean edges, self-loops, flips with weights ±1) and their normalised values."""
    n = prob.a_clean.shape[0]
    loops = jnp.arange(n, dtype=jnp.int32)
    fr, fc = state.flips[:, 0], state.flips[:, 1]
    rows = jnp.concatenate([prob.e_rows, loops, fr, fc])
    cols = jnp.concatenate([prob.e_cols, loops, fc, fr])
    w = jnp.concatenate([jnp.ones(prob.e_rows.shape[0] + n, jnp.float32), state.flip_sign, state.flip_sign])
    deg = jax.ops.segment_sum(w, rows, num_segments=n)  # 1 + degree
    s = jax.lax.rsqrt(deg)
    return rows, cols, w * s[rows] * s[cols], s


def _xmm(prob, w):  # X @ W
    n = prob.a_clean.shape[0]
    return jax.ops.segment_sum(prob.x_vals[:, None] * w[prob.x_cols], prob.x_rows, num_segments=n)


def _xtmm(prob, p):  # X^T @ P
    f = prob.x_dim.shape[0]
    return jax.ops.segment_sum(prob.x_vals[:, None] * p[prob.x_rows], prob.x_cols, num_segments=f)


def _init_weights(key, f, h, c):
    k1, k2 = jax.random.split(key)  # DeepRobust's GraphConvolution init: U(-1/sqrt(out), 1/sqrt(out))
    return _fan_out_uniform(h)(k1, (f, h)), _fan_out_uniform(c)(k2, (h, c))


def _wce(logits, labels, w):
    return jnp.sum(w * optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def meta_grad_hat(prob: MetaProblem, state: MetaState, cfg: MetattackConfig, key) -> tuple:
    r"""``(loss, dL/dÂ [N, N], s [N])`` -- the meta-gradient with respect to the normalised adjacency
    (fast low-rank path; exact unrolled or first-order per ``cfg``); ``s`` = :math:`\tilde d^{-1/2}`.
    Â is applied through the sparse slots of ``state`` (clean edges, self-loops, flips)."""
    n = prob.a_clean.shape[0]
    rows, cols, vals, s = _sparse_norm_adj(prob, state)
    loss, g_hat = _meta_grad_hat_core(prob, lambda m: _spmm(rows, cols, vals, m, n), cfg, key)
    return loss, g_hat, s


def meta_grad_hat_dense(prob: MetaProblem, a: jax.Array, cfg: MetattackConfig, key) -> tuple:
    r"""As :func:`meta_grad_hat` for a dense, possibly *weighted* adjacency ``a`` ``[N, N]``
    (:math:`\hat A = S(A+I)S`, :math:`S = \mathrm{diag}((1 + A\mathbf 1)^{-1/2})`): the relaxed
    perturbations of :func:`meta_pgd`. Each product with Â costs :math:`O(N^2 C)`."""
    n = a.shape[0]
    s = jax.lax.rsqrt(1.0 + jnp.sum(a, 1))
    a_hat = (a + jnp.eye(n, dtype=a.dtype)) * s[:, None] * s[None, :]
    loss, g_hat = _meta_grad_hat_core(prob, lambda m: a_hat @ m, cfg, key)
    return loss, g_hat, s


ATTACK_LOSSES = ("ce", "tanh_margin", "mce")


def attack_loss(logits, labels, w, kind: str = "ce"):
    r"""The attacker's objective on the trained inner model's logits (to be *maximised*), weighted by
    ``w`` ``[N]``:

    * ``"ce"`` (Metattack): :math:`\sum_i w_i\,\mathrm{CE}(z_i, y_i)`;
    * ``"tanh_margin"`` (Geisler et al., NeurIPS 2021): :math:`-\sum_i w_i \tanh(m_i)` with the
      log-probability margin :math:`m_i = \log p_{i,y_i} - \max_{c \ne y_i} \log p_{i,c}` -- bounded,
      so nodes that are already misclassified stop dominating the gradient;
    * ``"mce"`` (masked CE, Geisler et al.): CE on the nodes still classified as :math:`y_i`
      (the mask is not differentiated)."""
    if kind == "ce":
        return _wce(logits, labels, w)
    lp = jax.nn.log_softmax(logits)
    true = jnp.take_along_axis(lp, labels[:, None], 1)[:, 0]
    if kind == "tanh_margin":
        other = jnp.max(jnp.where(jax.nn.one_hot(labels, lp.shape[1], dtype=bool), -jnp.inf, lp), 1)
        return -jnp.sum(w * jnp.tanh(true - other))
    if kind == "mce":
        correct = jax.lax.stop_gradient((jnp.argmax(logits, 1) == labels).astype(logits.dtype))
        return -jnp.sum(w * correct * true)
    raise PoisonJaxInputError(f"loss must be one of {ATTACK_LOSSES}, got {kind!r}")


def _meta_grad_hat_core(prob: MetaProblem, spmm, cfg: MetattackConfig, key) -> tuple:
    """``(loss, dL/dÂ)`` given ``spmm(m) = Â m`` (Â symmetric)."""
    n = prob.a_clean.shape[0]
    f = prob.x_dim.shape[0]
    h, c, T = cfg.hidden, cfg.num_classes, cfg.inner_steps
    loss_kind = cfg.loss
    w1, w2 = _init_weights(key, f, h, c)
    onehot = jax.nn.one_hot(prob.labels, c)
    tw = prob.train_w[:, None]

    if not cfg.first_order:
        # The linearised GCN is logits = Â Â X W1 W2, so every product with Â has C columns:
        #   y = X (W1 W2); p1 = Â y; o = Â p1; g = dCE/do; p3 = Âᵀ g; p4 = Âᵀ p3;
        #   dW2 = W1ᵀ (Xᵀ p4); dW1 = (Xᵀ p4) W2ᵀ.
        def loss_with_probes(u):
            def step(carry, ut):
                W1, W2, V1, V2 = carry
                u1, u2, u3, u4 = ut
                y = _xmm(prob, W1 @ W2)
                p1 = spmm(y) + u1
                o = spmm(p1) + u2
                g = (jax.nn.softmax(o) - onehot) * tw
                p3 = spmm(g) + u3
                p4 = spmm(p3) + u4
                xp = _xtmm(prob, p4)
                dW2 = W1.T @ xp
                dW1 = xp @ W2.T
                V1 = cfg.momentum * V1 + dW1
                V2 = cfg.momentum * V2 + dW2
                return (W1 - cfg.lr * V1, W2 - cfg.lr * V2, V1, V2), (y, p1, g[prob.train_idx], p3)

            if cfg.remat:
                step = jax.checkpoint(step)
            init = (w1, w2, jnp.zeros_like(w1), jnp.zeros_like(w2))
            (W1, W2, _, _), ms = jax.lax.scan(step, init, u[0])
            y = _xmm(prob, W1 @ W2)
            p1 = spmm(y) + u[1][0]
            o = spmm(p1) + u[1][1]
            return attack_loss(o, prob.labels, prob.attack_w, loss_kind), (ms, (y, p1))

        z = jnp.zeros((T, n, c))
        probes = ((z, z, z, z), (jnp.zeros((n, c)), jnp.zeros((n, c))))
        (loss, (ms, mf)), ub = jax.value_and_grad(loss_with_probes, has_aux=True)(probes)
        fl = lambda t: jnp.moveaxis(t, -2, 0).reshape(t.shape[-2], -1)
        # Â occurrences: p1, o (Â @ M), p3, p4 (Âᵀ @ M, contribute M ūᵀ); g is zero off the training rows
        U = jnp.concatenate([fl(ub[0][0]), fl(ub[0][1]), fl(ms[3]), fl(ub[1][0]), fl(ub[1][1])], 1)
        M = jnp.concatenate([fl(ms[0]), fl(ms[1]), fl(ub[0][3]), fl(mf[0]), fl(mf[1])], 1)
        g_hat = U @ M.T
        g_hat = g_hat.at[prob.train_idx].add(fl(ms[2]) @ fl(ub[0][2]).T)
        return loss, g_hat
    else:
        opt = optax.adam(cfg.approx_lr)

        def loss_with_probes(u):
            def train_loss(W):
                return _wce(spmm(spmm(_xmm(prob, W[0] @ W[1]))), prob.labels, prob.train_w)

            def step(carry, ut):
                W, st = carry
                g = jax.grad(train_loss)(W)
                upd, st = opt.update(g, st, W)
                W = optax.apply_updates(W, upd)
                W1, W2 = jax.lax.stop_gradient(W)
                y = _xmm(prob, W1 @ W2)
                p1 = spmm(y) + ut[0]
                o = spmm(p1) + ut[1]
                return (W, st), (attack_loss(o, prob.labels, prob.attack_w, loss_kind), (y, p1))

            W0 = (w1, w2)
            (_, _), (losses, ms) = jax.lax.scan(step, (W0, opt.init(W0)), u)
            return jnp.sum(losses), ms

        probes = (jnp.zeros((T, n, c)), jnp.zeros((T, n, c)))
        transposed = (False, False)

    return bilevel.low_rank_matmul_meta_grad(loss_with_probes, probes, transposed)


def adj_grad_from_hat(g_hat, a, s):
    r"""Chain rule through :math:`\hat A = S(A+I)S`, :math:`S = \mathrm{diag}((1 + A\mathbf 1)^{-1/2})`:
    :math:`\partial\mathcal{L}/\partial A_{ij} = \bar G_{ij} s_i s_j - \tfrac12 s_i^3\, [((\bar G + \bar G^\top)\odot(A+I))\, s]_i`."""
    n = a.shape[0]
    b = a + jnp.eye(n, dtype=a.dtype)
    ds = ((g_hat + g_hat.T) * b) @ s
    dd = -0.5 * s ** 3 * ds
    return g_hat * s[:, None] * s[None, :] + dd[:, None]


def meta_score(prob: MetaProblem, state: MetaState, cfg: MetattackConfig, key):
    """``(loss, score [N, N])``: :math:`(g + g^\\top)\\odot(1-2A)` with :math:`g = \\nabla_A\\mathcal{L}`."""
    loss, g_hat, s = meta_grad_hat(prob, state, cfg, key)
    g = adj_grad_from_hat(g_hat, state.a, s)
    return loss, (g + g.T) * (1.0 - 2.0 * state.a)


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


def metattack(cfg: MetattackConfig) -> AttackOptimizer:
    """Metattack as an :class:`~poisonjax.core.types.AttackOptimizer` (:func:`greedy_flip_optimizer`
    over :func:`meta_score`): each ``step`` computes one meta-gradient and flips up to
    ``cfg.flips_per_step`` pairs; run it for :func:`num_steps` steps (e.g. with
    :func:`poisonjax.core.runner.run`)."""
    check_positive_int("inner_steps", cfg.inner_steps)
    check_choice("loss", cfg.loss, ATTACK_LOSSES)
    return greedy_flip_optimizer(lambda prob, st, key: meta_score(prob, st, cfg, key), cfg.budget,
                                 cfg.flips_per_step, cfg.ll_constraint, cfg.ll_cutoff)


def num_steps(cfg) -> int:
    """Greedy steps to run: ``ceil(budget / k)`` for ``k = flips_per_step``, plus 25% slack when
    ``k > 1`` (a step may accept fewer than ``k`` flips when candidates fail the singleton / LL checks;
    steps after the budget is spent cost nothing)."""
    k = min(cfg.flips_per_step, cfg.budget)
    n = -(-cfg.budget // k)
    return n if k == 1 else n + -(-n // 4)


def run_metattack(prob: MetaProblem, cfg: MetattackConfig, key, workdir=None, progress: bool = True,
                  chunk_size: int = 10, config=None, full_result: bool = False):
    """Run :func:`metattack` to the full budget through :func:`poisonjax.core.runner.run`
    (checkpointed and resumable when ``workdir`` is given). Returns the final :class:`MetaState`, or
    the :class:`~poisonjax.core.runner.RunResult` (``resumed_from`` etc.) with ``full_result=True``."""
    from poisonjax.core.runner import run
    res = run(metattack(cfg), prob, num_steps(cfg), workdir, key=key, chunk_size=chunk_size,
              progress=progress, desc="metattack", config=config if config is not None else cfg._asdict())
    return res if full_result else res.state


class MetaPGDState(NamedTuple):
    """``p`` ``[N, N]`` relaxed flips in [0, 1] (upper triangle of allowed pairs); ``t`` step count;
    ``key``; ``loss`` (attack loss at ``p`` before the last update)."""

    p: jax.Array
    t: jax.Array
    key: jax.Array
    loss: jax.Array


def relaxed_adj(a_clean: jax.Array, p: jax.Array) -> jax.Array:
    r""":math:`A(p) = A + (1 - 2A)\odot(p + p^\top)` for upper-triangular ``p`` ``[N, N]``."""
    return a_clean + (1.0 - 2.0 * a_clean) * (p + p.T)


def pgd_ascent_step(p: jax.Array, grad: jax.Array, eta, allowed: jax.Array, budget) -> jax.Array:
    r"""One projected ascent step on relaxed flips:
    :math:`p \leftarrow \Pi\big(p + \eta\, \nabla / \lVert\nabla\rVert_2\big)`, where :math:`\Pi` projects
    onto :math:`\{0 \le p \le 1, \sum p \le B\}` (:func:`~poisonjax.core.projections.project_capped_simplex`)
    and ``allowed`` ``[N, N]`` (0/1) masks both the gradient and the result."""
    from poisonjax.core.projections import project_capped_simplex
    g = grad * allowed
    p = p + eta * g / (jnp.linalg.norm(g) + 1e-12)
    return project_capped_simplex(p * allowed, budget) * allowed


def meta_pgd(cfg: MetattackConfig, steps: int, lr: float = 2.0, p0: Optional[jax.Array] = None) -> AttackOptimizer:
    r"""Meta-PGD (Mujkanovic et al., "Are Defenses for Graph Neural Networks Robust?", NeurIPS 2022):
    the PGD topology attack of Xu et al. (2019) driven by Metattack's meta-gradient, i.e. projected
    gradient ascent on the relaxed bilevel problem

    .. math::
        \max_{p \in \mathcal P} \mathcal L_{atk}\big(\theta^*(A(p)), A(p)\big), \quad
        \theta^* = \text{T unrolled training steps on } A(p), \quad
        \mathcal P = \{0 \le p \le 1,\ \textstyle\sum p \le B\},

    with :math:`A(p)` from :func:`relaxed_adj`. Step :math:`t`:
    :math:`p \leftarrow \Pi_{\mathcal P}\big(p + \eta_t\, \nabla_p / \lVert\nabla_p\rVert_2\big)`,
    :math:`\eta_t = \text{lr}\sqrt{B / (t+1)}` (the feasible set has diameter about
    :math:`\sqrt{2B}`), :math:`\nabla_p = (g + g^\top)\odot(1-2A)` restricted to allowed pairs with
    :math:`g` the meta-gradient of :func:`meta_grad_hat_dense` (exact or first-order per ``cfg``,
    attack loss ``cfg.loss``; a fresh inner initialisation each step). ``p0`` warm-starts from a
    discrete solution (e.g. greedy Metattack's flips, as Mujkanovic et al. suggest); turn ``p`` into
    flips with :func:`sample_flip_sets`. Dense: :math:`O(T N^2 C)` per step and an ``[N, N]`` state.

    Reconstructed from the method's description (meta-gradient + PGD on the relaxation + sampling):
    the step schedule, the unit-gradient normalisation and the default ``tanh_margin`` loss are this
    library's choices, tuned on Cora (``lr`` 0.5 / 1 / 2 at 20%: 2 was strongest), not the authors'
    published hyperparameters."""
    check_positive_int("steps", steps)
    check_positive_int("inner_steps", cfg.inner_steps)
    check_choice("loss", cfg.loss, ATTACK_LOSSES)
    if not lr > 0:
        raise PoisonJaxInputError(f"lr must be > 0, got {lr!r}")
    budget = float(cfg.budget)

    def init(key, prob) -> MetaPGDState:
        p = jnp.zeros_like(prob.a_clean) if p0 is None else jnp.asarray(p0, jnp.float32) * prob.allowed
        return MetaPGDState(p=p, t=jnp.int32(0), key=key, loss=jnp.float32(0.0))

    def step(state: MetaPGDState, prob) -> MetaPGDState:
        key, sub = jax.random.split(state.key)
        allowed = prob.allowed.astype(jnp.float32)
        a = relaxed_adj(prob.a_clean, state.p)
        loss, g_hat, s = meta_grad_hat_dense(prob, a, cfg, sub)
        g = adj_grad_from_hat(g_hat, a, s)
        gp = (g + g.T) * (1.0 - 2.0 * prob.a_clean) * allowed
        eta = lr * jnp.sqrt(budget / (state.t.astype(jnp.float32) + 1.0))
        p = pgd_ascent_step(state.p, gp, eta, allowed, budget)
        return MetaPGDState(p=p, t=state.t + 1, key=key, loss=loss.astype(jnp.float32))

    def metrics(state, prob):
        return {"attack_loss": state.loss, "mass": jnp.sum(state.p)}

    return AttackOptimizer(init, step, metrics)


def flips_to_mask(n: int, flips: np.ndarray) -> np.ndarray:
    """Upper-triangular 0/1 ``[N, N]`` mask of ``flips`` ``[K, 2]``."""
    m = np.zeros((n, n), np.float32)
    f = np.asarray(flips, np.int64).reshape(-1, 2)
    m[np.minimum(f[:, 0], f[:, 1]), np.maximum(f[:, 0], f[:, 1])] = 1.0
    return m


def sample_flip_sets(p: np.ndarray, a_clean: np.ndarray, budget: int, samples: int, seed: int = 0) -> list:
    r"""Discrete flip sets ``[<=B, 2]`` from relaxed flips ``p`` (upper triangle): the top-``B``
    entries of ``p``, then ``samples`` draws :math:`m \sim \mathrm{Bernoulli}(p)` (a draw with more
    than ``B`` flips keeps its ``B`` most probable ones). Removals that would leave a node without
    edges are dropped (:func:`_drop_singleton_flips`), so every set is valid."""
    check_positive_int("budget", budget)
    check_positive_int("samples", samples, minimum=0)
    p = np.asarray(p, np.float64)
    if p.ndim != 2 or p.shape != np.shape(a_clean):
        raise PoisonJaxInputError(f"p must be [N, N] like a_clean {np.shape(a_clean)}, got shape {p.shape}")
    iu = np.argwhere(p > 0)
    w = p[iu[:, 0], iu[:, 1]]
    order = np.argsort(-w, kind="stable")
    out = [_drop_singleton_flips(a_clean, iu[order[:budget]])]
    rng = np.random.default_rng(seed)
    for _ in range(samples):
        hit = rng.random(w.shape[0]) < w
        idx = np.flatnonzero(hit)
        idx = idx[np.argsort(-w[idx], kind="stable")][:budget]
        out.append(_drop_singleton_flips(a_clean, iu[idx]))
    return out


def select_flip_set(adj: sp.spmatrix, flip_sets: list, features, self_labels, idx_train, idx_val, idx_unlabeled,
                    keys, num_classes: int, gcn_cfg=None) -> tuple:
    r"""Attacker-side choice among candidate flip sets (e.g. from :func:`sample_flip_sets`): poison
    ``adj`` with each set, train ``len(keys)`` GCNs on it (``gcn_cfg``, the attacker's guess of the
    victim's training; labels = ``self_labels``, true on ``idx_train``) and estimate the victim's
    accuracy as the mean agreement with the self-training labels on ``idx_unlabeled``,

    .. math:: \hat a(F) = \frac{1}{K|U|}\sum_k \sum_{i \in U} [\hat y^{(k)}_i(A \oplus F) = y^{self}_i].

    Returns ``(best, proxy)``: the index of the set with the lowest :math:`\hat a` and ``proxy``
    ``[len(flip_sets)]``. No test label is used."""
    from poisonjax.graph import models
    if not flip_sets:
        raise PoisonJaxInputError("flip_sets must hold at least one candidate flip set, got none")
    cfg = gcn_cfg if gcn_cfg is not None else models.GCNConfig()
    x = models.scipy_to_bcoo(sp.csr_matrix(features, dtype=np.float32))
    pad = int(adj.nnz + adj.shape[0] + 2 * max(len(f) for f in flip_sets))
    proxy = np.array([models.gcn_accuracy_on(flips_to_adj(adj, f), x, self_labels, idx_train, idx_val, idx_unlabeled,
                                             keys, num_classes, cfg, pad).mean() for f in flip_sets])
    return int(np.argmin(proxy)), proxy


def state_to_adj(prob: MetaProblem, state: MetaState) -> sp.csr_matrix:
    """The perturbed adjacency of a :class:`MetaState` as scipy CSR."""
    a = sp.csr_matrix(np.asarray(state.a))
    a.eliminate_zeros()
    return a


# ----------------------------------------------------------------------------------------------
# dense reference meta-gradient (for tests and small graphs) on the generic bilevel engine
# ----------------------------------------------------------------------------------------------

def meta_grad_dense(prob: MetaProblem, a: jax.Array, cfg: MetattackConfig, key, relu: bool = False) -> tuple:
    """``(loss, dL/dA [N, N])`` by differentiating the dense computation with
    :func:`poisonjax.core.bilevel.unrolled_meta_grad` (or ``first_order_meta_grad``); same
    initialisation as the fast path. O(T N^2 H) -- for verification and small graphs.
    ``relu=True`` puts a ReLU on the hidden layer of the inner GCN (not Metattack's linearised
    surrogate; for diagnostics only)."""
    n = a.shape[0]
    f = prob.x_dim.shape[0]
    x = jnp.zeros((n, f)).at[prob.x_rows, prob.x_cols].add(prob.x_vals)
    w = _init_weights(key, f, cfg.hidden, cfg.num_classes)

    def logits(W, a_):
        ah = normalize_adj(a_)
        h = ah @ (x @ W[0])
        return ah @ ((jax.nn.relu(h) if relu else h) @ W[1])

    inner = lambda W, a_, k: _wce(logits(W, a_), prob.labels, prob.train_w)
    outer = lambda W, a_: attack_loss(logits(W, a_), prob.labels, prob.attack_w, cfg.loss)
    if cfg.first_order:
        return bilevel.first_order_meta_grad(outer, inner, w, a, optax.adam(cfg.approx_lr), cfg.inner_steps)
    return bilevel.unrolled_meta_grad(outer, inner, w, a, bilevel.sgd_momentum(cfg.lr, cfg.momentum),
                                      cfg.inner_steps, remat=cfg.remat)


# ----------------------------------------------------------------------------------------------
# baselines
# ----------------------------------------------------------------------------------------------

def _singleton_safe(adj: sp.csr_matrix, flips: list, i: int, j: int, deg: np.ndarray, a_ij: float) -> bool:
    return a_ij == 0 or (deg[i] > 1 and deg[j] > 1)


def random_attack(adj: sp.spmatrix, budget: int, seed: int = 0, forbidden_pairs: Optional[np.ndarray] = None,
                  mode: str = "flip") -> np.ndarray:
    """Uniformly random flips ``[budget, 2]`` (``mode``: "flip" any pair, "add" non-edges only,
    "remove" edges only), avoiding self-loops, repeated pairs, forbidden pairs and singletons."""
    from poisonjax.core.validation import check_choice
    check_choice("mode", mode, ("flip", "add", "remove"))
    a = sp.csr_matrix(adj)
    n = a.shape[0]
    rng = np.random.default_rng(seed)
    deg = np.asarray(a.sum(1)).ravel().astype(np.int64)
    forb = set() if forbidden_pairs is None else {(min(p), max(p)) for p in map(tuple, np.asarray(forbidden_pairs).tolist())}
    edges = np.stack(sp.triu(a, 1).nonzero(), 1)
    out, seen = [], set()
    tries = 0
    while len(out) < budget:
        tries += 1
        if tries > 200 * budget + 10000:
            raise PoisonJaxInputError(f"could not find {budget} valid random flips (mode={mode!r})")
        if mode == "remove" or (mode == "flip" and rng.random() < len(edges) / max(1, n * (n - 1) / 2)):
            i, j = edges[rng.integers(len(edges))]
        else:
            i, j = rng.integers(n, size=2)
        i, j = int(min(i, j)), int(max(i, j))
        if i == j or (i, j) in seen or (i, j) in forb:
            continue
        e = a[i, j]
        if mode == "add" and e:
            continue
        if e and not (deg[i] > 1 and deg[j] > 1):
            continue
        d = -1 if e else 1
        deg[i] += d
        deg[j] += d
        seen.add((i, j))
        out.append((i, j))
    return np.asarray(out, np.int64).reshape(-1, 2)


def dice_attack(adj: sp.spmatrix, labels: np.ndarray, budget: int, seed: int = 0,
                forbidden_pairs: Optional[np.ndarray] = None, add_ratio: float = 0.5) -> np.ndarray:
    """DICE (Waniek et al., "Hiding individuals and communities in a social network", Nat. Hum. Behav.
    2018): *delete* edges between nodes of the same class (internally) and *connect* nodes of different
    classes (externally), about ``add_ratio`` of the budget as additions. For link prediction pass
    communities (e.g. spectral clusters or surrogate labels) as ``labels``. No singletons."""
    a = sp.csr_matrix(adj)
    n = a.shape[0]
    y = np.asarray(labels)
    rng = np.random.default_rng(seed)
    deg = np.asarray(a.sum(1)).ravel().astype(np.int64)
    forb = set() if forbidden_pairs is None else {(min(p), max(p)) for p in map(tuple, np.asarray(forbidden_pairs).tolist())}
    edges = np.stack(sp.triu(a, 1).nonzero(), 1)
    internal = edges[y[edges[:, 0]] == y[edges[:, 1]]]
    rng.shuffle(internal)
    n_add = int(round(add_ratio * budget))
    out, seen = [], set()
    for i, j in internal:
        if len(out) >= budget - n_add:
            break
        i, j = int(i), int(j)
        if (i, j) in forb or not (deg[i] > 1 and deg[j] > 1):
            continue
        deg[i] -= 1
        deg[j] -= 1
        seen.add((i, j))
        out.append((i, j))
    tries = 0
    while len(out) < budget:
        tries += 1
        if tries > 1000 * budget + 10000:
            raise PoisonJaxInputError(f"DICE could not find {budget} valid flips")
        i, j = (int(v) for v in rng.integers(n, size=2))
        i, j = min(i, j), max(i, j)
        if i == j or y[i] == y[j] or a[i, j] or (i, j) in seen or (i, j) in forb:
            continue
        seen.add((i, j))
        out.append((i, j))
    return np.asarray(out, np.int64).reshape(-1, 2)


def pgd_attack(loss_fn, a_clean: jax.Array, allowed: jax.Array, budget: int, key, steps: int = 100,
               lr: float = 1.0, samples: int = 20) -> np.ndarray:
    r"""PGD topology attack (Xu et al., "Topology Attack and Defense for Graph Neural Networks", IJCAI
    2019): relax flips to :math:`p \in [0,1]^{N\times N}` (upper triangle), maximise
    ``loss_fn(A(p))`` with :math:`A(p) = A + (1 - 2A)\odot(p + p^\top)` by projected gradient ascent
    onto :math:`\{0\le p\le 1, \sum p \le B\}` with step :math:`\eta_t = \text{lr}\cdot B/\sqrt{t+1}`
    along the L2-normalised gradient (the paper scales :math:`200/\sqrt t` by :math:`B/N^2`), then draw
    ``samples`` Bernoulli(p) flip sets and keep the valid one with the highest loss (falling back to
    the top-``B`` weights). Returns flips ``[<=B, 2]``.

    Simplified: the loss is evaluated on a fixed (surrogate) model, i.e. an evasion-style objective
    on the poisoned graph, as in the paper's "fixed victim" setting; no re-training inside the loop."""
    allowed = allowed.astype(jnp.float32)

    def a_of(p):
        return relaxed_adj(a_clean, p * allowed)

    grad = jax.jit(jax.grad(lambda p: loss_fn(a_of(p))))

    @jax.jit
    def update(p, t):
        return pgd_ascent_step(p, grad(p), lr * budget / jnp.sqrt(t + 1.0), allowed, budget)

    p = jnp.zeros_like(a_clean)
    for t in range(steps):
        p = update(p, jnp.float32(t))
    best, best_loss = None, -jnp.inf
    lossj = jax.jit(lambda a_: loss_fn(a_))
    keys = jax.random.split(key, samples)
    for k in keys:
        m = (jax.random.uniform(k, p.shape) < p) & (allowed > 0)
        if int(m.sum()) > budget:
            continue
        l = float(lossj(a_of(m.astype(jnp.float32))))
        if l > best_loss:
            best, best_loss = m, l
    if best is None:  # fall back to the top-B entries of p
        from poisonjax.core.projections import topk_mask
        best = topk_mask(p, budget, allowed > 0)
    idx = np.argwhere(np.asarray(best))
    return _drop_singleton_flips(np.asarray(a_clean), idx)


def _drop_singleton_flips(a: np.ndarray, flips: np.ndarray) -> np.ndarray:
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


SURROGATES = ("deeprobust", "prognn")


def self_training_labels(adj: sp.spmatrix, features, labels, idx_train, idx_val, key,
                         epochs: int = 200, surrogate: str = "deeprobust") -> np.ndarray:
    """Metattack's self-training labels: the argmax predictions ``[N]`` of a linearised GCN surrogate
    (hidden 16, no ReLU; Adam lr 0.01, no weight decay, 200 epochs) trained on the clean graph,
    with the true labels kept on ``idx_train``. ``surrogate`` picks the surrogate's remaining settings:

    * ``"deeprobust"`` (DeepRobust's Metattack example): no bias, no dropout, parameters of the best
      validation loss;
    * ``"prognn"`` (Pro-GNN's ``generate_attack.py``, which made the reference perturbed graphs):
      bias, dropout 0.5 on the hidden layer, trained on ``idx_train`` only, last epoch's parameters.

    Both follow DeepRobust's ``GCN`` exactly: ``GraphConvolution`` init (weights and biases from
    :math:`U(\pm 1/\sqrt{d_{out}})`) and *no* weight decay, because DeepRobust's ``GCN.__init__``
    sets ``weight_decay = 0`` whenever ``with_relu=False``, whatever the caller passes. With weight
    decay 5e-4 the ``prognn`` surrogate labels Cora's unlabelled nodes with accuracy 0.828; as
    DeepRobust trains it, 0.818 (DeepRobust itself: 0.819; 5 seeds each,
    ``benchmarks/surrogate_labels_vs_deeprobust.py``).
    """
    from poisonjax.core.validation import check_choice
    from poisonjax.graph.models import GCNConfig, normalize_adj_sparse, train_gcn
    check_choice("surrogate", surrogate, SURROGATES)
    if surrogate == "deeprobust":
        cfg = GCNConfig(dropout=0.0, with_relu=False, with_bias=False, epochs=epochs, weight_init="deeprobust",
                        weight_decay=0.0)
    else:
        cfg = GCNConfig(dropout=0.5, with_relu=False, with_bias=True, epochs=epochs, val_selection=False,
                        weight_init="deeprobust", weight_decay=0.0)
    a_hat = normalize_adj_sparse(adj)
    x = jnp.asarray(sp.csr_matrix(features).toarray(), jnp.float32)
    y = jnp.asarray(labels)
    nc = int(np.max(labels)) + 1
    model, p = train_gcn(a_hat, x, y, jnp.asarray(idx_train), jnp.asarray(idx_val), key, nc, cfg)
    pred = np.asarray(jnp.argmax(model.apply(p, a_hat, x), -1)).astype(np.int32)
    pred[idx_train] = np.asarray(labels)[idx_train]
    return pred
