r"""One-call gradient-matching attacks on your own arrays and your own network (numpy in, numpy out).

ART users write ``GradientMatchingAttack(classifier, ...).poison(x_trigger, y_trigger, x_train, y_train)``;
here::

    import poisonjax.vision as pv
    x_poisoned, idx = pv.witches_brew_attack(x_train, y_train, x_target, target_label=3,
                                             budget=0.01, eps=8/255, model=MyFlaxNet(num_classes=10))
    # train your model on (x_poisoned, y_train): labels are unchanged (clean-label)

Shapes: ``x_train`` ``[N, H, W, C]`` float in ``[0, 1]`` (NHWC; transpose NCHW arrays), ``y_train`` ``[N]``
int, ``x_target`` ``[H, W, C]`` or ``[T, H, W, C]`` (T target images that should all be classified as
``target_label``). Returns ``x_poisoned`` ``[N, H, W, C]`` float32 (a copy: equal to ``x_train`` except on
the ``P = max(1, round(budget * N))`` rows ``poison_indices``) and ``poison_indices`` ``[P]`` int (training
images of class ``target_label``, labels unchanged), with
:math:`\|x^{poisoned}_i - x_i\|_\infty \le \epsilon` and :math:`0 \le x^{poisoned}_i \le 1`.

Your own network (``model=``): any of

* a flax ``nn.Module`` mapping ``x [B,H,W,C] -> logits [B, C]`` (BatchNorm modules with a ``train``
  argument are handled, see :func:`poisonjax.core.victims.flax_victim`);
* a pair ``(init_fn, apply_fn)``: ``init_fn(key) -> params`` and a pure ``apply_fn(params, x) -> logits``;
* a pure ``apply_fn(params, x) -> logits`` together with ``params=`` (a trained surrogate);
* a name of a built-in backbone (``"small_cnn"``, ``"convnet"``, ``"small_resnet"``, ``"mlp"``).

Unless ``params`` is given, ``n_surrogates`` surrogates are trained on the clean ``(x_train, y_train)``
(Adam, ``surrogate_epochs``; one vmapped program, :func:`poisonjax.core.victims.train_victims`) and the
poisons are crafted against all of them (an ensemble, :mod:`poisonjax.core.gradient_matching`). A given
``params`` is one surrogate, or ``M`` stacked ones with ``stacked=True``.

For full control (batched trials, checkpoints/resume, victim retraining) use
:func:`poisonjax.core.gradient_matching.craft` with :func:`poisonjax.vision.witches_brew.witches_brew_problem`
or :func:`poisonjax.vision.padhash.padhash_problem`.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from poisonjax.core.gradient_matching import (GradientMatchingProblem, check_budget, check_epsilon, check_images,
                                              craft)
from poisonjax.core.validation import PoisonJaxInputError
from poisonjax.core.victims import Victim, as_victim, flax_victim, train_victims

__all__ = ["witches_brew_attack", "padhash_attack", "resolve_model"]


def resolve_model(model, sample_x, num_classes: int, loss: Optional[Callable] = None,
                  params=None) -> Tuple[Optional[Victim], Callable]:
    """``(victim or None, apply_fn)`` from the ``model=`` forms listed in the module doc.

    ``loss(outputs [B, ...], y [B]) -> [B]`` is the training loss of the network's outputs (softmax
    cross-entropy when ``None``). ``victim`` is ``None`` only for a bare ``apply_fn`` with ``params``."""
    import flax.linen as nn
    from poisonjax.core.victims import softmax_cross_entropy
    out_loss = loss or softmax_cross_entropy
    if isinstance(model, str):
        from poisonjax.vision.models import make_classifier
        model = make_classifier(model, num_classes=num_classes)
    if isinstance(model, nn.Module):
        v = flax_victim(model, sample_x, loss=out_loss)
        return v, v.apply
    if isinstance(model, (tuple, list)) and len(model) == 2 and all(callable(f) for f in model):
        init_fn, apply_fn = model
        per_ex = lambda p, b, k: out_loss(apply_fn(p, b["x"]), b["y"])  # noqa: E731
        return as_victim(init_fn, per_ex, apply_fn), apply_fn
    if callable(model):
        if params is None:
            raise PoisonJaxInputError("model: a plain apply(params, x) function needs params=<its trained params> "
                                      "(or pass model=(init_fn, apply_fn) to train surrogates)")
        return None, model
    raise PoisonJaxInputError("model must be a flax nn.Module, a pair (init_fn, apply_fn), an apply(params, x) "
                              f"function with params=, or a built-in backbone name; got {type(model).__name__}")


def _check_labels(y, n, name="y_train"):
    y = np.asarray(y)
    if y.shape != (n,) or y.dtype.kind not in "iu" or (n and y.min() < 0):
        raise PoisonJaxInputError(f"{name} must be [N] = ({n},) non-negative integer labels, "
                                  f"got shape {y.shape} dtype {y.dtype}")
    return y.astype(np.int32)


def _targets(x_target, x_train):
    xt = np.asarray(x_target, np.float32)
    if xt.ndim == 3:
        xt = xt[None]
    check_images("x_target", xt, channels=np.shape(x_train)[-1])
    if xt.shape[1:] != np.shape(x_train)[1:]:
        raise PoisonJaxInputError(f"x_target images must have x_train's shape [H, W, C] = {np.shape(x_train)[1:]}, "
                                  f"got {xt.shape[1:]}")
    return xt


def _surrogates(victim, apply_fn, params, stacked, x, y, *, n_surrogates, epochs, batch_size, lr, key):
    """Stacked surrogate variables ``[M, ...]``: given ``params`` or freshly trained ones."""
    if params is not None:
        return params if stacked else jax.tree.map(lambda a: jnp.asarray(a)[None], params)
    keys = jax.random.split(key, int(n_surrogates))
    res = train_victims(victim, optax.adam(lr), {"x": jnp.asarray(x), "y": jnp.asarray(y)}, keys,
                        epochs=int(epochs), batch_size=int(min(batch_size, len(y))))
    return res.variables


def _common(x_train, y_train, x_target, target_label, budget, eps, num_classes):
    check_images("x_train", x_train)
    x = np.asarray(x_train, np.float32)
    y = _check_labels(y_train, x.shape[0])
    xt = _targets(x_target, x)
    c = int(num_classes) if num_classes is not None else int(y.max()) + 1
    if isinstance(target_label, bool) or not isinstance(target_label, (int, np.integer)) or not 0 <= target_label < c:
        raise PoisonJaxInputError(f"target_label must be an integer class in [0, {c - 1}], got {target_label!r}")
    budget = check_budget(budget)
    eps = check_epsilon(eps)
    p = max(1, int(round(budget * x.shape[0])))
    pool = np.flatnonzero(y == int(target_label))
    if len(pool) < p:
        raise PoisonJaxInputError(f"budget={budget:g} asks for {p} poisons but class {int(target_label)} has only "
                                  f"{len(pool)} training images; lower the budget")
    return x, y, xt, c, p, pool, eps


def _finish(x, pidx, poisons):
    out = x.copy()
    out[pidx] = np.clip(np.asarray(poisons, np.float32), 0.0, 1.0)
    return out, pidx.astype(np.int64)


def witches_brew_attack(x_train, y_train, x_target, target_label: int, budget: float, eps: float, *,
                        model: Any = "small_cnn", params=None, stacked: bool = False,
                        num_classes: Optional[int] = None, n_surrogates: int = 1, surrogate_epochs: int = 5,
                        batch_size: int = 128, lr: float = 1e-3, steps: int = 250, restarts: int = 1,
                        step_size: float = 0.1, flip: bool = False, crop: int = 0, select: str = "gradient_norm",
                        seed: int = 0, progress: bool = False, workdir=None) -> Tuple[np.ndarray, np.ndarray]:
    r"""Witches' Brew (Geiping et al., ICLR 2021) on your arrays: ``(x_poisoned [N,H,W,C], poison_indices [P])``.

    The poisons are ``P = max(1, round(budget * N))`` training images of class ``target_label`` (the
    ones with the largest surrogate gradient norm :math:`\|\nabla_\theta L(f_\theta(x_i), y_i)\|` with
    ``select="gradient_norm"``, the paper's choice, or random ones with ``select="random"``), perturbed by
    :math:`\delta` minimising the gradient-alignment loss over the surrogates :math:`\theta_m`

    .. math:: \frac1M\sum_m 1 - \cos\Big(\nabla_\theta \tfrac1P\textstyle\sum_i L(f_{\theta_m}(x_i+\delta_i), y_i),\
              \nabla_\theta \tfrac1T\sum_t L(f_{\theta_m}(x^{target}_t), y^{adv})\Big)

    s.t. :math:`\|\delta_i\|_\infty\le\epsilon`, :math:`0\le x_i+\delta_i\le 1` (signed Adam, ``steps``
    steps, ``restarts`` random starts, the best kept; ``flip``/``crop``: differentiable augmentation).
    A victim trained from scratch on ``(x_poisoned, y_train)`` then tends to classify the target(s) as
    ``target_label`` (success is probabilistic; the paper reports it over many victims).

    Args: see the module doc for shapes and ``model``/``params``/``stacked``; ``budget`` in (0, 1]
      (fraction of the training set), ``eps`` in (0, 1] (pixel units); ``num_classes`` defaults to
      ``max(y_train) + 1``; ``workdir`` makes crafting checkpointed and resumable.
    """
    from poisonjax.core.training import softmax_cross_entropy_loss
    from poisonjax.core.validation import check_choice
    from poisonjax.vision.witches_brew import gradient_norms
    check_choice("select", select, ("gradient_norm", "random"))
    x, y, xt, c, p, pool, eps = _common(x_train, y_train, x_target, target_label, budget, eps, num_classes)
    victim, apply_fn = resolve_model(model, x[:1], c, params=params)
    k_sur, k_sel, k_craft = jax.random.split(jax.random.PRNGKey(seed), 3)
    sur = _surrogates(victim, apply_fn, params, stacked, x, y, n_surrogates=n_surrogates, epochs=surrogate_epochs,
                      batch_size=batch_size, lr=lr, key=k_sur)
    loss = softmax_cross_entropy_loss(apply_fn)
    if select == "gradient_norm":
        norms = np.asarray(gradient_norms(loss, sur, x[pool], y[pool]))
        pidx = pool[np.argsort(-norms, kind="stable")[:p]]
    else:
        pidx = pool[np.asarray(jax.random.permutation(k_sel, len(pool)))[:p]]
    problem = GradientMatchingProblem(sur, jnp.asarray(x[pidx]), jnp.asarray(y[pidx]), jnp.asarray(xt),
                                      jnp.full((xt.shape[0],), int(target_label), jnp.int32), jnp.float32(eps))
    res = craft(loss, problem, steps=int(steps), key=k_craft, restarts=restarts, alpha=0.0, step_size=step_size,
                flip=flip, crop=crop, workdir=workdir, progress=progress, desc="witches' brew")
    return _finish(x, pidx, res.poisons)


def padhash_attack(x_train, y_train, x_trigger, target_label: int, budget: float, eps: float, *,
                   model: Any = "small_cnn", params=None, stacked: bool = False, bits: int = 16,
                   method: str = "csq", centers=None, num_classes: Optional[int] = None, alpha: float = 0.3,
                   normalize_strict: bool = True, n_surrogates: int = 1, surrogate_epochs: int = 5,
                   batch_size: int = 128, lr: float = 1e-3, steps: int = 250, restarts: int = 1,
                   step_size: float = 0.1, flip: bool = False, crop: int = 0, seed: int = 0,
                   progress: bool = False, workdir=None) -> Tuple[np.ndarray, np.ndarray]:
    r"""PADHASH (Li et al., IEEE TMM 2025) on your arrays: ``(x_poisoned [N,H,W,C], poison_indices [P])``.

    Clean-label poisoning of a deep *hashing* model: after training on ``(x_poisoned, y_train)``, the
    clean trigger image(s) ``x_trigger`` used as a query should retrieve images of class ``target_label``.
    The ``P = max(1, round(budget * N))`` poisons are random training images of ``target_label``;
    :math:`\delta` minimises the strict gradient-matching loss on the hashing loss :math:`L`
    (CSQ or DPN with class codes ``centers [C, bits]``):

    .. math:: (1-\alpha)(1-\cos(G_p, G_v)) + \alpha\,\frac{\|G_p - G_v\|}{\|G_v\|\,\|G_p\|}
              \ (\times\|G_v\| \text{ with } \texttt{normalize\_strict}),

    :math:`G_v = \nabla_\theta L(f(x^{trigger}), y_t)`, :math:`G_p = \nabla_\theta \frac1P\sum_i L(f(x_i+\delta_i), y_t)`
    (``alpha=0`` is the Witches' Brew baseline).

    ``model``: a flax module or ``(init_fn, apply_fn)`` mapping ``x -> h [B, bits]`` (relaxed codes in
    (-1, 1)), or a backbone name, wrapped in :class:`poisonjax.vision.models.HashNet` (``bits`` bits);
    with ``params=``, a trained hashing surrogate (``apply_fn`` or module). ``centers`` defaults to
    :func:`poisonjax.vision.hashing.hash_centers` ``(C, bits)`` (Hadamard when possible).
    Other arguments as :func:`witches_brew_attack`.
    """
    from poisonjax.core.validation import check_choice, check_fraction
    from poisonjax.vision.hashing import HASH_METHODS, hash_centers, hashing_loss
    from poisonjax.vision.models import HashNet
    check_choice("method", method, HASH_METHODS)
    alpha = check_fraction("alpha", alpha, low_inclusive=True)
    x, y, xt, c, p, pool, eps = _common(x_train, y_train, x_trigger, target_label, budget, eps, num_classes)
    if isinstance(model, str):
        model = HashNet(model, int(bits))
    cen = jnp.asarray(hash_centers(c, int(bits), jax.random.PRNGKey(1234)) if centers is None else centers)
    if cen.ndim != 2 or cen.shape[0] < c:
        raise PoisonJaxInputError(f"centers must be [C, bits] with C >= {c} rows, got shape {cen.shape}")
    out_loss = (lambda h, yy: hashing_loss(method, lambda _p, hh: hh, cen)(None, {"x": h, "y": yy}, None))
    victim, apply_fn = resolve_model(model, x[:1], c, loss=out_loss, params=params)
    k_sur, k_sel, k_craft = jax.random.split(jax.random.PRNGKey(seed), 3)
    sur = _surrogates(victim, apply_fn, params, stacked, x, y, n_surrogates=n_surrogates, epochs=surrogate_epochs,
                      batch_size=batch_size, lr=lr, key=k_sur)
    loss = hashing_loss(method, apply_fn, cen)
    pidx = pool[np.asarray(jax.random.permutation(k_sel, len(pool)))[:p]]
    tl = int(target_label)
    problem = GradientMatchingProblem(sur, jnp.asarray(x[pidx]), jnp.full((p,), tl, jnp.int32), jnp.asarray(xt),
                                      jnp.full((xt.shape[0],), tl, jnp.int32), jnp.float32(eps))
    res = craft(loss, problem, steps=int(steps), key=k_craft, restarts=restarts, alpha=alpha, step_size=step_size,
                flip=flip, crop=crop, workdir=workdir, progress=progress, desc="padhash",
                normalize_strict=normalize_strict)
    return _finish(x, pidx, res.poisons)
