r"""Baseline structure attacks: uniformly random flips, DICE, and the PGD topology attack of Xu et al.
(2019) on a fixed surrogate. Each returns flips ``[<=B, 2]`` that respect the rules of
:mod:`poisonjax.graph.attacks.flips` (no self-loop, no singleton, no pair twice, no forbidden pair).
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from poisonjax.core.validation import PoisonJaxInputError, check_choice
from poisonjax.graph.attacks.flips import drop_singleton_flips
from poisonjax.graph.attacks.metapgd import pgd_ascent_step, relaxed_adj


def random_attack(adj: sp.spmatrix, budget: int, seed: int = 0, forbidden_pairs: Optional[np.ndarray] = None,
                  mode: str = "flip") -> np.ndarray:
    """Uniformly random flips ``[budget, 2]`` (``mode``: "flip" any pair, "add" non-edges only,
    "remove" edges only), avoiding self-loops, repeated pairs, forbidden pairs and singletons."""
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
    return drop_singleton_flips(np.asarray(a_clean), idx)
