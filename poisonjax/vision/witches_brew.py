r"""Witches' Brew targeted clean-label poisoning of image classifiers, and its baselines.

Following Geiping et al., "Witches' Brew: Industrial Scale Data Poisoning via Gradient Matching"
(ICLR 2021): a target test image :math:`x_t` (true class :math:`y_t`) must be classified as an
adversarial class :math:`y^{adv} \ne y_t` by a victim trained *from scratch* on the poisoned set.
The poisons are ``P = round(budget * N)`` training images of class :math:`y^{adv}` (labels unchanged)
plus perturbations :math:`\|\delta_i\|_\infty \le \epsilon` crafted by gradient matching
(:mod:`poisonjax.core.gradient_matching`) against surrogate models trained on the clean data.

Baselines with the same budget and poison set:

* :func:`random_noise_deltas` -- random :math:`\pm\epsilon` sign noise.
* :func:`feature_collision_attack` -- Poison Frogs (Shafahi et al., NeurIPS 2018) for the transfer
  setting in which the feature extractor is frozen and only the last layer is retrained
  (:func:`transfer_success`).
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from poisonjax.core.gradient_matching import (GradientMatchingProblem, check_budget, check_epsilon, check_images)
from poisonjax.core.projections import project_linf_box
from poisonjax.core.types import AttackOptimizer
from poisonjax.core.validation import PoisonJaxInputError


def n_poisons_for(budget: float, n_train: int) -> int:
    """``P = max(1, round(budget * n_train))`` poisons for a budget in (0, 1]."""
    budget = check_budget(budget)
    return max(1, int(round(budget * n_train)))


def check_target(target_index, adv_class, y_test, num_classes: int, n_test: int = None) -> None:
    """``target_index`` must index the test set and ``adv_class`` must be a class other than the
    target's true class. This is the *experimenter's* check (it reads test labels); attacks call it
    with ``y_test=None`` (and ``n_test``), which checks indices and classes only."""
    n = len(y_test) if y_test is not None else int(n_test)
    ti = np.atleast_1d(np.asarray(target_index))
    ac = np.atleast_1d(np.asarray(adv_class))
    if ti.dtype.kind not in "iu" or np.any(ti < 0) or np.any(ti >= n):
        raise PoisonJaxInputError(f"target_index must be an integer in [0, {n - 1}] (an index into the "
                                  f"test set of {n} images), got {target_index!r}")
    if ac.dtype.kind not in "iu" or np.any(ac < 0) or np.any(ac >= num_classes):
        raise PoisonJaxInputError(f"adv_class must be an integer class in [0, {num_classes - 1}], got {adv_class!r}")
    same = np.asarray(y_test)[ti] == ac if y_test is not None else np.zeros(ac.shape, bool)
    if np.any(same):
        i = int(np.argmax(same))
        raise PoisonJaxInputError(
            f"adv_class {int(ac[i])} equals the true class of target_index {int(ti[i])}; "
            "the adversarial class must differ from the target's true class")


def choose_trials(key, y_test, num_classes: int, n_trials: int):
    """``n_trials`` random (target index, adversarial class) pairs, the class drawn uniformly among
    the classes other than the target's. Returns two int arrays ``[T]``."""
    k1, k2 = jax.random.split(key)
    ti = np.asarray(jax.random.choice(k1, len(y_test), (n_trials,), replace=False))
    shift = np.asarray(jax.random.randint(k2, (n_trials,), 1, num_classes))
    adv = (np.asarray(y_test)[ti] + shift) % num_classes
    return ti.astype(np.int32), adv.astype(np.int32)


def choose_poisons(key, y_train, adv_classes, n_poisons: int, norms=None) -> np.ndarray:
    """For every trial, ``n_poisons`` training indices of its adversarial class: ``[T, P]``. With
    ``norms`` (``[N]`` per-example surrogate gradient norms, e.g. from :func:`gradient_norms`) the
    ones with the largest norm (Witches' Brew's selection); otherwise a random draw from ``key``."""
    y = np.asarray(y_train)
    out = []
    for k, c in zip(jax.random.split(key, len(adv_classes)), np.asarray(adv_classes)):
        pool = np.flatnonzero(y == c)
        if len(pool) < n_poisons:
            raise PoisonJaxInputError(f"budget asks for {n_poisons} poisons but class {int(c)} has only "
                                      f"{len(pool)} training images; lower the budget")
        order = (np.argsort(-np.asarray(norms)[pool], kind="stable") if norms is not None
                 else np.asarray(jax.random.permutation(k, len(pool))))
        out.append(pool[order[:n_poisons]])
    return np.stack(out).astype(np.int32)


def gradient_norms(per_example_loss: Callable, surrogate_params, x, y, batch_size: int = 256) -> jax.Array:
    r"""Per-example parameter-gradient norm :math:`\frac1M\sum_m \|\nabla_\theta L(f_{\theta_m}(x_j), y_j)\|_2`
    over the stacked surrogates ``[M, ...]``, for ``x [N, H, W, C]``, ``y [N]``; returns ``[N]``.

    ``per_example_loss`` has the one signature ``(params, {"x", "y"}, key) -> [B]`` (called with a
    fixed key). Computed in chunks of ``batch_size`` examples
    (:func:`poisonjax.core.parallel.chunked_vmap` over examples, each example vmapped over the
    surrogates), so memory is O(batch_size x M x params)."""
    from poisonjax.core.gradient_matching import tree_norm
    from poisonjax.core.parallel import chunked_vmap
    x, y = jnp.asarray(x), jnp.asarray(y)
    k0 = jax.random.PRNGKey(0)

    def one(p, xi, yi):
        return tree_norm(jax.grad(lambda q: per_example_loss(q, {"x": xi[None], "y": yi[None]}, k0).sum())(p))

    def example(xi, yi):
        return jax.vmap(lambda p: one(p, xi, yi))(surrogate_params).mean(0)

    return chunked_vmap(example, chunk=min(int(batch_size), x.shape[0]))(x, y)


def refuse_test_labels(y_test, allow_test_labels: bool, where: str) -> None:
    """The vision attacks' threat model: the attacker sees the training set, the target/trigger test
    *images* and the adversarial class it chose -- never test labels. ``y_test`` (all test labels)
    is refused unless ``allow_test_labels=True`` (then it is used only to check that the adversarial
    class differs from the target's true class)."""
    if y_test is not None and not allow_test_labels:
        raise PoisonJaxInputError(
            f"{where}: y_test (test labels) is held out from the attacker; pass y_test=None and validate "
            "the targets with check_target(..., y_test, ...) outside the attack, or pass "
            "allow_test_labels=True to let the attack read them")


def witches_brew_problem(surrogate_params, x_train, y_train, x_test, y_test, num_classes: int, *,
                         target_indices, adv_classes, budget: float, eps: float, key, norms=None,
                         allow_test_labels: bool = False):
    """Validate inputs and build the batched :class:`GradientMatchingProblem` (one trial per target).

    Args:
      surrogate_params: stacked surrogate classifiers ``[M, ...]``.
      x_train, x_test, y_train: images ``[N,H,W,C]`` in [0, 1] (train and test); int labels ``[N]``.
      y_test: ``None`` (default: the attacker sees no test labels); test labels only with
        ``allow_test_labels=True`` (used to check that each adversarial class differs from the
        target's true class).
      target_indices, adv_classes: ``[T]`` test indices and adversarial classes.
      budget: fraction of the training set poisoned, in (0, 1]. eps: L-inf radius in (0, 1].
      norms: optional ``[N]`` per-example surrogate gradient norms; if given, the poisons of each
        trial are the adversarial-class images with the largest norm (Witches' Brew's selection,
        :func:`choose_poisons`), else a random draw from ``key``.

    Returns:
      ``(problem, poison_index [T, P])`` where ``problem`` has base images ``[T,P,H,W,C]``,
      base labels ``[T,P]`` (the adversarial class: clean-label), targets ``[T,1,H,W,C]`` and target
      labels ``[T,1]`` (the adversarial class).
    """
    refuse_test_labels(y_test, allow_test_labels, "witches_brew_problem")
    check_images("x_train", x_train)
    check_images("x_test", x_test, channels=np.shape(x_train)[-1])
    eps = check_epsilon(eps)
    p = n_poisons_for(budget, len(y_train))
    ti = np.atleast_1d(np.asarray(target_indices))
    ac = np.atleast_1d(np.asarray(adv_classes))
    check_target(ti, ac, y_test, num_classes, n_test=len(x_test))
    pidx = choose_poisons(key, y_train, ac, p, norms=norms)
    xb = jnp.asarray(np.asarray(x_train)[pidx])
    yb = jnp.asarray(np.asarray(y_train)[pidx])
    xt = jnp.asarray(np.asarray(x_test)[ti][:, None])
    yt = jnp.asarray(ac[:, None].astype(np.int32))
    return GradientMatchingProblem(surrogate_params, xb, yb, xt, yt, jnp.float32(eps)), pidx


def cross_entropy(apply_fn: Callable):
    r"""Per-example softmax cross-entropy :math:`-\log\mathrm{softmax}(f_\theta(x_i))_{y_i}` in the one
    signature ``(params, {"x", "y"}, key) -> [B]``: the same function trains victims
    (:mod:`poisonjax.core.victims`) and drives crafting (:mod:`poisonjax.core.gradient_matching`)."""
    from poisonjax.core.training import softmax_cross_entropy_loss
    return softmax_cross_entropy_loss(apply_fn)


def random_noise_deltas(key, base_images, eps) -> jax.Array:
    r"""Baseline: :math:`\delta = \Pi(\epsilon\,s)` with random signs :math:`s \in \{\pm1\}`, projected so
    that ``base + delta`` stays in [0, 1]. Same shape as ``base_images``."""
    from poisonjax.core.gradient_matching import flat_random   # same draw, faster to compile
    s = jnp.where(flat_random(jax.random.bernoulli, key, base_images.shape, p=0.5), 1.0, -1.0)
    return project_linf_box(base_images, eps * s, eps)


# ------------------------------------------------------------------ Poison Frogs ---------------

class FeatureCollisionState(NamedTuple):
    """``delta [P,H,W,C]``, optax Adam state and the last ``loss``."""

    delta: jax.Array
    opt_state: optax.OptState
    loss: jax.Array


def feature_collision_attack(feature_fn: Callable, *, beta: float = 0.0, lr: float = 0.02) -> AttackOptimizer:
    r"""Poison Frogs' feature collision (Shafahi et al., NeurIPS 2018) as an :class:`AttackOptimizer`.

    .. math:: \min_{\delta}\ \frac1P\sum_i \|\phi(b_i + \delta_i) - \phi(x_t)\|_2^2 / d
              + \beta\,\frac1P\sum_i \|\delta_i\|_2^2 \quad \text{s.t. } \|\delta_i\|_\infty \le \epsilon,\ b_i + \delta_i \in [0,1],

    with :math:`\phi` the frozen feature extractor (``feature_fn(x [B,H,W,C]) -> [B, d]``), solved
    by projected Adam. Problem: :class:`GradientMatchingProblem` (``target_images[0]`` is the
    target; surrogate params unused -- ``feature_fn`` closes over them).

    Simplified: the paper's forward-backward splitting with an unbounded perturbation and a
    :math:`\beta`-weighted proximity term is replaced by projected Adam under the same L-inf bound as
    the other attacks, so budgets are comparable; the L-inf bound replaces the proximity term by
    default (``beta = 0``; on 8x8 digits any ``beta`` of the paper's order pins the poisons to
    their bases).
    """
    opt = optax.adam(lr)

    def objective(delta, problem):
        ft = feature_fn(problem.target_images[:1])
        fp = feature_fn(problem.base_images + delta)
        return jnp.mean(jnp.sum((fp - ft) ** 2, -1)) / ft.shape[-1] + beta * jnp.mean(jnp.sum(delta ** 2, axis=(1, 2, 3)))

    def init(key, problem):
        d = jnp.zeros_like(problem.base_images)
        return FeatureCollisionState(d, opt.init(d), jnp.zeros(()))

    def step(state, problem):
        loss, g = jax.value_and_grad(objective)(state.delta, problem)
        upd, os = opt.update(g, state.opt_state, state.delta)
        d = project_linf_box(problem.base_images, state.delta + upd, problem.eps)
        return FeatureCollisionState(d, os, loss)

    return AttackOptimizer(init, step, lambda s, p: {"loss": s.loss})


def transfer_success(features_train, y_train, keys, *, poison_index, poison_features, target_features,
                     adv_label, num_classes: int, steps: int = 300, lr: float = 0.05, weight_decay: float = 1e-4,
                     features_test=None, y_test=None):
    r"""Transfer-learning victims: a frozen feature extractor and a retrained linear head.

    Victim ``v`` fits :math:`W, b` by full-batch Adam on softmax cross-entropy over the training
    features, with the poisons' features (``poison_features[v]``, rows ``poison_index[v]``)
    replacing the clean ones; the head is initialised from ``keys[v]``. Success: the head puts
    :math:`\phi(x_t)` in ``adv_label[v]``. Everything is one ``vmap`` over victims.

    Shapes: features_train ``[N, d]``; poison_index ``[V, P]``; poison_features ``[V, P, d]``;
    target_features ``[V, d]``; adv_label ``[V]``. Returns dict of ``[V]`` arrays ``success``,
    ``target_prob`` and (with a test set) ``clean_accuracy``.
    """
    from poisonjax.core.training import train_full_batch
    ftr = jnp.asarray(features_train)
    d = ftr.shape[-1]
    opt = optax.adamw(lr, weight_decay=weight_decay)

    def one(key, pidx, pf, tf, al):
        x = ftr.at[pidx].set(pf)
        w0 = {"w": jax.random.normal(key, (d, num_classes)) * (1.0 / np.sqrt(d)), "b": jnp.zeros((num_classes,))}
        apply = lambda p, f: f @ p["w"] + p["b"]
        loss = lambda p, k: optax.softmax_cross_entropy_with_integer_labels(apply(p, x), y_train).mean()
        p = train_full_batch(loss, w0, opt, steps, key).params
        logits = apply(p, tf)
        out = {"success": jnp.argmax(logits) == al, "target_prob": jax.nn.softmax(logits)[al]}
        if features_test is not None:
            out["clean_accuracy"] = jnp.mean(jnp.argmax(apply(p, features_test), -1) == y_test)
        return out

    return jax.vmap(one)(keys, jnp.asarray(poison_index), jnp.asarray(poison_features),
                         jnp.asarray(target_features), jnp.asarray(adv_label))


def checkpoint_surrogates(init_fn: Callable, per_example_loss: Callable, optimizer, data, key, *,
                          checkpoints: Sequence[int], batch_size: int, members: int = 1):
    r"""Surrogates along training: ``members`` models trained from scratch (vmapped over seeds), with
    their parameters saved after each epoch count in ``checkpoints`` (increasing), stacked as
    ``[members * len(checkpoints), ...]`` (member-major).

    Matching the adversarial gradient at several points of the training trajectory, rather than only
    at the final model, makes the poisons work on victims retrained from scratch (the gradient
    alignment then holds along the victim's trajectory, as in MetaPoison's and Witches' Brew's
    ensembles). Each segment continues from the previous parameters with a fresh optimiser state.
    """
    from poisonjax.core.training import train_minibatch
    cps = [int(c) for c in checkpoints]
    if not cps or any(b <= a for a, b in zip(cps, cps[1:])) or cps[0] <= 0:
        raise PoisonJaxInputError(f"checkpoints must be increasing positive epoch counts, got {list(checkpoints)}")

    def one(k):
        k0, k1 = jax.random.split(k)
        p = init_fn(k0)
        out, prev = [], 0
        for i, c in enumerate(cps):
            p = train_minibatch(per_example_loss, p, optimizer, data, jax.random.fold_in(k1, i),
                                epochs=c - prev, batch_size=batch_size).params
            out.append(p)
            prev = c
        return jax.tree.map(lambda *xs: jnp.stack(xs), *out)

    stacked = jax.vmap(one)(jax.random.split(key, members))
    return jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:]), stacked)


def alignment_at(per_example_loss: Callable, params, problem: GradientMatchingProblem, delta) -> jax.Array:
    r"""Gradient cosine :math:`\cos(\nabla_\theta L(x_t, y^{adv}), \nabla_\theta \tfrac1P\sum_i L(b_i + \delta_i, y_i))`
    of every trial at every model in ``params`` (stacked ``[V, ...]``): ``[V, T]``.

    Evaluated at *independently trained* clean models (not the surrogates the poisons were crafted
    on), this measures whether the alignment that crafting optimised transfers to new victims --
    the premise of Witches' Brew's from-scratch setting. ``problem`` is batched over trials
    (``base_images [T, P, ...]``), ``delta [T, P, H, W, C]``.
    """
    from poisonjax.core.gradient_matching import cosine_alignment_loss
    k0 = jax.random.PRNGKey(0)

    def one(p, xt, yt, xb, yb, d):
        gt = jax.grad(lambda q: jnp.mean(per_example_loss(q, {"x": xt, "y": yt}, k0)))(p)
        gp = jax.grad(lambda q: jnp.mean(per_example_loss(q, {"x": xb + d, "y": yb}, k0)))(p)
        return 1.0 - cosine_alignment_loss(gp, gt)

    per_trial = jax.vmap(one, in_axes=(None, 0, 0, 0, 0, 0))
    return jax.vmap(lambda p: per_trial(p, problem.target_images, problem.target_labels, problem.base_images,
                                        problem.base_labels, jnp.asarray(delta)))(params)
