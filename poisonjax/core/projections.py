r"""Projections and budgeted selections used by every attack.

* :func:`project_linf` -- :math:`\Pi_{\|\delta\|_\infty\le\epsilon}(\delta) = \mathrm{clip}(\delta, -\epsilon, \epsilon)`.
* :func:`project_l2` -- per-sample :math:`\delta \cdot \min(1, \epsilon / \|\delta\|_2)`.
* :func:`project_box` -- the perturbation such that :math:`x + \delta \in [lo, hi]`.
* :func:`topk_mask` -- the ``k`` largest scores among valid entries (static ``k``, masks instead of
  dynamic shapes).
* :func:`project_capped_simplex` -- Euclidean projection onto
  :math:`\{p : 0 \le p \le 1, \sum p \le B\}` (PR-BCD style budgets), by bisection on the dual.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp


def project_linf(delta: jax.Array, eps) -> jax.Array:
    """Clip every entry of ``delta`` to ``[-eps, eps]``."""
    return jnp.clip(delta, -eps, eps)


def project_l2(delta: jax.Array, eps, batch_axis: bool = True) -> jax.Array:
    r"""Scale each sample of ``delta`` (leading axis = samples if ``batch_axis``) into the L2 ball of radius ``eps``."""
    if batch_axis:
        axes = tuple(range(1, delta.ndim))
        norm = jnp.sqrt(jnp.sum(delta ** 2, axis=axes, keepdims=True))
    else:
        norm = jnp.sqrt(jnp.sum(delta ** 2))
    return delta * jnp.minimum(1.0, eps / jnp.maximum(norm, 1e-12))


def project_box(x: jax.Array, delta: jax.Array, lo=0.0, hi=1.0) -> jax.Array:
    """Return ``clip(x + delta, lo, hi) - x``: the closest perturbation keeping ``x + delta`` in the box."""
    return jnp.clip(x + delta, lo, hi) - x


def project_linf_box(x: jax.Array, delta: jax.Array, eps, lo=0.0, hi=1.0) -> jax.Array:
    """L-inf ball then box: the exact projection onto ``{d : |d| <= eps, lo <= x + d <= hi}``
    (both constraints are coordinate-wise intervals, so clipping to their intersection is exact)."""
    return jnp.clip(delta, jnp.maximum(-eps, lo - x), jnp.minimum(eps, hi - x))


def _check_k(k, n):
    if not isinstance(k, (int,)) or k < 0 or k > n:
        raise ValueError(f"k (the budget) must be a static integer in [0, {n}] (the number of candidates), got {k!r}")


def topk_mask(scores: jax.Array, k: int, valid: Optional[jax.Array] = None) -> jax.Array:
    """Boolean mask of the ``k`` largest entries of ``scores`` (any shape) among ``valid`` ones.

    ``k`` is static. If fewer than ``k`` entries are valid, only the valid ones are selected.
    Ties are broken by position (lowest flat index first), so the result is deterministic.
    """
    flat = scores.reshape(-1)
    _check_k(k, flat.shape[0])
    v = jnp.ones_like(flat, dtype=bool) if valid is None else valid.reshape(-1).astype(bool)
    s = jnp.where(v, flat, -jnp.inf)
    _, idx = jax.lax.top_k(s, k)
    m = jnp.zeros(flat.shape, bool).at[idx].set(True) & v
    return m.reshape(scores.shape)


def topk_indices(scores: jax.Array, k: int, valid: Optional[jax.Array] = None):
    """``(indices, ok)`` of the ``k`` largest valid flat entries; ``ok[j]`` is False where fewer than k are valid."""
    flat = scores.reshape(-1)
    _check_k(k, flat.shape[0])
    v = jnp.ones_like(flat, dtype=bool) if valid is None else valid.reshape(-1).astype(bool)
    vals, idx = jax.lax.top_k(jnp.where(v, flat, -jnp.inf), k)
    return idx, jnp.isfinite(vals)


def project_capped_simplex(p: jax.Array, budget, iters: int = 60) -> jax.Array:
    r"""Project ``p`` onto :math:`\{q : 0 \le q \le 1, \sum q \le B\}` in the Euclidean norm.

    The solution is :math:`q = \mathrm{clip}(p - \mu, 0, 1)` with :math:`\mu = 0` if that already meets
    the budget, else the root of :math:`\sum \mathrm{clip}(p-\mu,0,1) = B`, found by bisection.
    """
    q0 = jnp.clip(p, 0.0, 1.0)

    def solve(_):
        lo = jnp.min(p) - 1.0
        hi = jnp.max(p)

        def body(_, lh):
            lo_, hi_ = lh
            mid = 0.5 * (lo_ + hi_)
            over = jnp.sum(jnp.clip(p - mid, 0.0, 1.0)) > budget
            return jnp.where(over, mid, lo_), jnp.where(over, hi_, mid)

        lo, hi = jax.lax.fori_loop(0, iters, body, (lo, hi))
        return jnp.clip(p - hi, 0.0, 1.0)

    return jax.lax.cond(jnp.sum(q0) <= budget, lambda _: q0, solve, None)
