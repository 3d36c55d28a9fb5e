r"""Influence functions (Koh & Liang, ICML 2017): how the optimum and a test loss move when a training
point is removed, up-weighted or perturbed.

For an empirical risk :math:`R(\theta) = \frac1n \sum_i \ell(z_i, \theta) + \Omega(\theta)` with minimiser
:math:`\hat\theta` and Hessian :math:`H = \nabla^2_\theta R(\hat\theta)`:

* up-weighting :math:`z_i` by :math:`\epsilon`: :math:`d\hat\theta/d\epsilon = -H^{-1} \nabla_\theta \ell(z_i, \hat\theta)`;
* removing :math:`z_i` (:math:`\epsilon = -1/n`): :math:`\Delta\hat\theta \approx \frac1n H^{-1}\nabla_\theta\ell(z_i)`,
  so the test loss changes by :math:`\Delta L_{test} \approx \frac1n \nabla_\theta L_{test}^\top H^{-1} \nabla_\theta \ell(z_i)`
  (:func:`loo_test_loss_change`);
* perturbing the input :math:`x_i \to x_i + \delta`:
  :math:`\nabla_{x_i} L_{test} \approx -\frac1n \nabla_{x}\big(\nabla_\theta \ell(z_i)\big)^\top H^{-1} \nabla_\theta L_{test}`
  (:func:`input_influence`, the training-set attack's direction).

Inverse-Hessian-vector products :math:`H^{-1} v`:

* :func:`exact_inverse_hvp` -- the dense Hessian (for convex models with a few thousand parameters,
  e.g. logistic regression on 28x28 digits: 785 parameters). Refuses a Hessian that is not positive
  semi-definite (a non-convex model) and a singular one without damping.
* :func:`cg_inverse_hvp` -- conjugate gradients on Hessian-vector products (Pearlmutter's
  :math:`Hv = \nabla_\theta(\nabla_\theta R^\top v)`, never forming :math:`H`), for larger models.
* :func:`lissa_inverse_hvp` -- LiSSA (Agarwal et al. 2017): the Neumann recursion
  :math:`h_j = v + (I - (H + \lambda I)/s) h_{j-1}`, :math:`H^{-1}v \approx h_J / s`, with stochastic
  mini-batch Hessians, averaged over repeats.

All functions take ``risk(params) -> scalar`` (the full training objective) or a per-example loss, and
work on any params pytree (flattened internally with :func:`jax.flatten_util.ravel_pytree`).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from poisonjax.core.validation import PoisonJaxInputError

PyTree = Any


def hvp(risk: Callable[[PyTree], jax.Array], params: PyTree, v: PyTree) -> PyTree:
    r"""Hessian-vector product :math:`\nabla^2 R(\theta) v` by forward-over-reverse differentiation."""
    return jax.jvp(jax.grad(risk), (params,), (v,))[1]


def flat_hessian(risk: Callable[[PyTree], jax.Array], params: PyTree) -> jax.Array:
    r"""The dense Hessian ``[d, d]`` of ``risk`` at ``params`` in the flattened parameter order."""
    flat, unravel = ravel_pytree(params)
    return jax.hessian(lambda f: risk(unravel(f)))(flat)


def exact_inverse_hvp(risk: Callable[[PyTree], jax.Array], params: PyTree, v: PyTree, damping: float = 0.0,
                      psd_tol: float = 1e-6, max_params: int = 20000,
                      hessian: Optional[jax.Array] = None) -> PyTree:
    r""":math:`(H + \lambda I)^{-1} v` with the dense Hessian (Cholesky solve).

    Raises :class:`PoisonJaxInputError` when the model has more than ``max_params`` parameters (use
    :func:`cg_inverse_hvp`), when :math:`H` has an eigenvalue below :math:`-\text{psd\_tol}\,\|H\|`
    (the model is not convex: use ``cg_inverse_hvp`` with damping), or when :math:`H + \lambda I` is
    singular (add ``damping > 0``). ``hessian`` (``[d, d]``, flattened order) skips forming it by
    automatic differentiation when a closed form is known."""
    flat_v, unravel = ravel_pytree(v)
    d = flat_v.shape[0]
    if d > max_params:
        raise PoisonJaxInputError(f"the exact-Hessian path is for models with <= {max_params} parameters, got {d}; "
                                  "use cg_inverse_hvp or lissa_inverse_hvp")
    if damping < 0:
        raise PoisonJaxInputError(f"damping must be >= 0, got {damping}")
    h = flat_hessian(risk, params) if hessian is None else jnp.asarray(hessian)
    if h.shape != (d, d):
        raise PoisonJaxInputError(f"hessian must have shape ({d}, {d}), got {tuple(h.shape)}")
    h = 0.5 * (h + h.T)
    eig = jnp.linalg.eigvalsh(h)
    scale = jnp.maximum(jnp.max(jnp.abs(eig)), 1e-30)
    if float(eig[0]) < -psd_tol * float(scale):
        raise PoisonJaxInputError(
            f"the Hessian has a negative eigenvalue ({float(eig[0]):.3g}): the model is not convex, so the "
            "exact-Hessian influence path does not apply; use cg_inverse_hvp with damping > 0")
    if float(eig[0]) + damping <= 1e-10 * float(scale):
        raise PoisonJaxInputError(
            f"the Hessian is singular (smallest eigenvalue {float(eig[0]):.3g}) and damping={damping}; "
            "pass damping > 0 (e.g. 1e-3) or add L2 regularisation to the risk")
    hd = h + damping * jnp.eye(d, dtype=h.dtype)
    chol = jax.scipy.linalg.cho_factor(hd)
    return unravel(jax.scipy.linalg.cho_solve(chol, flat_v))


def cg_inverse_hvp(risk: Callable[[PyTree], jax.Array], params: PyTree, v: PyTree, damping: float = 0.0,
                   maxiter: int = 100, tol: float = 1e-6) -> PyTree:
    r""":math:`(H + \lambda I)^{-1} v` by conjugate gradients on Hessian-vector products (needs
    :math:`H + \lambda I` positive definite; use ``damping > 0`` for non-convex models)."""
    if damping < 0:
        raise PoisonJaxInputError(f"damping must be >= 0, got {damping}")
    op = lambda u: jax.tree.map(lambda a, b: a + damping * b, hvp(risk, params, u), u)
    x, _ = jax.scipy.sparse.linalg.cg(op, v, maxiter=maxiter, tol=tol)
    return x


def lissa_inverse_hvp(batch_risk: Callable[[PyTree, jax.Array], jax.Array], params: PyTree, v: PyTree,
                      key: jax.Array, depth: int = 200, repeats: int = 4, damping: float = 0.01,
                      scale: float = 10.0) -> PyTree:
    r"""LiSSA estimate of :math:`(H + \lambda I)^{-1} v`.

    ``batch_risk(params, key)`` evaluates the risk on a random mini-batch drawn with ``key`` (a
    stochastic Hessian). Recursion :math:`h_0 = v`,
    :math:`h_j = v + h_{j-1} - \big((H_j + \lambda I) h_{j-1}\big)/s`; the estimate is :math:`h_J/s`,
    averaged over ``repeats``. Converges when :math:`\|H + \lambda I\| < s`."""
    if scale <= 0 or depth < 1 or repeats < 1:
        raise PoisonJaxInputError("scale must be > 0 and depth, repeats >= 1")

    def one(k):
        def step(h, kk):
            hv = hvp(lambda p: batch_risk(p, kk), params, h)
            h = jax.tree.map(lambda vv, hh, a: vv + hh - (a + damping * hh) / scale, v, h, hv)
            return h, None

        h, _ = jax.lax.scan(step, v, jax.random.split(k, depth))
        return jax.tree.map(lambda a: a / scale, h)

    outs = jax.vmap(one)(jax.random.split(key, repeats))
    return jax.tree.map(lambda a: a.mean(0), outs)


def per_example_grads(loss: Callable[[PyTree, jax.Array, jax.Array], jax.Array], params: PyTree,
                      x: jax.Array, y: jax.Array) -> jax.Array:
    r""":math:`\nabla_\theta \ell(x_i, y_i, \theta)` for every example, flattened: ``[N, d]``."""
    g = jax.vmap(jax.grad(loss), in_axes=(None, 0, 0))(params, x, y)
    leaves = jax.tree.leaves(g)
    n = x.shape[0]
    return jnp.concatenate([l.reshape(n, -1) for l in leaves], axis=1)


def loo_test_loss_change(per_example_train_grads: jax.Array, ihvp_test: jax.Array, n: int) -> jax.Array:
    r"""Predicted change of the test loss when each training point is removed:
    :math:`\Delta L_{test}(i) \approx \frac1n \nabla_\theta \ell(z_i)^\top H^{-1} \nabla_\theta L_{test}`.

    Args:
      per_example_train_grads: ``[N, d]`` (:func:`per_example_grads`, same flattening as ``ihvp_test``).
      ihvp_test: ``[d]`` flattened :math:`H^{-1}\nabla_\theta L_{test}`.
      n: the number of training points in the mean of the risk.
    """
    return per_example_train_grads @ ihvp_test / n


def input_influence(loss: Callable[[PyTree, jax.Array, jax.Array], jax.Array], params: PyTree,
                    x: jax.Array, y: jax.Array, ihvp_test: PyTree, n: int) -> jax.Array:
    r"""Predicted gradient of the test loss with respect to each training input, ``[N, ...]``:
    :math:`\nabla_{x_i} L_{test} \approx -\frac1n \nabla_{x_i}\big(\nabla_\theta \ell(x_i, y_i)^\top H^{-1}\nabla_\theta L_{test}\big)`
    (Koh & Liang's :math:`\mathcal{I}_{pert,loss}`, the training-set attack's ascent direction)."""
    def s(xi, yi):
        g = jax.grad(loss)(params, xi, yi)
        return sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(ihvp_test)))

    return -jax.vmap(jax.grad(s))(x, y) / n
