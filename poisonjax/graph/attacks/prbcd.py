r"""Scalable structure poisoning: meta-gradient PR-BCD in O(|E| + block) memory.

Projected Randomized Block Coordinate Descent (Geisler et al., "Robustness of Graph Neural Networks
at Scale", NeurIPS 2021) keeps a random *block* of ``B`` candidate pairs with continuous flip weights
:math:`p \in [0, 1]^B` instead of the dense :math:`N\times N` matrix:

.. math:: A(p) = A + \sum_{b} p_b (1 - 2A_{b}) (e_{i_b} e_{j_b}^\top + e_{j_b} e_{i_b}^\top),

an ascent step :math:`p \leftarrow \Pi(p + \eta_t \nabla_p \mathcal{L} / \|\nabla_p \mathcal{L}\|)` with
:math:`\Pi` the projection onto :math:`\{0 \le p \le 1, \sum p \le B_{flips}\}`
(:func:`poisonjax.core.projections.project_capped_simplex`), and after each epoch the entries with
negligible weight are resampled. The final flips are the best of the top-:math:`B_{flips}` weights and a
few Bernoulli(p) samples.

Here the loss is a *poisoning* objective: :math:`\mathcal{L}(p)` is Metattack's Meta-Self loss after
``T`` unrolled training steps of a linearised GCN on :math:`A(p)` (sparse products throughout, so a
meta-gradient costs O(T (|E| + B) C)). Node pairs are coded as ``i * N + j`` in int32 (``N <= 46,340``).

Simplified against the paper: uniform block sampling without the paper's learning-rate / block-size
heuristics per dataset, no early stopping on the attack loss; the meta-gradient replaces the paper's
evasion losses (as in its poisoning experiments, but with a linearised surrogate).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.sparse as sp

from poisonjax.core.projections import project_capped_simplex
from poisonjax.core.types import AttackOptimizer
from poisonjax.core.validation import PoisonJaxInputError, check_positive_int


class PRBCDProblem(NamedTuple):
    """``edge_codes`` ``[E]`` sorted int32 codes ``i*N+j`` (``i<j``) of the clean edges; ``e_rows``,
    ``e_cols`` ``[E]``; ``x`` ``[N, F]`` features (``None``: identity features, handled without an
    ``[N, N]`` matrix); ``labels`` ``[N]`` (self-training labels);
    ``train_w`` / ``attack_w`` ``[N]`` loss weights; ``deg`` ``[N]`` clean degrees."""

    edge_codes: jax.Array
    e_rows: jax.Array
    e_cols: jax.Array
    x: jax.Array
    labels: jax.Array
    train_w: jax.Array
    attack_w: jax.Array
    deg: jax.Array


class PRBCDState(NamedTuple):
    """``codes`` ``[B]`` candidate pairs; ``p`` ``[B]`` weights; ``key``; ``t`` epoch; ``loss``."""

    codes: jax.Array
    p: jax.Array
    key: jax.Array
    t: jax.Array
    loss: jax.Array


class PRBCDConfig(NamedTuple):
    """Static settings: ``budget`` flips, ``block_size`` candidates, ``num_classes``, inner linear GCN
    (``hidden``, ``inner_steps`` of SGD with ``lr``/``momentum``), step size ``lr_factor`` and
    ``resample_until`` (epochs with resampling)."""

    budget: int
    block_size: int
    num_classes: int
    num_nodes: int
    hidden: int = 16
    inner_steps: int = 20
    lr: float = 0.1
    momentum: float = 0.9
    lr_factor: float = 1.0
    resample_until: int = 1 << 30


def make_prbcd_problem(adj: sp.spmatrix, x, labels, idx_train, idx_unlabeled, self_labels=None,
                       allow_test_labels: bool = False, key=None,
                       num_classes: Optional[int] = None) -> PRBCDProblem:
    """Build a :class:`PRBCDProblem` from a symmetric 0/1 adjacency ``[N, N]`` (scipy sparse or dense) and
    features ``x`` ``[N, F]`` (numpy or scipy sparse; held dense on the device). The attack loss is Meta-Self
    on ``idx_unlabeled`` with the attacker's labels
    (:func:`~poisonjax.graph.attacks.selftrain.attacker_labels`): the training labels plus ``self_labels``
    (``None``, the default, trains the self-training surrogate on ``idx_train``; ``"true"``, the oracle,
    needs ``allow_test_labels=True``). Only ``labels[idx_train]`` is read unless ``allow_test_labels``."""
    from poisonjax.data.graphs import as_symmetric_unweighted
    from poisonjax.graph.attacks.selftrain import attacker_labels
    adj = as_symmetric_unweighted(adj, "adj")
    n = adj.shape[0]
    if n > 46340:
        raise PoisonJaxInputError(f"PR-BCD pair codes are int32: need num_nodes <= 46,340, got {n}")
    if x is not None:
        x = x.toarray() if sp.issparse(x) else np.asarray(x)
        if x.ndim != 2 or x.shape[0] != n:
            raise PoisonJaxInputError(f"x must be [N, F] with N = {n} rows (one per node), got shape {x.shape}")
    up = sp.triu(adj, 1).tocoo()
    codes = (up.row.astype(np.int64) * n + up.col).astype(np.int64)
    order = np.argsort(codes)
    feats = sp.eye(n, format="csr", dtype=np.float32) if x is None else x
    y = attacker_labels(adj, feats, labels, idx_train, self_labels, allow_test_labels, key, num_classes,
                        caller="make_prbcd_problem")
    tw = np.zeros(n, np.float32)
    tw[idx_train] = 1.0 / len(idx_train)
    aw = np.zeros(n, np.float32)
    aw[idx_unlabeled] = 1.0 / len(idx_unlabeled)
    return PRBCDProblem(jnp.asarray(codes[order], jnp.int32), jnp.asarray(up.row[order], jnp.int32),
                        jnp.asarray(up.col[order], jnp.int32), None if x is None else jnp.asarray(x, jnp.float32),
                        jnp.asarray(y),
                        jnp.asarray(tw), jnp.asarray(aw), jnp.asarray(np.asarray(adj.sum(1)).ravel(), jnp.float32))


def _random_codes(key, n, size):
    k1, k2 = jax.random.split(key)
    i = jax.random.randint(k1, (size,), 0, n)
    j = jax.random.randint(k2, (size,), 0, n - 1)
    j = jnp.where(j >= i, j + 1, j)  # j != i
    lo, hi = jnp.minimum(i, j), jnp.maximum(i, j)
    return (lo * n + hi).astype(jnp.int32)


def _is_edge(prob: PRBCDProblem, codes):
    pos = jnp.clip(jnp.searchsorted(prob.edge_codes, codes), 0, prob.edge_codes.shape[0] - 1)
    return prob.edge_codes[pos] == codes


def _dedupe(codes, p):
    """Zero the weight of repeated codes (keeps the first of each)."""
    order = jnp.argsort(codes)
    sc = codes[order]
    dup_sorted = jnp.concatenate([jnp.array([False]), sc[1:] == sc[:-1]])
    dup = jnp.zeros_like(dup_sorted).at[order].set(dup_sorted)
    return jnp.where(dup, 0.0, p), dup


def meta_loss(prob: PRBCDProblem, codes, p, cfg: PRBCDConfig, key) -> jax.Array:
    """Meta-Self loss after ``cfg.inner_steps`` SGD steps of a linearised GCN on :math:`A(p)` (sparse)."""
    n, c, h = cfg.num_nodes, cfg.num_classes, cfg.hidden
    bi, bj = codes // n, codes % n
    sgn = jnp.where(_is_edge(prob, codes), -1.0, 1.0)
    loops = jnp.arange(n, dtype=jnp.int32)
    rows = jnp.concatenate([prob.e_rows, prob.e_cols, bi, bj, loops])
    cols = jnp.concatenate([prob.e_cols, prob.e_rows, bj, bi, loops])
    ne = prob.e_rows.shape[0]
    w = jnp.concatenate([jnp.ones(2 * ne), sgn * p, sgn * p, jnp.ones(n)])
    deg = jax.ops.segment_sum(w, rows, num_segments=n)
    s = jax.lax.rsqrt(jnp.maximum(deg, 1e-6))
    vals = w * s[rows] * s[cols]
    spmm = lambda m: jax.ops.segment_sum(vals[:, None] * m[cols], rows, num_segments=n)
    f = n if prob.x is None else prob.x.shape[1]
    k1, k2 = jax.random.split(key)
    w1 = jax.random.uniform(k1, (f, h), jnp.float32, -1 / math.sqrt(h), 1 / math.sqrt(h))
    w2 = jax.random.uniform(k2, (h, c), jnp.float32, -1 / math.sqrt(c), 1 / math.sqrt(c))
    if prob.x is None:  # identity features: Â² W1 W2 in O(|E| H) per product, no [N, N] matrix
        lin = lambda W: spmm(spmm(W[0])) @ W[1]
    else:
        ax = spmm(spmm(prob.x))  # Â² X: the linearised GCN is Â² X W1 W2
        lin = lambda W: ax @ W[0] @ W[1]
    opt = optax.sgd(cfg.lr, momentum=cfg.momentum)

    def train_loss(W):
        logits = lin(W)
        return jnp.sum(prob.train_w * optax.softmax_cross_entropy_with_integer_labels(logits, prob.labels))

    def step(carry, _):
        W, st = carry
        g = jax.grad(train_loss)(W)
        u, st = opt.update(g, st, W)
        return (optax.apply_updates(W, u), st), None

    W0 = (w1, w2)
    (W, _), _ = jax.lax.scan(jax.checkpoint(step), (W0, opt.init(W0)), None, length=cfg.inner_steps)
    logits = lin(W)
    return jnp.sum(prob.attack_w * optax.softmax_cross_entropy_with_integer_labels(logits, prob.labels))


def prbcd(cfg: PRBCDConfig) -> AttackOptimizer:
    """PR-BCD as an :class:`~poisonjax.core.types.AttackOptimizer` (one epoch per ``step``)."""
    check_positive_int("budget", cfg.budget)
    check_positive_int("block_size", cfg.block_size)
    if cfg.budget > cfg.block_size:
        raise PoisonJaxInputError(f"block_size ({cfg.block_size}) must be >= budget ({cfg.budget})")
    n = cfg.num_nodes

    def init(key, prob):
        k0, k1 = jax.random.split(key)
        return PRBCDState(_random_codes(k0, n, cfg.block_size), jnp.zeros(cfg.block_size, jnp.float32), k1,
                          jnp.int32(0), jnp.float32(0.0))

    def step(state: PRBCDState, prob: PRBCDProblem) -> PRBCDState:
        key, k_in, k_rs = jax.random.split(state.key, 3)
        p, _ = _dedupe(state.codes, state.p)
        loss, g = jax.value_and_grad(lambda p_: meta_loss(prob, state.codes, p_, cfg, k_in))(p)
        eta = cfg.lr_factor * cfg.budget / jnp.sqrt(state.t.astype(jnp.float32) + 1.0)
        p = p + eta * g / (jnp.linalg.norm(g) + 1e-12)
        p = project_capped_simplex(p, float(cfg.budget))
        # resample the candidates whose weight vanished
        keep = (p > 1e-3) | (state.t >= cfg.resample_until)
        codes = jnp.where(keep, state.codes, _random_codes(k_rs, n, cfg.block_size))
        p = jnp.where(keep, p, 0.0)
        return PRBCDState(codes, p, key, state.t + 1, loss)

    def metrics(state, prob):
        return {"attack_loss": state.loss, "mass": jnp.sum(state.p)}

    return AttackOptimizer(init, step, metrics)


def finalize(prob: PRBCDProblem, state: PRBCDState, cfg: PRBCDConfig, key, samples: int = 5) -> np.ndarray:
    """Turn weights into at most ``budget`` discrete flips ``[k, 2]``: the top-``budget`` weights and
    ``samples`` Bernoulli(p) draws (re-scaled to the budget) are scored with :func:`meta_loss`; the best
    one is kept, then removals that would leave a node without edges are dropped."""
    n = cfg.num_nodes
    p, _ = _dedupe(state.codes, state.p)
    _loss = jax.jit(lambda pr, codes, m, k: meta_loss(pr, codes, m, cfg, k))  # arrays as arguments (no constant folding)
    loss_fn = lambda m: _loss(prob, state.codes, m, key)
    cands = []
    _, top = jax.lax.top_k(p, cfg.budget)
    cands.append(jnp.zeros_like(p).at[top].set(1.0) * (p[top].sum() > 0))
    for k in jax.random.split(key, samples):
        m = (jax.random.uniform(k, p.shape) < p).astype(jnp.float32)
        if float(m.sum()) > cfg.budget:  # keep the budget: drop the lowest-weight sampled entries
            _, idx = jax.lax.top_k(jnp.where(m > 0, p, -1.0), cfg.budget)
            m = jnp.zeros_like(m).at[idx].set(1.0)
        cands.append(m)
    losses = [float(loss_fn(m)) for m in cands]
    best = np.asarray(cands[int(np.argmax(losses))]) > 0
    codes = np.asarray(state.codes)[best]
    pairs = np.stack([codes // n, codes % n], 1).astype(np.int64)
    is_edge = np.asarray(_is_edge(prob, jnp.asarray(codes, jnp.int32)))
    deg = np.asarray(prob.deg).astype(np.int64).copy()
    keep = []
    for (i, j), e in zip(pairs, is_edge):
        if e:
            if deg[i] <= 1 or deg[j] <= 1:
                continue
            deg[i] -= 1
            deg[j] -= 1
        keep.append((i, j))
    return np.asarray(keep, np.int64).reshape(-1, 2)


def run_prbcd(prob: PRBCDProblem, cfg: PRBCDConfig, epochs: int, key, workdir=None, progress: bool = True):
    """Run :func:`prbcd` for ``epochs`` through :func:`poisonjax.core.runner.run` and :func:`finalize`;
    returns flips ``[<=budget, 2]``."""
    from poisonjax.core.runner import run
    k0, k1 = jax.random.split(key)
    res = run(prbcd(cfg), prob, epochs, workdir, key=k0, chunk_size=5, progress=progress, desc="pr-bcd",
              config=cfg._asdict())
    return finalize(prob, res.state, cfg, k1)


def flips_to_adj_sparse(adj: sp.spmatrix, flips: np.ndarray) -> sp.csr_matrix:
    """Apply undirected flips to a large sparse adjacency without densifying (O(|E| + k))."""
    a = sp.csr_matrix(adj, dtype=np.float32)
    n = a.shape[0]
    f = np.asarray(flips, np.int64).reshape(-1, 2)
    cur = np.asarray(a[f[:, 0], f[:, 1]]).ravel()
    d = sp.coo_matrix((1.0 - 2.0 * cur, (f[:, 0], f[:, 1])), shape=(n, n))
    out = (a + d + d.T).tocsr()
    out.data = np.round(out.data)
    out.eliminate_zeros()
    return out
