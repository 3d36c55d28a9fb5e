r"""Poisoning VGAE link prediction with meta-gradients (the seed paper, 2025) and its baselines.

Setting: the victim is a (V)GAE (Kipf & Welling 2016; encoder 32-16, Adam lr 0.005, 200 epochs, no
dropout) trained on the *training graph* of an 85/5/10 edge split; the attacker flips up to
:math:`B = \lfloor\text{rate}\cdot|E_{train}|\rfloor` pairs of the training graph (never a validation or
test pair, never a self-loop, never creating a singleton) to lower the victim's test AUC/AP.

Attacks (each returns flips ``[<=B, 2]``):

* :func:`vgae_meta_attack` -- Metattack-style greedy flips on :math:`S=(g+g^\top)\odot(1-2A)`, where
  :math:`g = \nabla_A \mathcal{L}_{out}(\theta_T(A), A)`, :math:`\theta_T` = ``T`` unrolled Adam steps of
  the VGAE objective on :math:`A` (``lax.scan`` + ``jax.checkpoint``, exact) or the first-order sum
  along the trajectory (``first_order=True``, A-Meta), ``flips_per_step`` flips per meta-gradient.
  :math:`\mathcal{L}_{out}` is the link BCE of the inner-product decoder on

  - ``objective="train"``: the training edges and as many training non-edges;
  - ``objective="self"``: pseudo-links of a surrogate VGAE trained on the clean graph
    (:func:`pseudo_links`; the link-prediction analogue of Meta-Self);
  - ``objective="test"``: the *test* pairs with their labels -- a white-box shortcut, refused unless
    ``allow_test_labels=True``;

  with ``loss="rank"`` the BCE is replaced by a scale-invariant AUC surrogate (:func:`outer_link_loss`).
  ``fast=True`` (first-order only) computes the meta-gradient with a sparse :math:`\hat A` and one
  low-rank GEMM (:func:`vgae_meta_grad_fast`), which makes Cora-size graphs practical on a CPU.
* :func:`vgae_oneshot` -- the authors' public procedure: sum over the victim's training epochs the
  gradient of the link BCE with respect to the *normalised* adjacency :math:`\hat A`, then flip once:
  half the budget as additions at the largest positive scores, half as removals at the most negative.
  (The authors use the test pairs; here that needs ``allow_test_labels=True``; default ``"train"``.)
* random / DICE / PGD baselines from :mod:`poisonjax.graph.attacks`.

What the threat model decides (Cora, 85/5/10 split, VGAE 32-16, 200 epochs, 3 victim seeds; measured
with ``poisonjax run vgae_attack --variant cora_whitebox`` and ``--variant cora_fast``):

* With the authors' white-box loss (the test pairs and their labels), the first-order meta attack
  lowers test AUC from 0.912 to 0.830 / 0.771 / 0.682 at 5 / 10 / 20% of the training edges, against
  0.870 / 0.838 / 0.794 for the authors' one-shot procedure on the same loss (the issue's run of the authors'
  code: about 0.89 / 0.87 / 0.81) and 0.899 / 0.893 / 0.892 for random flips. The meta-gradient is the stronger
  optimiser by a wide margin.
* Without test labels (``train`` or ``self`` pseudo-links) neither procedure beats random flips on
  Cora by more than seed noise (5%: random 0.906, meta-self 0.903-0.904, one-shot on pseudo-links
  0.904, on training pairs 0.915; 8 victim seeds). The white-box loss works because it can raise the
  scores of the specific test non-edges and lower those of the specific hidden edges; pseudo-links
  drawn from the surrogate (even the top-scoring pairs of all non-training pairs, which contain a
  quarter of the held-out edges) carry no such pair-specific signal. On SBM graphs, whose link
  structure the surrogate captures, the self-training meta attack does beat random and DICE (tested).
"""
from __future__ import annotations

import functools

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.sparse as sp

from poisonjax.core import bilevel
from poisonjax.core.validation import PoisonJaxInputError, check_choice
from poisonjax.graph import attacks as gatt
from poisonjax.graph.metrics import link_auc_ap
from poisonjax.graph.models import GraphEncoder, VGAEConfig, normalize_adj, vgae_loss
from poisonjax.graph.splits import LinkSplit

OBJECTIVES = ("train", "self", "both", "test")


class VGAEProblem(NamedTuple):
    """Inputs of the VGAE attacks: ``a_clean`` ``[N, N]`` training graph (0/1), ``allowed`` ``[N, N]``
    bool (upper triangle minus held-out pairs), features ``x`` ``[N, F]``, objective ``pairs`` ``[P, 2]``
    with ``pair_labels`` ``[P]`` (1 link / 0 non-link)."""

    a_clean: jax.Array
    allowed: jax.Array
    x: jax.Array
    pairs: jax.Array
    pair_labels: jax.Array
    e_rows: Optional[jax.Array] = None   # clean training edges, both directions (sparse fast path)
    e_cols: Optional[jax.Array] = None
    rank_pos: Optional[jax.Array] = None  # indices into pairs: each positive with a negative ("rank" loss)
    rank_neg: Optional[jax.Array] = None


class VGAEAttackConfig(NamedTuple):
    """Static settings of :func:`vgae_meta_attack` (victim settings in ``victim``)."""

    budget: int
    inner_steps: int = 100
    first_order: bool = False
    flips_per_step: int = 1
    remat: bool = True
    victim: VGAEConfig = VGAEConfig()
    fast: bool = False      # first-order only: sparse Â + low-rank gradient (see vgae_meta_grad_fast)
    max_per_node: Optional[int] = 1   # with flips_per_step > 1: at most this many flips per node and step
    loss: str = "bce"       # attack loss on the objective pairs: "bce" | "rank" (see outer_link_loss)


def objective_pairs(split: LinkSplit, objective: str, pseudo: Optional[tuple] = None,
                    allow_test_labels: bool = False):
    """``(pairs [P, 2], labels [P])`` of the attack loss for ``objective`` (see module doc)."""
    check_choice("objective", objective, OBJECTIVES)
    if objective == "test":
        if not allow_test_labels:
            raise PoisonJaxInputError(
                "objective='test' uses the test pairs' labels (a white-box shortcut); pass "
                "allow_test_labels=True to use it, or use objective='train' / 'self'")
        pos, neg = split.test_pos, split.test_neg
        return np.concatenate([pos, neg]), np.concatenate([np.ones(len(pos)), np.zeros(len(neg))]).astype(np.float32)
    parts, labs = [], []
    if objective in ("train", "both"):
        parts += [split.train_pos, split.train_neg]
        labs += [np.ones(len(split.train_pos)), np.zeros(len(split.train_neg))]
    if objective in ("self", "both"):
        if pseudo is None:
            raise PoisonJaxInputError(f"objective={objective!r} needs pseudo-links (see pseudo_links)")
        parts.append(pseudo[0])
        labs.append(pseudo[1])
    return np.concatenate(parts).astype(np.int64), np.concatenate(labs).astype(np.float32)


def pseudo_links(z: np.ndarray, split: LinkSplit, n_pairs: Optional[int] = None, pool_factor: int = 20,
                 seed: int = 0):
    """Self-training pseudo-links from surrogate embeddings ``z`` ``[N, d]`` (trained on the clean
    training graph): from a pool of ``pool_factor * n_pairs`` random node pairs that are not training
    pairs, the ``n_pairs`` highest-scoring become pseudo-positives and ``n_pairs`` random others
    pseudo-negatives. Uses no held-out labels. Returns ``(pairs [2 n_pairs, 2], labels)``."""
    n = z.shape[0]
    n_pairs = n_pairs or len(split.train_pos)
    rng = np.random.default_rng(seed)
    train_codes = np.concatenate([np.minimum(p[:, 0], p[:, 1]) * n + np.maximum(p[:, 0], p[:, 1])
                                  for p in (split.train_pos, split.train_neg)])
    i = rng.integers(0, n, pool_factor * n_pairs)
    j = rng.integers(0, n, pool_factor * n_pairs)
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    codes = np.unique(lo * n + hi)
    codes = codes[(codes // n != codes % n) & ~np.isin(codes, train_codes)]
    rng.shuffle(codes)
    pool = np.stack([codes // n, codes % n], 1)
    s = np.sum(z[pool[:, 0]] * z[pool[:, 1]], -1)
    order = np.argsort(-s)
    pos = pool[order[:n_pairs]]
    rest = pool[order[n_pairs:]]
    neg = rest[rng.choice(len(rest), size=min(n_pairs, len(rest)), replace=False)]
    return np.concatenate([pos, neg]), np.concatenate([np.ones(len(pos)), np.zeros(len(neg))]).astype(np.float32)


def make_vgae_problem(split: LinkSplit, x, pairs, labels) -> VGAEProblem:
    """Build a :class:`VGAEProblem` (held-out pairs are not flippable)."""
    n = split.adj_train.shape[0]
    allowed = gatt.upper_pairs_mask(n, split.held_out_pairs())
    coo = sp.coo_matrix(split.adj_train)
    labels = np.asarray(labels)
    pos, neg = np.flatnonzero(labels > 0.5), np.flatnonzero(labels <= 0.5)
    m = max(len(pos), len(neg))
    neg = np.random.default_rng(0).permutation(neg)
    rp = pos[np.arange(m) % len(pos)] if len(pos) else np.zeros(0, np.int64)
    rn = neg[np.arange(m) % len(neg)] if len(neg) else np.zeros(0, np.int64)
    return VGAEProblem(jnp.asarray(split.adj_train.toarray(), jnp.float32), jnp.asarray(allowed),
                       jnp.asarray(x, jnp.float32), jnp.asarray(pairs, jnp.int32), jnp.asarray(labels, jnp.float32),
                       jnp.asarray(coo.row, jnp.int32), jnp.asarray(coo.col, jnp.int32),
                       jnp.asarray(rp, jnp.int32), jnp.asarray(rn, jnp.int32))


def _link_bce(z, pairs, labels):
    logits = jnp.sum(z[pairs[:, 0]] * z[pairs[:, 1]], -1)
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels))


LOSSES = ("bce", "rank")


def outer_link_loss(z, prob: VGAEProblem, loss: str = "bce"):
    r"""Attack loss on the objective pairs of ``prob`` for embeddings ``z`` ``[N, d]`` (to maximise).

    * ``"bce"``: the link BCE :math:`\frac1P\sum_p \mathrm{BCE}(z_{i_p}^\top z_{j_p}, y_p)` (the seed paper's);
    * ``"rank"``: a smooth, scale- and shift-invariant surrogate of :math:`1 - \mathrm{AUC}`,
      :math:`\frac1M\sum_m \mathrm{softplus}((s_{n_m} - s_{p_m})/\sigma_s)` over fixed (positive,
      negative) pairings ``rank_pos``/``rank_neg`` with :math:`\sigma_s` the std of the pair scores.
      BCE can be raised by rescaling all scores, which leaves AUC unchanged; this loss cannot.
      (Not in the paper: an option of this library.)"""
    if loss == "bce":
        return _link_bce(z, prob.pairs, prob.pair_labels)
    logits = jnp.sum(z[prob.pairs[:, 0]] * z[prob.pairs[:, 1]], -1)
    sd = jnp.sqrt(jnp.var(logits) + 1e-12)
    return jnp.mean(jax.nn.softplus((logits[prob.rank_neg] - logits[prob.rank_pos]) / sd))


def vgae_meta_grad(prob: VGAEProblem, a: jax.Array, cfg: VGAEAttackConfig, key):
    """``(loss, dL_out/dA [N, N])`` through ``cfg.inner_steps`` Adam steps of the VGAE objective on
    ``a`` (exact unrolled with ``jax.checkpoint``, or first-order), via :mod:`poisonjax.core.bilevel`."""
    v = cfg.victim
    enc = GraphEncoder(v.hidden, v.latent, v.variational)
    k0, k1 = jax.random.split(key)
    n = a.shape[0]
    params0 = enc.init(k0, jnp.eye(n, dtype=jnp.float32), prob.x)

    def inner(p, a_, k):
        return vgae_loss(enc, p, normalize_adj(a_), prob.x, a_ + jnp.eye(n, dtype=a_.dtype), k, v.variational)

    def outer(p, a_):
        mu = enc.apply(p, normalize_adj(a_), prob.x)[0]
        return outer_link_loss(mu, prob, cfg.loss)

    # eps_root keeps Adam's sqrt differentiable where a gradient entry is exactly zero (else NaN)
    opt = optax.adam(v.lr, eps_root=1e-8)
    if cfg.first_order:
        return bilevel.first_order_meta_grad(outer, inner, params0, a, opt, cfg.inner_steps, k1)
    return bilevel.unrolled_meta_grad(outer, inner, params0, a, opt, cfg.inner_steps, k1, remat=cfg.remat)


def vgae_meta_grad_fast(prob: VGAEProblem, state, cfg: VGAEAttackConfig, key):
    r"""First-order (A-Meta) meta-gradient ``(loss, dL_out/dA [N, N])`` on the fast path.

    The victim is trained for ``T = cfg.inner_steps`` Adam steps of the full VGAE objective (dense
    :math:`N^2` reconstruction term, labels :math:`A + I`) with a *sparse* :math:`\hat A` built from the
    clean edges and the flips in ``state`` (O(|E| d) per product). Along the trajectory, the outer loss
    :math:`\mathcal L_{out}(\theta_t)` depends on :math:`\hat A` only through the products
    :math:`P_1 = \hat A (X W_0)` and :math:`\mu = \hat A (H W_\mu)`, so

    .. math:: \sum_t \nabla_{\hat A}\mathcal L_{out}(\theta_t) = \sum_t \bar P_{1,t} (X W_{0,t})^\top
              + \bar\mu_t (H_t W_{\mu,t})^\top,

    one ``[N, T(h+d)] @ [T(h+d), N]`` GEMM (:func:`poisonjax.core.bilevel.low_rank_matmul_meta_grad`),
    followed by the chain rule through :math:`\tilde D^{-1/2}(A+I)\tilde D^{-1/2}`. Equals
    :func:`vgae_meta_grad` with ``first_order=True`` (tested) at O(T(|E| d + N^2 d)) instead of dense
    :math:`\hat A` products."""
    v = cfg.victim
    if not v.variational:
        raise PoisonJaxInputError("the fast VGAE path supports variational=True only")
    n = prob.a_clean.shape[0]
    rows, cols, vals, s = gatt.sparse_norm_adj(prob, state)
    spmm = lambda m: gatt.spmm(rows, cols, vals, m, n)
    enc = GraphEncoder(v.hidden, v.latent, v.variational)
    k0, k1 = jax.random.split(key)
    params0 = enc.init(k0, jnp.eye(n, dtype=jnp.float32), prob.x)
    label = state.a + jnp.eye(n, dtype=state.a.dtype)
    opt = optax.adam(v.lr, eps_root=1e-8)  # as vgae_meta_grad

    def encode(p, u1=0.0, u2=0.0):
        q = p["params"]
        xw = prob.x @ q["w0"]
        h = jax.nn.relu(spmm(xw) + u1)
        hm, hs = h @ q["w_mu"], h @ q["w_sigma"]
        return spmm(hm) + u2, spmm(hs), (xw, hm)

    def inner(p, k):
        mu, logstd, _ = encode(p)
        z = mu + jnp.exp(logstd) * jax.random.normal(k, mu.shape, mu.dtype)
        return _recon_kl(z, mu, logstd, label)

    def loss_with_probes(u):
        def step(carry, xs):
            p, st = carry
            k, u1, u2 = xs
            g = jax.grad(inner)(p, k)
            upd, st = opt.update(g, st, p)
            p = optax.apply_updates(p, upd)
            mu, _, ms = encode(jax.lax.stop_gradient(p), u1, u2)
            return (p, st), (outer_link_loss(mu, prob, cfg.loss), ms)

        (_, _), (losses, ms) = jax.lax.scan(step, (params0, opt.init(params0)),
                                            (jax.random.split(k1, cfg.inner_steps), *u))
        return jnp.sum(losses), ms

    T = cfg.inner_steps
    probes = (jnp.zeros((T, n, v.hidden)), jnp.zeros((T, n, v.latent)))
    loss_sum, g_hat = bilevel.low_rank_matmul_meta_grad(loss_with_probes, probes)
    return loss_sum / T, gatt.adj_grad_from_hat(g_hat, state.a, s)


def _recon_kl(z, mu, logstd, label):
    r"""Kipf's VGAE loss (see :func:`poisonjax.graph.models.vgae_loss`) from sampled ``z``, with one
    softplus per pair (:math:`\mathrm{softplus}(-l) = \mathrm{softplus}(l) - l`)."""
    n = label.shape[0]
    logits = z @ z.T
    n_pos = jnp.sum(label)
    pos_weight = (n * n - n_pos) / n_pos
    norm = n * n / (2.0 * (n * n - n_pos))
    sp_l = jax.nn.softplus(logits)
    rec = norm * jnp.mean(pos_weight * label * (sp_l - logits) + (1 - label) * sp_l)
    kl = -(0.5 / n) * jnp.mean(jnp.sum(1 + 2 * logstd - mu ** 2 - jnp.exp(logstd) ** 2, axis=1))
    return rec + kl


def vgae_meta_score(prob: VGAEProblem, state, cfg: VGAEAttackConfig, key):
    """``(loss, (g + gᵀ)(1 - 2A))`` for the greedy step."""
    check_choice("loss", cfg.loss, LOSSES)
    if cfg.fast:
        if not cfg.first_order:
            raise PoisonJaxInputError("fast=True is the first-order (A-Meta) path; set first_order=True")
        loss, g = vgae_meta_grad_fast(prob, state, cfg, key)
    else:
        loss, g = vgae_meta_grad(prob, state.a, cfg, key)
    return loss, (g + g.T) * (1.0 - 2.0 * state.a)


@functools.lru_cache(maxsize=32)
def vgae_meta_attack(cfg: VGAEAttackConfig):
    """The VGAE meta attack as an :class:`~poisonjax.core.types.AttackOptimizer`
    (:func:`poisonjax.graph.attacks.greedy_flip_optimizer`); run for
    :func:`poisonjax.graph.attacks.num_steps` steps. Cached per ``cfg`` (a hashable NamedTuple), so the
    runner's compiled chunk is reused when the same attack runs again in a process (a resumed run)."""
    return gatt.greedy_flip_optimizer(lambda p, s, k: vgae_meta_score(p, s, cfg, k), cfg.budget, cfg.flips_per_step,
                                      max_per_node=cfg.max_per_node)


def run_vgae_meta_attack(prob: VGAEProblem, cfg: VGAEAttackConfig, key, workdir=None, progress: bool = True,
                         config=None) -> np.ndarray:
    """Run :func:`vgae_meta_attack` through :func:`poisonjax.core.runner.run` (resumable with a
    ``workdir``); returns the flips ``[n_flips, 2]``."""
    from poisonjax.core.runner import run
    res = run(vgae_meta_attack(cfg), prob, gatt.num_steps(cfg), workdir, key=key, chunk_size=1,
              progress=progress, desc="vgae-meta", config=config)
    st = res.state
    return np.asarray(st.flips)[: int(st.n_flips)]


def vgae_oneshot(prob: VGAEProblem, budget: int, key, victim: VGAEConfig = VGAEConfig()) -> np.ndarray:
    r"""The authors' one-shot attack: :math:`S = \sum_{t=1}^{E} \nabla_{\hat A}\,\mathrm{BCE}(\theta_t, \hat A)`
    over the ``E = victim.epochs`` training epochs of the victim on the clean graph (gradient with
    respect to the normalised adjacency, parameters fixed), symmetrised; then ``ceil(B/2)`` additions
    at the largest positive scores of non-edges and ``floor(B/2)`` removals at the most negative scores
    of edges (singleton-safe). The objective pairs in ``prob`` decide what it uses (see
    :func:`objective_pairs`; the test-label shortcut only with ``allow_test_labels=True``)."""
    enc = GraphEncoder(victim.hidden, victim.latent, victim.variational)
    a = prob.a_clean
    n = a.shape[0]
    a_hat = normalize_adj(a)
    label = a + jnp.eye(n)
    k0, k1 = jax.random.split(key)
    p0 = enc.init(k0, a_hat, prob.x)
    opt = optax.adam(victim.lr)

    @jax.jit
    def run_(p0, a_hat, label):
        def step(c, k):
            p, s, acc = c
            g = jax.grad(lambda p_: vgae_loss(enc, p_, a_hat, prob.x, label, k, victim.variational))(p)
            u, s = opt.update(g, s, p)
            p = optax.apply_updates(p, u)
            ga = jax.grad(lambda ah: _link_bce(enc.apply(p, ah, prob.x)[0], prob.pairs, prob.pair_labels))(a_hat)
            return (p, s, acc + ga), None
        (_, _, acc), _ = jax.lax.scan(step, (p0, opt.init(p0), jnp.zeros_like(a_hat)), jax.random.split(k1, victim.epochs))
        return acc + acc.T

    score = np.asarray(run_(p0, a_hat, label))
    a_np = np.asarray(a)
    allowed = np.asarray(prob.allowed)
    n_add = -(-budget // 2)
    n_rem = budget - n_add
    add_s = np.where(allowed & (a_np == 0), score, -np.inf).ravel()
    adds = np.argsort(-add_s)[:n_add]
    adds = adds[np.isfinite(add_s[adds])]
    rem_s = np.where(allowed & (a_np > 0), -score, -np.inf).ravel()
    rems = np.argsort(-rem_s)[: 4 * n_rem + 10]
    rems = rems[np.isfinite(rem_s[rems])]
    rem_pairs = gatt.drop_singleton_flips(a_np, np.stack([rems // n, rems % n], 1))[:n_rem]
    return np.concatenate([np.stack([adds // n, adds % n], 1), rem_pairs]).astype(np.int64)


def vgae_pgd(prob: VGAEProblem, budget: int, key, surrogate_params, victim: VGAEConfig = VGAEConfig(),
             steps: int = 100) -> np.ndarray:
    """PGD topology attack (Xu et al. 2019) on the link BCE of a fixed surrogate VGAE
    (:func:`poisonjax.graph.attacks.pgd_attack`)."""
    enc = GraphEncoder(victim.hidden, victim.latent, victim.variational)

    def loss_fn(a):
        return _link_bce(enc.apply(surrogate_params, normalize_adj(a), prob.x)[0], prob.pairs, prob.pair_labels)

    return gatt.pgd_attack(loss_fn, prob.a_clean, prob.allowed, budget, key, steps=steps)


def evaluate_vgae(adj_train: sp.spmatrix, x, split: LinkSplit, keys, victim: VGAEConfig = VGAEConfig(),
                  pad_nnz: Optional[int] = None):
    r"""Train ``len(keys)`` victims (vmapped) on ``adj_train`` and return test ``(auc [K], ap [K])``.

    The encoder uses a sparse (BCOO) :math:`\hat A` padded to ``pad_nnz`` stored entries (so graphs
    with different edge counts share one compiled program); the reconstruction loss is dense."""
    from poisonjax.graph.models import normalize_adj_sparse
    from jax.experimental import sparse as jsparse
    adj_train = sp.csr_matrix(adj_train, dtype=np.float32)
    n = adj_train.shape[0]
    b = normalize_adj_sparse(adj_train)
    nnz = b.data.shape[0]
    pad = max(pad_nnz or nnz, nnz)
    data = jnp.concatenate([b.data, jnp.zeros(pad - nnz, jnp.float32)])
    idx = jnp.concatenate([b.indices, jnp.zeros((pad - nnz, 2), b.indices.dtype)])
    a_hat = jsparse.BCOO((data, idx), shape=(n, n))
    label = jnp.asarray((adj_train + sp.eye(n, dtype=np.float32)).toarray())
    return _eval_fn(victim)(a_hat, label, jnp.asarray(x, jnp.float32), jnp.asarray(split.test_pos),
                            jnp.asarray(split.test_neg), keys)


_EVAL_CACHE = {}


def _eval_fn(victim):
    if victim not in _EVAL_CACHE:
        from poisonjax.core.victims import train_victims
        from poisonjax.graph.models import GRAPH_EXAMPLE, vgae_victim

        def f(a_hat, label, x, pos, neg, keys):
            _, vic = vgae_victim(a_hat, x, label, victim)
            res = train_victims(vic, optax.adam(victim.lr), GRAPH_EXAMPLE, keys, epochs=victim.epochs, batch_size=None)
            return jax.vmap(lambda v: link_auc_ap(vic.apply(v, None), pos, neg))(res.variables)
        _EVAL_CACHE[victim] = jax.jit(f)
    return _EVAL_CACHE[victim]


def surrogate_vgae(adj_train, x, key, victim: VGAEConfig = VGAEConfig()):
    """Train one VGAE on the clean training graph; returns ``(params, mu [N, d] numpy)``."""
    from poisonjax.graph.models import train_vgae, vgae_embed
    a = jnp.asarray(sp.csr_matrix(adj_train).toarray(), jnp.float32)
    x = jnp.asarray(x, jnp.float32)
    enc = GraphEncoder(victim.hidden, victim.latent, victim.variational)
    p = jax.jit(lambda a, x, k: train_vgae(a, x, k, victim)[1])(a, x, key)
    return p, np.asarray(vgae_embed(enc, p, a, x))
