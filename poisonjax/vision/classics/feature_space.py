r"""Feature-space clean-label attacks: Convex Polytope and Bullseye Polytope.

Both run in the frozen-feature transfer setting of Poison Frogs
(:func:`poisonjax.vision.witches_brew.feature_collision_attack`, :func:`~poisonjax.vision.witches_brew.transfer_success`):
``P`` training images :math:`b_j` of the adversarial class get perturbations
:math:`\|\delta_j\|_\infty \le \epsilon` (labels unchanged) so that a linear head retrained on the
frozen features :math:`\phi(x)` puts the target :math:`x_t` in the adversarial class.

* :func:`convex_polytope_attack` -- Zhu et al., "Transferable Clean-Label Poisoning Attacks on Deep
  Neural Nets", ICML 2019: the target's feature must lie in the convex hull of the poisons' features,
  for every extractor :math:`\phi^{(m)}` of an ensemble,

  .. math:: \min_{\delta, c}\ \frac{1}{2M}\sum_m \frac{\|\phi^{(m)}(x_t) - \sum_j c^{(m)}_j \phi^{(m)}(b_j + \delta_j)\|^2}{\|\phi^{(m)}(x_t)\|^2}
            \quad c^{(m)} \in \Delta^{P-1},

  solved by alternating one projected-gradient step on each :math:`c^{(m)}` (step :math:`1/\|\Phi^{(m)}\|_F^2`,
  Euclidean projection onto the probability simplex) with one Adam step on :math:`\delta` projected onto
  the L-inf ball and the [0, 1] box.
* :func:`bullseye_polytope_attack` -- Aghakhani et al., "Bullseye Polytope: A Scalable Clean-Label
  Poisoning Attack with Improved Transferability", EuroS&P 2021: the coefficients are fixed to
  :math:`c_j = 1/P`, i.e. the target is pulled to the *centre* (bullseye) of the polytope,

  .. math:: \min_{\delta}\ \frac1M\sum_m \frac{\|\phi^{(m)}(x_t) - \frac1P\sum_j \phi^{(m)}(b_j + \delta_j)\|^2}{\|\phi^{(m)}(x_t)\|^2}.

Problems are :class:`poisonjax.core.gradient_matching.GradientMatchingProblem` (``base_images [P,...]``,
``target_images[0]`` the target, ``eps``); batch over trials with
:func:`poisonjax.core.gradient_matching.batch_over_trials`.

Simplified versus the papers: the feature extractors are given (a tuple of callables closing over
frozen surrogate parameters, white-box by default; the papers' black-box ensembles of other
architectures can be passed the same way); no dropout during crafting; Adam on :math:`\delta` in
pixel space rather than the papers' learning-rate schedule; Bullseye's multi-draw (dropout) variant
is not implemented.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence, Union

import jax
import jax.numpy as jnp
import optax

from poisonjax.core.projections import project_linf_box
from poisonjax.core.types import AttackOptimizer
from poisonjax.core.validation import PoisonJaxInputError


def project_simplex(v: jax.Array) -> jax.Array:
    r"""Euclidean projection of ``v [..., P]`` onto the probability simplex
    :math:`\{c \ge 0, \sum_j c_j = 1\}` (sort-based, Duchi et al. ICML 2008), over the last axis."""
    p = v.shape[-1]
    u = -jnp.sort(-v, axis=-1)
    css = jnp.cumsum(u, axis=-1) - 1.0
    ind = jnp.arange(1, p + 1, dtype=v.dtype)
    cond = u - css / ind > 0
    rho = jnp.sum(cond, axis=-1, keepdims=True)
    theta = jnp.take_along_axis(css, rho - 1, axis=-1) / rho
    return jnp.maximum(v - theta, 0.0)


def _as_tuple(feature_fns) -> tuple:
    fns = tuple(feature_fns) if isinstance(feature_fns, (list, tuple)) else (feature_fns,)
    if not fns or not all(callable(f) for f in fns):
        raise PoisonJaxInputError("feature_fns must be a callable x [B,H,W,C] -> [B, d] or a non-empty "
                                  "sequence of them (one per frozen feature extractor)")
    return fns


class PolytopeState(NamedTuple):
    """``delta [P,H,W,C]``, ``coeffs [M, P]`` (simplex rows), Adam state and the last ``loss``."""

    delta: jax.Array
    coeffs: jax.Array
    opt_state: optax.OptState
    loss: jax.Array


def _polytope(feature_fns, lr: float, learn_coeffs: bool) -> AttackOptimizer:
    fns = _as_tuple(feature_fns)
    opt = optax.adam(lr)

    def residual_loss(delta, coeffs, problem):
        total = 0.0
        for m, f in enumerate(fns):
            ft = f(problem.target_images[:1])[0]
            fp = f(problem.base_images + delta)                     # [P, d]
            r = ft - coeffs[m] @ fp
            total = total + 0.5 * jnp.sum(r ** 2) / (jnp.sum(ft ** 2) + 1e-12)
        return total / len(fns)

    def init(key, problem):
        d = jnp.zeros_like(problem.base_images)
        p = problem.base_images.shape[0]
        c = jnp.full((len(fns), p), 1.0 / p, problem.base_images.dtype)
        return PolytopeState(d, c, opt.init(d), jnp.zeros(()))

    def step(state, problem):
        coeffs = state.coeffs
        if learn_coeffs:   # one projected gradient step per extractor, step 1/||Phi||_F^2 (Zhu et al., Alg. 1)
            rows = []
            for m, f in enumerate(fns):
                ft = f(problem.target_images[:1])[0]
                fp = jax.lax.stop_gradient(f(problem.base_images + state.delta))
                g = fp @ (coeffs[m] @ fp - ft)
                rows.append(project_simplex(coeffs[m] - g / (jnp.sum(fp ** 2) + 1e-12)))
            coeffs = jnp.stack(rows)
        loss, g = jax.value_and_grad(residual_loss)(state.delta, coeffs, problem)
        upd, os = opt.update(g, state.opt_state, state.delta)
        d = project_linf_box(problem.base_images, state.delta + upd, problem.eps)
        return PolytopeState(d, coeffs, os, loss)

    return AttackOptimizer(init, step, lambda s, p: {"loss": s.loss})


def convex_polytope_attack(feature_fns: Union[Callable, Sequence[Callable]], *, lr: float = 0.02) -> AttackOptimizer:
    r"""Convex Polytope (Zhu et al., ICML 2019) as an :class:`~poisonjax.core.types.AttackOptimizer`
    (see the module docstring for the objective). ``feature_fns``: one or several frozen feature
    extractors ``x [B,H,W,C] -> [B, d]``. State: :class:`PolytopeState` (``delta [P,H,W,C]``,
    simplex coefficients ``[M, P]``). Problem: a :class:`~poisonjax.core.gradient_matching.GradientMatchingProblem`."""
    return _polytope(feature_fns, lr, learn_coeffs=True)


def bullseye_polytope_attack(feature_fns: Union[Callable, Sequence[Callable]], *, lr: float = 0.02) -> AttackOptimizer:
    r"""Bullseye Polytope (Aghakhani et al., EuroS&P 2021): the Convex Polytope objective with the
    coefficients fixed to :math:`1/P` (the target pulled to the poisons' feature centroid). Same
    arguments, state and problem as :func:`convex_polytope_attack`."""
    return _polytope(feature_fns, lr, learn_coeffs=False)
