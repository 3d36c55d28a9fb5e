r"""Convex victims for the influence-based classics: L2-regularised binary logistic regression.

Risk (labels :math:`y \in \{0, 1\}`, optional example weights :math:`w_i`, default 1):

.. math::  R(\theta) = \frac{1}{n}\sum_i w_i\, \ell(x_i, y_i; \theta) + \frac{\lambda}{2}\|w\|^2,\qquad
           \ell = \log(1 + e^{z}) - y z,\quad z = w^\top \mathrm{vec}(x) + b,

with :math:`n = \sum_i w_i`. :func:`fit_logreg` minimises it by Newton's method (strictly convex for
:math:`\lambda > 0`, so a few steps reach machine precision); warm starts make leave-one-out retraining
cheap. Parameters: ``{"w": [d], "b": []}`` (785 for 28x28 digits).
"""
from __future__ import annotations

from typing import Dict, Optional

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from poisonjax.core.validation import PoisonJaxInputError


def logreg_loss(params: Dict[str, jax.Array], x: jax.Array, y: jax.Array) -> jax.Array:
    r"""Per-example logistic loss :math:`\log(1+e^z) - yz` for one example ``x`` (any shape) and ``y`` in {0,1}."""
    z = jnp.vdot(params["w"], x.reshape(-1)) + params["b"]
    return jax.nn.softplus(z) - y * z


def logreg_risk(params, x, y, l2: float, weights: Optional[jax.Array] = None) -> jax.Array:
    r"""The regularised empirical risk :math:`R(\theta)` of the module docstring (``x [N, ...]``, ``y [N]``)."""
    losses = jax.vmap(logreg_loss, in_axes=(None, 0, 0))(params, x, y)
    w = jnp.ones_like(losses) if weights is None else weights
    return jnp.sum(w * losses) / jnp.maximum(jnp.sum(w), 1.0) + 0.5 * l2 * jnp.sum(params["w"] ** 2)


def init_logreg(x: jax.Array) -> Dict[str, jax.Array]:
    """Zero parameters for inputs shaped like ``x [N, ...]``."""
    return {"w": jnp.zeros((int(jnp.size(x[0])),), jnp.float32), "b": jnp.zeros((), jnp.float32)}


def _design(x):
    x2 = x.reshape(x.shape[0], -1)
    return jnp.concatenate([jnp.ones((x2.shape[0], 1), x2.dtype), x2], axis=1)


def logreg_hessian(params, x: jax.Array, l2: float, weights: Optional[jax.Array] = None) -> jax.Array:
    r"""Closed-form Hessian of :func:`logreg_risk` in the flattened order ``[w, b]``:
    :math:`H = 	ilde X^	op \mathrm{diag}(w_i \sigma_i(1-\sigma_i)) 	ilde X / n + \lambda\,\mathrm{diag}(1,\dots,1,0)`,
    :math:`	ilde X = [X, 1]` (``[d+1, d+1]``)."""
    xd = _design(x)
    z = xd @ jnp.concatenate([params["b"][None], params["w"]])
    s = jax.nn.sigmoid(z)
    w = jnp.ones_like(z) if weights is None else weights
    c = w * s * (1 - s) / jnp.maximum(jnp.sum(w), 1.0)
    reg = jnp.concatenate([jnp.zeros((1,)), jnp.full((xd.shape[1] - 1,), l2)])
    return (xd * c[:, None]).T @ xd + jnp.diag(reg)


def fit_logreg(x: jax.Array, y: jax.Array, l2: float = 1e-2, steps: int = 15,
               weights: Optional[jax.Array] = None, init: Optional[Dict[str, jax.Array]] = None):
    r"""Minimise :func:`logreg_risk` by ``steps`` Newton steps :math:`\theta \leftarrow \theta - H^{-1}\nabla R`
    (jit- and vmap-able). ``l2`` must be > 0 (strict convexity)."""
    if isinstance(l2, (int, float)) and l2 <= 0:
        raise PoisonJaxInputError(f"l2 must be > 0 for a strictly convex risk, got {l2}")
    p0 = init_logreg(x) if init is None else init
    flat0, unravel = ravel_pytree(p0)
    r = lambda f: logreg_risk(unravel(f), x, y, l2, weights)

    def step(f, _):
        g = jax.grad(r)(f)
        h = logreg_hessian(unravel(f), x, l2, weights)
        return f - jnp.linalg.solve(h, g), None

    flat, _ = jax.lax.scan(step, flat0, None, length=steps)
    return unravel(flat)


def logreg_predict(params, x: jax.Array) -> jax.Array:
    """Predicted labels in {0, 1} for ``x [N, ...]``."""
    z = x.reshape(x.shape[0], -1) @ params["w"] + params["b"]
    return (z > 0).astype(jnp.int32)
