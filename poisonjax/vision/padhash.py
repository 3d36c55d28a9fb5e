r"""PADHASH: clean-label gradient-matching poisoning of deep hashing (Li et al., "Clean Image May be
Dangerous: Data Poisoning Attacks Against Deep Hashing", IEEE TMM 2025, arXiv 2503.21236).

Threat model: queries stay clean; only training data is poisoned, with labels unchanged. A clean
*trigger* image :math:`x_v` (not of the target class), used as a query, must retrieve images of a
target class :math:`y_t` from a hashing system trained on the poisoned data. The poisons are
``P`` training images :math:`x_i` of class :math:`y_t` plus :math:`\|\delta_i\|_\infty \le \epsilon`,
crafted on a surrogate hashing model :math:`f_{sur}` with the *strict* gradient-matching loss

.. math::
    G_v = \nabla_\theta L(f_{sur}(x_v), y_t), \qquad
    G_p = \nabla_\theta \tfrac1P\sum_i L(f_{sur}(x_i + \delta_i), y_t), \\
    \mathcal L = (1-\alpha)(1 - \cos(G_v, G_p)) + \alpha\,\|G_p - G_v\| / (\|G_v\|\,\|G_p\|),

where :math:`L` is the victim's hashing loss (CSQ / DPN, :mod:`poisonjax.vision.hashing`).
:math:`\alpha = 0` is the Witches' Brew baseline. Surrogates: *gray-box* (the victim's architecture
trained on 10-20% of the data) or *black-box* (an ensemble of different backbones), both supported
by :func:`poisonjax.core.gradient_matching.craft` (one loss per architecture group).

Evaluation (:func:`hash_victims`): V victims retrained from scratch on their poisoned sets (one
vmap), database = the poisoned training set, and per victim the trigger's ASR (top-40, > 30% of
the target class), t-AP, and mAP of ordinary clean queries.

Simplified relative to the paper: small backbones instead of ResNet-50/VGG/MobileNet; the trigger
is a random test image of another class; no ImageNet100 setting.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from poisonjax.core.gradient_matching import GradientMatchingProblem, check_epsilon, check_images, map_victims
from poisonjax.core.victims import poisoned_images, train_on_poisoned
from poisonjax.vision.hashing import binary_codes, mean_average_precision, trigger_metrics
from poisonjax.vision.witches_brew import (check_target, choose_poisons, choose_trials, n_poisons_for,
                                           refuse_test_labels)


def choose_triggers(key, y_test, num_classes: int, n: int):
    """``n`` random (trigger test index, target class != trigger's class) pairs: two ``[n]`` arrays."""
    return choose_trials(key, y_test, num_classes, n)


def padhash_problem(surrogate_params, x_train, y_train, x_test, y_test, num_classes: int, *,
                    trigger_indices, target_classes, budget: float, eps: float, key,
                    allow_test_labels: bool = False):
    """Validate and build the batched :class:`GradientMatchingProblem` of PADHASH (one trial per
    trigger): base images ``[T, P, ...]`` are random training images of the target class, their
    labels and the trigger's label are the target class. Returns ``(problem, poison_index [T, P])``.

    The attacker sees the training set and the trigger *images*, never test labels: ``y_test`` must
    be ``None`` unless ``allow_test_labels=True`` (then it only checks that each target class
    differs from its trigger's true class; see :func:`poisonjax.vision.witches_brew.refuse_test_labels`)."""
    refuse_test_labels(y_test, allow_test_labels, "padhash_problem")
    check_images("x_train", x_train)
    check_images("x_test", x_test, channels=np.shape(x_train)[-1])
    eps = check_epsilon(eps)
    p = n_poisons_for(budget, len(y_train))
    ti = np.atleast_1d(np.asarray(trigger_indices))
    tc = np.atleast_1d(np.asarray(target_classes))
    check_target(ti, tc, y_test, num_classes, n_test=len(x_test))
    pidx = choose_poisons(key, y_train, tc, p)
    xb = jnp.asarray(np.asarray(x_train)[pidx])
    yb = jnp.asarray(np.broadcast_to(tc[:, None], pidx.shape).astype(np.int32))
    xt = jnp.asarray(np.asarray(x_test)[ti][:, None])
    yt = jnp.asarray(tc[:, None].astype(np.int32))
    return GradientMatchingProblem(surrogate_params, xb, yb, xt, yt, jnp.float32(eps)), pidx


def hash_victims(init_fn: Callable, apply_fn: Callable, hash_loss: Callable, optimizer, train_x, train_y, keys, *,
                 epochs: int, batch_size: int, poison_index, poison_delta, trigger_x, target_label,
                 query_x, query_y, topk: int = 40, threshold: float = 0.3, chunk=None):
    r"""Retrain V hashing victims on their poisoned sets (vmapped; ``chunk`` victims at a time when
    given, :func:`poisonjax.core.parallel.chunked_vmap` via ``map_victims``) and evaluate retrieval.

    Args:
      init_fn, apply_fn, hash_loss: ``key -> params``; ``(params, x) -> h [B, K]``;
        ``(params, {"x", "y"}, key) -> [B]`` (:func:`poisonjax.vision.hashing.hashing_loss`).
      train_x ``[N,H,W,C]``, train_y ``[N]``: the clean training set (also the database).
      keys, poison_index, poison_delta: ``[V, 2]``; ``[V, P]``; ``[V, P, H, W, C]``.
      trigger_x, target_label: ``[V, H, W, C]``; ``[V]``.
      query_x ``[Q, H, W, C]``, query_y ``[Q]``: ordinary clean queries for mAP.

    Returns:
      dict of ``[V]`` arrays: ``success`` (ASR indicator), ``precision`` (target-class fraction of the
      top ``topk``), ``t_ap`` and ``map`` (ordinary queries against the poisoned database).
    """
    train_x = jnp.asarray(train_x)
    train_y = jnp.asarray(train_y)

    def one(key, pidx, pdelta, tx, tl):
        params = train_on_poisoned(init_fn, hash_loss, optimizer, train_x, train_y, key, pidx, pdelta,
                                   epochs=epochs, batch_size=batch_size)
        db = binary_codes(apply_fn(params, poisoned_images(train_x, pidx, pdelta)))
        tcode = binary_codes(apply_fn(params, tx[None]))
        m = trigger_metrics(tcode, tl[None], db, train_y, topk, threshold)
        qcode = binary_codes(apply_fn(params, query_x))
        return {"success": m["success"][0], "precision": m["precision"][0], "t_ap": m["t_ap"][0],
                "map": mean_average_precision(qcode, query_y, db, train_y)}

    return map_victims(one, (keys, jnp.asarray(poison_index), jnp.asarray(poison_delta), jnp.asarray(trigger_x),
                             jnp.asarray(target_label)), chunk)


def pretrained_hash_init(hash_model, sample, backbone_params) -> Callable:
    """``init(key)`` of a :class:`~poisonjax.vision.models.HashNet` whose backbone starts from
    pretrained classifier parameters (``backbone_params``: the ``params`` of the same backbone as a
    classifier; its classification head is dropped) and whose hash layer is fresh from ``key``.

    Deep-hashing victims are fine-tuned from a pretrained backbone (ImageNet weights in the paper);
    here any classifier trained on public data plays that role, shared by victims and surrogates.
    """
    def init(key):
        p = hash_model.init(key, sample)
        inner = dict(p["params"])
        name = next(k for k in inner if k != "Dense_0")
        src = backbone_params["params"] if "params" in backbone_params else backbone_params
        inner[name] = {k: src[k] for k in inner[name]}
        return {"params": inner}
    return init
