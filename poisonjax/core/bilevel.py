r"""Meta-gradients of bilevel problems (domain-agnostic).

For hyper-parameters / poisoned data :math:`h` (any pytree: an adjacency, poison pixels, ...),

.. math::  \min_h \; \mathcal{L}_{out}(\theta^*(h), h) \quad\text{s.t.}\quad
           \theta^*(h) \approx \theta_T(h) = \text{opt}^T(\theta_0; \nabla_\theta \mathcal{L}_{in}(\cdot, h)),

three estimators of :math:`\nabla_h \mathcal{L}_{out}` are provided:

* :func:`unrolled_meta_grad` -- exact reverse-mode through ``T`` unrolled optimiser steps
  (Maclaurin et al. 2015; Metattack's "Meta-Train/Meta-Self", Zügner & Günnemann ICLR 2019). Each
  step is wrapped in ``jax.checkpoint`` (``remat=True``) so memory is O(T |θ|) instead of O(T ·
  activations).
* :func:`first_order_meta_grad` -- the first-order approximation
  :math:`\sum_{t} \nabla_h \mathcal{L}_{out}(\mathrm{sg}(\theta_t), h)` along the training trajectory
  (Metattack's "A-Meta-Self"); no second-order terms, O(1) memory in T.
* :func:`implicit_meta_grad` -- the implicit-function theorem at a (near-)stationary
  :math:`\theta^*`: :math:`\nabla_h \mathcal{L}_{out} - \nabla^2_{h\theta}\mathcal{L}_{in}\, v` with
  :math:`(\nabla^2_{\theta}\mathcal{L}_{in} + \lambda I) v = \nabla_\theta \mathcal{L}_{out}` solved by conjugate
  gradients on Hessian-vector products (Lorraine et al. 2020). Simplified: assumes a positive
  definite (damped) Hessian; no Neumann-series alternative.

All functions are pure and jit/vmap-able; the losses are ``inner_loss(params, hyper, key)`` and
``outer_loss(params, hyper)`` (scalars).

:func:`low_rank_matmul_meta_grad` is the fast path for hyper-parameters that enter the computation
**only as the left factor of matrix products** ``H @ M`` (a graph's normalised adjacency, a mixing
matrix): the gradient is then :math:`\sum_t \bar U_t M_t^\top`, where :math:`\bar U_t` is the cotangent
of the ``t``-th product. The products themselves may be evaluated by any cheap operator (e.g. a sparse
one), and the dense ``[N, N]`` gradient costs one GEMM of inner size :math:`\sum_t k_t`.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import jax
import jax.numpy as jnp
import optax

from poisonjax.core.training import train_full_batch

PyTree = Any


def sgd_momentum(lr: float, momentum: float) -> optax.GradientTransformation:
    r"""Heavy-ball SGD :math:`v \leftarrow \mu v + g,\ \theta \leftarrow \theta - \eta v` (Metattack's
    inner optimiser; optax's ``sgd`` with ``momentum`` is exactly this)."""
    return optax.sgd(lr, momentum=momentum)


def unrolled_meta_grad(outer_loss: Callable[[PyTree, PyTree], jax.Array],
                       inner_loss: Callable[[PyTree, PyTree, jax.Array], jax.Array],
                       init_params: PyTree, hyper: PyTree, optimizer: optax.GradientTransformation,
                       num_steps: int, key: Optional[jax.Array] = None, *, remat: bool = True
                       ) -> Tuple[jax.Array, PyTree]:
    r"""Exact unrolled meta-gradient ``(L_out, dL_out/dhyper)``.

    :math:`\theta_T(h)` = ``num_steps`` full-batch steps of ``optimizer`` on ``inner_loss(·, h, k_t)``
    from ``init_params``; returns :math:`\mathcal{L}_{out}(\theta_T(h), h)` and its total derivative in
    ``hyper`` (differentiating through every step; ``jax.checkpoint`` per step if ``remat``).
    """
    def total(h):
        res = train_full_batch(lambda p, k: inner_loss(p, h, k), init_params, optimizer, num_steps, key,
                               remat=remat)
        return outer_loss(res.params, h)

    return jax.value_and_grad(total)(hyper)


def first_order_meta_grad(outer_loss: Callable[[PyTree, PyTree], jax.Array],
                          inner_loss: Callable[[PyTree, PyTree, jax.Array], jax.Array],
                          init_params: PyTree, hyper: PyTree, optimizer: optax.GradientTransformation,
                          num_steps: int, key: Optional[jax.Array] = None) -> Tuple[jax.Array, PyTree]:
    r"""First-order meta-gradient :math:`\sum_{t=1}^{T} \nabla_h \mathcal{L}_{out}(\mathrm{sg}(\theta_t), h)`
    along the inner trajectory (no differentiation through the updates; A-Meta-Self). Returns the
    final outer loss and the summed gradient."""
    key = jax.random.PRNGKey(0) if key is None else key
    opt_state = optimizer.init(init_params)
    zero = jax.tree.map(jnp.zeros_like, hyper)

    def step(carry, k):
        p, s, acc = carry
        g = jax.grad(inner_loss)(p, hyper, k)
        u, s = optimizer.update(g, s, p)
        p = optax.apply_updates(p, u)
        lo, gh = jax.value_and_grad(outer_loss, argnums=1)(jax.lax.stop_gradient(p), hyper)
        return (p, s, jax.tree.map(jnp.add, acc, gh)), lo

    (p, _, acc), losses = jax.lax.scan(step, (init_params, opt_state, zero), jax.random.split(key, num_steps))
    return losses[-1], acc


def _tree_vdot(a, b):
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def implicit_meta_grad(outer_loss: Callable[[PyTree, PyTree], jax.Array],
                       inner_loss: Callable[[PyTree, PyTree, jax.Array], jax.Array],
                       params_star: PyTree, hyper: PyTree, key: Optional[jax.Array] = None, *,
                       cg_iters: int = 20, damping: float = 1e-3) -> Tuple[jax.Array, PyTree]:
    r"""Implicit-function-theorem meta-gradient at an inner optimum ``params_star``:

    .. math:: \frac{d\mathcal{L}_{out}}{dh} = \partial_h \mathcal{L}_{out}
              - \partial_h\!\left(\nabla_\theta \mathcal{L}_{in}(\theta^*, h)^\top v\right), \quad
              (H_\theta + \lambda I)\, v = \nabla_\theta \mathcal{L}_{out}(\theta^*, h),

    with ``cg_iters`` conjugate-gradient iterations (``damping`` = :math:`\lambda`)."""
    key = jax.random.PRNGKey(0) if key is None else key
    lo, (g_p, g_h) = jax.value_and_grad(outer_loss, argnums=(0, 1))(params_star, hyper)
    grad_in = lambda p: jax.grad(inner_loss)(p, hyper, key)

    def hvp(v):
        hv = jax.jvp(grad_in, (params_star,), (v,))[1]
        return jax.tree.map(lambda a, b: a + damping * b, hv, v)

    v, _ = jax.scipy.sparse.linalg.cg(hvp, g_p, maxiter=cg_iters)
    mixed = jax.grad(lambda h: _tree_vdot(jax.grad(inner_loss)(params_star, h, key), jax.lax.stop_gradient(v)))(hyper)
    return lo, jax.tree.map(lambda a, b: a - b, g_h, mixed)


def low_rank_matmul_meta_grad(loss_with_probes: Callable[[PyTree], Tuple[jax.Array, PyTree]],
                              probes: PyTree, transposed: Optional[PyTree] = None) -> Tuple[jax.Array, jax.Array]:
    r"""Dense gradient of a loss in a matrix :math:`H` ``[N, N]`` that enters only through products.

    ``loss_with_probes(probes) -> (loss, operands)`` must compute every product as
    ``H @ M_i + probe_i`` (``probe_i`` all-zero, shape ``[..., N, k_i]``) and return the right
    operands ``M_i`` with the same pytree structure and shapes as ``probes``. Then

    .. math:: \nabla_H \mathcal{L} = \sum_i \bar U_i M_i^\top, \qquad \bar U_i = \partial\mathcal{L}/\partial\,\text{probe}_i,

    computed as one ``[N, K] @ [K, N]`` GEMM with :math:`K = \sum_i k_i` (leading axes such as a time
    axis are folded into ``K``). Products with the transpose, ``H^T @ M_i + probe_i``, contribute
    :math:`M_i \bar U_i^\top`; mark them with ``transposed`` (a pytree of Python bools shaped like
    ``probes``). Returns ``(loss, grad [N, N])``.
    """
    (loss, ops), u_bar = jax.value_and_grad(loss_with_probes, has_aux=True)(probes)

    def flat(t):  # [..., N, k] -> [N, prod(...) * k]
        t = jnp.moveaxis(t, -2, 0)
        return t.reshape(t.shape[0], -1)

    us, ms = jax.tree.leaves(u_bar), jax.tree.leaves(ops)
    tr = [False] * len(us) if transposed is None else list(jax.tree.leaves(transposed))
    U = jnp.concatenate([flat(m if t else u) for u, m, t in zip(us, ms, tr)], 1)
    M = jnp.concatenate([flat(u if t else m) for u, m, t in zip(us, ms, tr)], 1)
    return loss, U @ M.T
