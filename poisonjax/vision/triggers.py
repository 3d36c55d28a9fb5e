r"""Heuristic training-set poisoning for images: BadNets triggers and label flipping.

The primitives live in :mod:`poisonjax.core.poisoning` (one definition each, shared by every room);
this module re-exports them and keeps the vision study's call signatures:

* BadNets (Gu et al. 2017): stamp a fixed patch onto a fraction ``rate`` of training images and
  relabel them to the target class :math:`y_t`:
  :math:`\tilde x = (1 - M) \odot x + M \odot \Delta`, :math:`\tilde y = y_t`,
  where :math:`M \in \{0,1\}^{H\times W\times 1}` is the patch mask and :math:`\Delta` the pattern
  (:func:`poisonjax.core.poisoning.poison_with_trigger`, dirty-label). The attack success rate (ASR)
  is the fraction of *non-target* test images that the victim classifies as :math:`y_t` once the
  trigger is stamped on them.
* Label flipping (:func:`flip_labels`): the vision room's untargeted flip is
  :func:`poisonjax.core.poisoning.flip_labels` mode ``"random"`` (each chosen label becomes a
  uniformly random *other* class, :math:`\tilde y = (y + u) \bmod C`); targeted flipping (both
  classes given) is mode ``"targeted"``. (The federated room's untargeted flip is mode ``"reverse"``,
  :math:`C - 1 - y`; each study keeps its own by naming the mode.)

Poisoned indices are a fixed-size set (``round(rate * N)``), chosen with an explicit PRNG key.
"""
from __future__ import annotations

import jax

from poisonjax.core import poisoning as _core
from poisonjax.core.poisoning import Trigger, apply_trigger, attack_success_rate, patch_trigger  # noqa: F401
from poisonjax.core.validation import PoisonJaxInputError, check_fraction, check_in_range


def choose_poison_indices(key: jax.Array, labels: jax.Array, rate: float, exclude_class: int = -1) -> jax.Array:
    """``round(rate * N)`` distinct indices, uniformly among examples whose label != ``exclude_class``
    (:func:`poisonjax.core.poisoning.choose_poison_indices` with ``of="all"``; ``rate`` in (0, 1])."""
    return _core.choose_poison_indices(key, labels, check_fraction("rate", rate), exclude_class=exclude_class,
                                       of="all")


def badnets_poison(key: jax.Array, x: jax.Array, y: jax.Array, rate: float, target_class: int,
                   trigger: Trigger):
    """Poison ``rate`` of ``(x [N,H,W,C] in [0,1], y [N])`` with the BadNets trigger and target label
    (:func:`poisonjax.core.poisoning.poison_with_trigger`, ``relabel=True``).

    Returns ``(x_poisoned, y_poisoned, indices)``. Images of the target class are not chosen (their
    label would not change).
    """
    check_in_range("x", x, 0.0, 1.0)
    if x.ndim != 4:
        raise PoisonJaxInputError(f"x must be NHWC images with shape (N, H, W, C), got {tuple(x.shape)}")
    return _core.poison_with_trigger(key, x, y, check_fraction("rate", rate), target_class, trigger, relabel=True)


def flip_labels(key: jax.Array, y: jax.Array, rate: float, num_classes: int, source_class: int = -1,
                target_class: int = -1):
    r"""Label flipping with the vision room's semantics (:func:`poisonjax.core.poisoning.flip_labels`).

    Untargeted (default, mode ``"random"``): ``round(rate * N)`` labels become a uniformly random
    *other* class, :math:`\tilde y = (y + u) \bmod C`, :math:`u \sim U\{1..C-1\}`. Targeted
    (``source_class`` and ``target_class`` given, mode ``"targeted"``): ``round(rate * N_source)``
    of the *source-class* examples are relabelled ``target_class``. ``rate`` in (0, 1].
    Returns ``(y_flipped, indices)``."""
    if (source_class >= 0) != (target_class >= 0):
        raise PoisonJaxInputError("give both source_class and target_class for targeted flipping, or neither")
    rate = check_fraction("rate", rate)
    if source_class >= 0:
        return _core.flip_labels(key, y, rate, num_classes, mode="targeted", source_class=source_class,
                                 target_class=target_class)
    return _core.flip_labels(key, y, rate, num_classes, mode="random")
