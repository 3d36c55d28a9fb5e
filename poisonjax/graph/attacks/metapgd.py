r"""Meta-PGD (Mujkanovic et al., NeurIPS 2022): projected gradient ascent on relaxed flips driven by
Metattack's meta-gradient, and turning relaxed flips into discrete flip sets (Bernoulli sampling and the
attacker-side selection among candidates).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from poisonjax.core.types import AttackOptimizer
from poisonjax.core.validation import PoisonJaxInputError, check_choice, check_positive_int
from poisonjax.graph.attacks.flips import drop_singleton_flips, flips_to_adj
from poisonjax.graph.attacks.metagrad import (ATTACK_LOSSES, MetattackConfig, adj_grad_from_hat,
                                              meta_grad_hat_dense)


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


def sample_flip_sets(p: np.ndarray, a_clean: np.ndarray, budget: int, samples: int, seed: int = 0) -> list:
    r"""Discrete flip sets ``[<=B, 2]`` from relaxed flips ``p`` (upper triangle): the top-``B``
    entries of ``p``, then ``samples`` draws :math:`m \sim \mathrm{Bernoulli}(p)` (a draw with more
    than ``B`` flips keeps its ``B`` most probable ones). Removals that would leave a node without
    edges are dropped (:func:`drop_singleton_flips`), so every set is valid."""
    check_positive_int("budget", budget)
    check_positive_int("samples", samples, minimum=0)
    p = np.asarray(p, np.float64)
    if p.ndim != 2 or p.shape != np.shape(a_clean):
        raise PoisonJaxInputError(f"p must be [N, N] like a_clean {np.shape(a_clean)}, got shape {p.shape}")
    iu = np.argwhere(p > 0)
    w = p[iu[:, 0], iu[:, 1]]
    order = np.argsort(-w, kind="stable")
    out = [drop_singleton_flips(a_clean, iu[order[:budget]])]
    rng = np.random.default_rng(seed)
    for _ in range(samples):
        hit = rng.random(w.shape[0]) < w
        idx = np.flatnonzero(hit)
        idx = idx[np.argsort(-w[idx], kind="stable")][:budget]
        out.append(drop_singleton_flips(a_clean, iu[idx]))
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
