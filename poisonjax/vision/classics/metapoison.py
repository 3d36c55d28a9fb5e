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

As in the paper (Algorithm 1), given a clean pool (``clean_images``, ``clean_labels``):

* the inner loss is the mean over a *mixed* mini-batch, the ``P`` poisons plus ``clean_batch`` clean
  images drawn afresh each step, so the unrolled steps see the poisons at a realistic weight
  :math:`P/(P+B)` (poisons alone make the K steps a large update driven by ``P`` images: the
  meta-objective is then easy to reach and does not transfer to victims trained on the whole set);
* every ensemble member also *trains* during crafting: after its meta-gradient, it takes
  ``train_steps`` SGD steps on such mixed batches (the current poisons included), and returns to its
  starting checkpoint after ``reset_every`` crafting steps, so the ensemble keeps covering the stages of
  training a victim goes through while the poisons change.

Without a clean pool the inner steps use the poisons only and the surrogates stay fixed (the
previous, simplified behaviour). Still simplified versus the paper: members return to their own
checkpoint rather than to a fresh initialisation; the L-inf threat model replaces ReColorAdv colour
perturbations; the adversarial loss is the cross-entropy of the target (no Carlini-Wagner margin); the K unrolled steps
are plain SGD while the study's victims train with Adam (the paper unrolls the victims' own SGD), so the
step size is chosen on training data by :func:`select_inner_lr`.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from poisonjax.core.bilevel import unrolled_meta_grad
from poisonjax.core.projections import project_linf_box
from poisonjax.core.training import train_full_batch
from poisonjax.core.types import AttackOptimizer
from poisonjax.core.validation import PoisonJaxInputError, check_positive_int


class MetaPoisonState(NamedTuple):
    """``delta [P,H,W,C]``, Adam state, last adversarial ``loss`` (mean over surrogates), the ensemble
    being trained during crafting (``params``, leaves ``[M, ...]``), crafting steps since each
    member's last reset (``age [M]``) and the PRNG ``key`` for the clean mini-batches."""

    delta: jax.Array
    opt_state: optax.OptState
    loss: jax.Array
    params: Any
    age: jax.Array
    key: jax.Array


def metapoison_attack(per_example_loss: Callable, *, unroll: int = 2, inner_lr: float = 0.1,
                      lr: float = 0.01, clean_images=None, clean_labels=None, clean_batch: int = 128,
                      train_steps: int = 1, reset_every: int = 0) -> AttackOptimizer:
    r"""MetaPoison as an :class:`~poisonjax.core.types.AttackOptimizer` over a
    :class:`~poisonjax.core.gradient_matching.GradientMatchingProblem` (``surrogate_params`` stacked
    ``[M, ...]`` -- the staggered ensemble --, ``base_images [P,...]``, ``base_labels [P]``,
    ``target_images [1,...]``, ``target_labels [1]`` = the adversarial class, ``eps``).

    ``per_example_loss(params, {"x","y"}, key) -> [B]``; ``unroll`` = K SGD steps of size
    ``inner_lr`` on :math:`\frac{1}{P+B}\big(\sum_j \ell(b_j+\delta_j, y_j) + \sum_{i\in\mathcal B}
    \ell(x_i, y_i)\big)` with a fresh clean mini-batch :math:`\mathcal B` of ``clean_batch`` images from
    ``clean_images [N,...]`` / ``clean_labels [N]`` (``None``: the poisons only, :math:`\mathcal B=\emptyset`);
    ``lr`` the Adam step on :math:`\delta` (pixel units). With a clean pool each member then trains
    ``train_steps`` SGD steps (size ``inner_lr``) on mixed batches and is reset to its checkpoint every
    ``reset_every`` crafting steps (0: never; ``train_steps=0``: members stay fixed). Batch over trials
    with :func:`poisonjax.core.gradient_matching.batch_over_trials`.
    """
    unroll = check_positive_int("unroll", unroll)
    if (clean_images is None) != (clean_labels is None):
        raise PoisonJaxInputError("clean_images and clean_labels: give both (a clean pool) or neither")
    mixed = clean_images is not None
    if mixed:
        clean_images, clean_labels = jnp.asarray(clean_images), jnp.asarray(clean_labels)
        if clean_images.shape[0] != clean_labels.shape[0] or clean_images.shape[0] == 0:
            raise PoisonJaxInputError(f"clean_images / clean_labels: expected the same non-zero number of examples, "
                                      f"got {clean_images.shape[0]} and {clean_labels.shape[0]}")
        clean_batch = min(check_positive_int("clean_batch", clean_batch), int(clean_images.shape[0]))
    if int(train_steps) < 0 or int(reset_every) < 0:
        raise PoisonJaxInputError(f"train_steps and reset_every: expected integers >= 0, got {train_steps}, {reset_every}")
    train_steps, reset_every = int(train_steps) if mixed else 0, int(reset_every)
    opt = optax.adam(lr)
    inner_opt = optax.sgd(inner_lr)

    def batch_loss(problem, params, d, k):
        x, y = problem.base_images + d, problem.base_labels
        if mixed:
            i = jax.random.randint(k, (clean_batch,), 0, clean_images.shape[0])
            x = jnp.concatenate([x, clean_images[i].astype(x.dtype)])
            y = jnp.concatenate([y, clean_labels[i].astype(y.dtype)])
        return jnp.mean(per_example_loss(params, {"x": x, "y": y}, k))

    def member(problem, delta, params, k):
        k_meta, k_train = jax.random.split(k)
        outer = lambda p, d: jnp.mean(per_example_loss(p, {"x": problem.target_images,
                                                            "y": problem.target_labels}, jax.random.PRNGKey(0)))
        inner = lambda p, d, kk: batch_loss(problem, p, d, kk)
        # one clean batch for the K unrolled steps (the key is fixed inside the unroll)
        lo, g = unrolled_meta_grad(outer, lambda p, d, _: inner(p, d, k_meta), params, delta, inner_opt, unroll,
                                   k_meta)
        if train_steps:                                 # the member trains on the current poisoned set
            d_sg = jax.lax.stop_gradient(delta)
            params = train_full_batch(lambda p, kk: inner(p, d_sg, kk), params, inner_opt, train_steps,
                                      k_train).params
        return lo, g, params

    def init(key, problem):
        d = jnp.zeros_like(problem.base_images)
        m = jax.tree.leaves(problem.surrogate_params)[0].shape[0]
        return MetaPoisonState(d, opt.init(d), jnp.zeros(()), problem.surrogate_params,
                               jnp.zeros((m,), jnp.int32), key)

    def step(state, problem):
        key, k = jax.random.split(state.key)
        m = state.age.shape[0]
        losses, grads, params = jax.vmap(member, in_axes=(None, None, 0, 0))(problem, state.delta, state.params,
                                                                                jax.random.split(k, m))
        g = jnp.mean(grads, axis=0)
        upd, os = opt.update(g, state.opt_state, state.delta)
        d = project_linf_box(problem.base_images, state.delta + upd, problem.eps)
        age = state.age + 1
        if reset_every > 0:
            reset = age >= reset_every
            params = jax.tree.map(lambda a, b: jnp.where(reset.reshape((-1,) + (1,) * (a.ndim - 1)), b, a),
                                  params, problem.surrogate_params)
            age = jnp.where(reset, 0, age)
        return MetaPoisonState(d, os, jnp.mean(losses), params, age, key)

    return AttackOptimizer(init, step, lambda s, p: {"adv_loss": s.loss})


INNER_LR_GRID = (0.1, 0.03, 0.01, 0.003, 0.001)


def select_inner_lr(per_example_loss: Callable, surrogate_params, x, y, *, unroll: int = 2,
                    grid=INNER_LR_GRID, batch: int = 256, key=None) -> float:
    r"""MetaPoison's unrolled step size, chosen on training data only: the largest :math:`\eta` in ``grid``
    for which ``unroll`` SGD steps of size :math:`\eta` on one training batch :math:`B` lower that batch's
    loss for *every* ensemble member,

    .. math:: \eta^* = \max\{\eta \in \mathcal G : \forall m,\ L_B(\theta^{(m)}_K(\eta)) < L_B(\theta^{(m)}_0)\},
              \qquad \theta^{(m)}_{k+1} = \theta^{(m)}_k - \eta \nabla L_B(\theta^{(m)}_k)

    (the smallest grid value if none qualifies). The K unrolled steps stand for the steps a victim takes;
    a step size at which they *raise* the training loss makes the meta-objective the loss of a diverged
    network (on CIFAR-10 ConvNets trained with Adam 1e-3, :math:`\eta = 0.1` takes the batch loss from
    about 1.4 to 6-16). No target or test example is used. ``surrogate_params``: leaves ``[M, ...]``.
    This rule is poisonjax's, not the paper's: MetaPoison unrolls the victims' own SGD step, while the
    victims here train with Adam, so an SGD step size has to be chosen.
    """
    unroll = check_positive_int("unroll", unroll)
    grid = sorted((float(g) for g in grid), reverse=True)
    if not grid or min(grid) <= 0:
        raise PoisonJaxInputError(f"grid: expected positive step sizes, got {grid}")
    x, y = jnp.asarray(x), jnp.asarray(y)
    key = jax.random.PRNGKey(0) if key is None else key
    idx = jax.random.choice(key, x.shape[0], (min(int(batch), x.shape[0]),), replace=False)
    xb, yb = x[idx], y[idx]
    lb = lambda p: jnp.mean(per_example_loss(p, {"x": xb, "y": yb}, jax.random.PRNGKey(0)))

    @jax.jit
    def after(params, eta):   # the batch loss before and after K steps, for every member (vmapped)
        def one(p):
            q = train_full_batch(lambda pp, _: lb(pp), p, optax.sgd(eta), unroll).params
            return lb(p), lb(q)
        return jax.vmap(one)(params)

    for eta in grid:
        before, aft = after(surrogate_params, eta)
        if bool(jnp.all(aft < before)):
            return eta
    return grid[-1]
