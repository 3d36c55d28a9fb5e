r"""MetaPoison (Huang et al., NeurIPS 2020): clean-label targeted poisoning by unrolled meta-gradients.

Poisons :math:`b_j + \delta_j` (``P`` training images of the adversarial class, labels unchanged,
:math:`\|\delta_j\|_\infty \le \epsilon`) are crafted so that a model that *takes K training steps on
them* classifies the target :math:`x_t` as :math:`y^{adv}`:

.. math:: \min_\delta\ \frac1M\sum_{m=1}^M \ell\big(f_{\theta^{(m)}_K(\delta)}(x_t),\, y^{adv}\big),\qquad
          \theta^{(m)}_{k+1} = \theta^{(m)}_k - \eta\,\nabla_\theta \frac1P\sum_j \ell(f_{\theta^{(m)}_k}(b_j+\delta_j), y_j),

with :math:`\theta^{(m)}_0` an ensemble of ``M`` surrogates saved at *staggered* epochs of clean
training (:func:`poisonjax.vision.witches_brew.checkpoint_surrogates`), ``K = 2`` by default. The
meta-gradient through the ``K`` unrolled steps is :func:`poisonjax.core.bilevel.unrolled_meta_grad`
(vmapped over the ensemble); :math:`\delta` takes one Adam step per iteration, projected onto the L-inf
ball and the [0, 1] box.

Simplified versus the paper: the inner steps use the poison batch only (the paper mixes poisons into
clean mini-batches, which only rescales their gradient); the surrogates stay at their checkpoints
during crafting (the paper keeps training each ensemble member on the poisoned set and restarts it
after a fixed number of epochs); the L-inf threat model replaces ReColorAdv colour perturbations.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from poisonjax.core.bilevel import unrolled_meta_grad
from poisonjax.core.projections import project_linf_box
from poisonjax.core.types import AttackOptimizer
from poisonjax.core.validation import check_positive_int


class MetaPoisonState(NamedTuple):
    """``delta [P,H,W,C]``, Adam state, last adversarial ``loss`` (mean over surrogates)."""

    delta: jax.Array
    opt_state: optax.OptState
    loss: jax.Array


def metapoison_attack(per_example_loss: Callable, *, unroll: int = 2, inner_lr: float = 0.1,
                      lr: float = 0.01) -> AttackOptimizer:
    r"""MetaPoison as an :class:`~poisonjax.core.types.AttackOptimizer` over a
    :class:`~poisonjax.core.gradient_matching.GradientMatchingProblem` (``surrogate_params`` stacked
    ``[M, ...]`` -- the staggered ensemble --, ``base_images [P,...]``, ``base_labels [P]``,
    ``target_images [1,...]``, ``target_labels [1]`` = the adversarial class, ``eps``).

    ``per_example_loss(params, {"x","y"}, key) -> [B]``; ``unroll`` = K SGD steps of size
    ``inner_lr``; ``lr`` the Adam step on :math:`\delta` (pixel units). Batch over trials with
    :func:`poisonjax.core.gradient_matching.batch_over_trials`.
    """
    unroll = check_positive_int("unroll", unroll)
    opt = optax.adam(lr)
    inner_opt = optax.sgd(inner_lr)

    def meta_loss_and_grad(delta, problem):
        def one(params):
            inner = lambda p, d, k: jnp.mean(per_example_loss(p, {"x": problem.base_images + d,
                                                                   "y": problem.base_labels}, k))
            outer = lambda p, d: jnp.mean(per_example_loss(p, {"x": problem.target_images,
                                                                "y": problem.target_labels}, jax.random.PRNGKey(0)))
            return unrolled_meta_grad(outer, inner, params, delta, inner_opt, unroll, jax.random.PRNGKey(0))

        losses, grads = jax.vmap(one)(problem.surrogate_params)
        return jnp.mean(losses), jnp.mean(grads, axis=0)

    def init(key, problem):
        d = jnp.zeros_like(problem.base_images)
        return MetaPoisonState(d, opt.init(d), jnp.zeros(()))

    def step(state, problem):
        loss, g = meta_loss_and_grad(state.delta, problem)
        upd, os = opt.update(g, state.opt_state, state.delta)
        d = project_linf_box(problem.base_images, state.delta + upd, problem.eps)
        return MetaPoisonState(d, os, loss)

    return AttackOptimizer(init, step, lambda s, p: {"adv_loss": s.loss})
