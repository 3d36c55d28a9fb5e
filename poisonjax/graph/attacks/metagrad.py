r"""Metattack on GCN node classification: exact and approximate meta-gradients, the attack losses and
the greedy attack (:func:`metattack`).

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
from poisonjax.graph.attacks.flips import MetaState, greedy_flip_optimizer, num_steps, upper_pairs_mask
from poisonjax.graph.models import fan_out_uniform, normalize_adj


class MetaProblem(NamedTuple):
    r"""Fixed inputs of Metattack (all arrays; build with :func:`make_meta_problem`).

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
                      self_labels=None, lambda_: float = 0.0,
                      forbidden_pairs: Optional[np.ndarray] = None, allow_test_labels: bool = False,
                      key=None, num_classes: Optional[int] = None) -> MetaProblem:
    r"""Build a :class:`MetaProblem`.

    ``adj`` ``[N, N]`` symmetric 0/1 (scipy sparse or dense); ``features`` ``[N, F]`` dense or scipy
    sparse; ``labels`` ``[N]`` int, of which only ``labels[idx_train]`` is read unless
    ``allow_test_labels=True``; ``idx_unlabeled`` the nodes of the attack loss
    (:math:`\mathcal{L} = \lambda\,\mathrm{CE}_{train} + (1-\lambda)\,\mathrm{CE}_{unlabelled}`).
    The labels of the attack loss are :func:`~poisonjax.graph.attacks.selftrain.attacker_labels`: the
    training labels plus ``self_labels`` (an array ``[N]`` of the attacker's predictions; ``None``, the
    default, trains the Pro-GNN self-training surrogate on ``idx_train`` with ``key``; ``"true"``, the
    oracle with every true label, needs ``allow_test_labels=True``). ``forbidden_pairs`` ``[k, 2]`` are
    never flipped."""
    from poisonjax.graph.attacks.selftrain import attacker_labels
    from poisonjax.data.graphs import as_symmetric_unweighted
    adj = as_symmetric_unweighted(adj, "adj")
    n = adj.shape[0]
    x = sp.coo_matrix(features, dtype=np.float32)
    if x.shape[0] != n:
        raise PoisonJaxInputError(f"features must have {n} rows (one per node), got shape {x.shape}")
    y = attacker_labels(adj, features, labels, idx_train, self_labels, allow_test_labels, key, num_classes,
                        caller="make_meta_problem")
    tw = np.zeros(n, np.float32)
    tw[idx_train] = 1.0 / len(idx_train)
    aw = np.zeros(n, np.float32)
    if lambda_ > 0:
        aw[idx_train] += lambda_ / len(idx_train)
    if lambda_ < 1:
        aw[idx_unlabeled] += (1 - lambda_) / len(idx_unlabeled)
    coo = adj.tocoo()
    return MetaProblem(
        a_clean=jnp.asarray(adj.toarray(), jnp.float32), allowed=jnp.asarray(upper_pairs_mask(n, forbidden_pairs)),
        x_rows=jnp.asarray(x.row, jnp.int32), x_cols=jnp.asarray(x.col, jnp.int32),
        x_vals=jnp.asarray(x.data, jnp.float32), x_dim=jnp.zeros((x.shape[1],), jnp.float32),
        e_rows=jnp.asarray(coo.row, jnp.int32), e_cols=jnp.asarray(coo.col, jnp.int32),
        labels=jnp.asarray(y), train_w=jnp.asarray(tw), attack_w=jnp.asarray(aw),
        train_idx=jnp.asarray(np.sort(np.asarray(idx_train)), jnp.int32))


def spmm(rows, cols, vals, m, n):
    """Sparse ``[n, n] @ m``: :math:`(\\hat A m)_r = \\sum_{e: r_e = r} v_e\\, m_{c_e}`."""
    return jax.ops.segment_sum(vals[:, None] * m[cols], rows, num_segments=n)


def sparse_norm_adj(prob: MetaProblem, state: MetaState):
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
    return fan_out_uniform(h)(k1, (f, h)), fan_out_uniform(c)(k2, (h, c))


def _wce(logits, labels, w):
    return jnp.sum(w * optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def meta_grad_hat(prob: MetaProblem, state: MetaState, cfg: MetattackConfig, key) -> tuple:
    r"""``(loss, dL/dÂ [N, N], s [N])`` -- the meta-gradient with respect to the normalised adjacency
    (fast low-rank path; exact unrolled or first-order per ``cfg``); ``s`` = :math:`\tilde d^{-1/2}`.
    Â is applied through the sparse slots of ``state`` (clean edges, self-loops, flips)."""
    n = prob.a_clean.shape[0]
    rows, cols, vals, s = sparse_norm_adj(prob, state)
    loss, g_hat = _meta_grad_hat_core(prob, lambda m: spmm(rows, cols, vals, m, n), cfg, key)
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


def metattack(cfg: MetattackConfig) -> AttackOptimizer:
    """Metattack as an :class:`~poisonjax.core.types.AttackOptimizer` (:func:`greedy_flip_optimizer`
    over :func:`meta_score`): each ``step`` computes one meta-gradient and flips up to
    ``cfg.flips_per_step`` pairs; run it for :func:`num_steps` steps (e.g. with
    :func:`poisonjax.core.runner.run`)."""
    check_positive_int("inner_steps", cfg.inner_steps)
    check_choice("loss", cfg.loss, ATTACK_LOSSES)
    return greedy_flip_optimizer(lambda prob, st, key: meta_score(prob, st, cfg, key), cfg.budget,
                                 cfg.flips_per_step, cfg.ll_constraint, cfg.ll_cutoff)


def run_metattack(prob: MetaProblem, cfg: MetattackConfig, key, workdir=None, progress: bool = True,
                  chunk_size: int = 10, config=None, full_result: bool = False):
    """Run :func:`metattack` to the full budget through :func:`poisonjax.core.runner.run`
    (checkpointed and resumable when ``workdir`` is given). Returns the final :class:`MetaState`, or
    the :class:`~poisonjax.core.runner.RunResult` (``resumed_from`` etc.) with ``full_result=True``."""
    from poisonjax.core.runner import run
    res = run(metattack(cfg), prob, num_steps(cfg), workdir, key=key, chunk_size=chunk_size,
              progress=progress, desc="metattack", config=config if config is not None else cfg._asdict())
    return res if full_result else res.state


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
# cost of the dense attacks
# ----------------------------------------------------------------------------------------------

def dense_attack_estimate(n: int, budget: int, flips_per_step: int = 1, inner_steps: int = 100, hidden: int = 16,
                          num_classes: int = 7, pgd_steps: int = 0) -> dict:
    r"""Rough cost of dense Metattack (and Meta-PGD with ``pgd_steps > 0``) on ``n`` nodes.

    Memory: a greedy step keeps about ten ``[N, N]`` float32 arrays alive (clean / current adjacency, the
    meta-gradient :math:`\bar G`, its chain rule, the score and masks), Meta-PGD about fourteen (the dense
    :math:`\hat A`, the relaxed flips and their update): :math:`\approx 40 N^2` / :math:`56 N^2` bytes.
    Work: one meta-gradient is dominated by the GEMM :math:`\bar G = U M^\top` of inner size
    :math:`T(2H+2C)+H+C`, i.e. :math:`2N^2(T(2H+2C)+H+C)` flops; :func:`~poisonjax.graph.attacks.flips.num_steps`
    meta-gradients for the greedy stage. Returns a dict with ``memory_bytes``, ``memory_gib``,
    ``meta_gradients``, ``gflop_per_meta_gradient`` and ``gflop``."""
    k = max(1, min(int(flips_per_step), int(budget)))
    steps = -(-int(budget) // k)
    steps = steps if k == 1 else steps + -(-steps // 4)
    steps += int(pgd_steps)
    mem = (56 if pgd_steps else 40) * float(n) ** 2
    gflop = 2.0 * float(n) ** 2 * (inner_steps * (2 * hidden + 2 * num_classes) + hidden + num_classes) / 1e9
    return {"memory_bytes": mem, "memory_gib": mem / 2 ** 30, "meta_gradients": steps,
            "gflop_per_meta_gradient": gflop, "gflop": gflop * steps}


def available_memory_bytes() -> Optional[float]:
    """Memory the dense attacks can use: the accelerator's ``bytes_limit`` when JAX runs on one, else the
    host's ``MemAvailable`` (``/proc/meminfo``); ``None`` where neither is known."""
    try:
        dev = jax.devices()[0]
        if dev.platform != "cpu":
            stats = dev.memory_stats() or {}
            if "bytes_limit" in stats:
                return float(stats["bytes_limit"]) - float(stats.get("bytes_in_use", 0))
    except Exception:  # noqa: BLE001 -- a backend without memory stats
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024.0
    except OSError:
        pass
    return None
