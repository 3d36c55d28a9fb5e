r"""Heuristic training-set poisoning for images: BadNets triggers and label flipping.

* BadNets (Gu et al. 2017): stamp a fixed patch onto a fraction ``rate`` of training images and
  relabel them to the target class :math:`y_t`:
  :math:`\tilde x = (1 - M) \odot x + M \odot \Delta`, :math:`\tilde y = y_t`,
  where :math:`M \in \{0,1\}^{H\times W\times 1}` is the patch mask and :math:`\Delta` the pattern.
  The attack success rate (ASR) is the fraction of *non-target* test images that the victim classifies
  as :math:`y_t` once the trigger is stamped on them.
* Label flipping: relabel a fraction ``rate`` of training examples, either uniformly to another class
  (untargeted) or from a source class to a target class (targeted).

Poisoned indices are a fixed-size set (``round(rate * N)``), chosen with an explicit PRNG key.
"""
from __future__ import annotations

from typing import NamedTuple, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from poisonjax.core.validation import PoisonJaxInputError, check_fraction, check_in_range


class Trigger(NamedTuple):
    """``mask [H, W, 1]`` in {0,1} and ``pattern [H, W, C]`` in [0, 1]."""

    mask: jax.Array
    pattern: jax.Array


def patch_trigger(image_shape: Tuple[int, int, int], size: int = 3, corner: str = "bottom_right",
                  value: str = "checkerboard") -> Trigger:
    """A square ``size x size`` patch in a corner; ``value`` "white" or "checkerboard" (BadNets' default look)."""
    h, w, c = image_shape
    if not (1 <= size <= min(h, w)):
        raise PoisonJaxInputError(f"size must be in [1, {min(h, w)}] for images of shape {image_shape}, got {size}")
    mask = np.zeros((h, w, 1), np.float32)
    r0 = h - size if "bottom" in corner else 0
    c0 = w - size if "right" in corner else 0
    mask[r0:r0 + size, c0:c0 + size] = 1.0
    if value == "white":
        pat = np.ones((h, w, c), np.float32)
    elif value == "checkerboard":
        ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        pat = np.repeat(((ii + jj) % 2 == 0).astype(np.float32)[..., None], c, axis=-1)
    else:
        raise PoisonJaxInputError(f"value must be 'white' or 'checkerboard', got {value!r}")
    return Trigger(jnp.asarray(mask), jnp.asarray(pat))


def apply_trigger(x: jax.Array, trigger: Trigger) -> jax.Array:
    r"""Stamp the trigger on images ``x [..., H, W, C]``: :math:`(1-M)\odot x + M \odot \Delta`."""
    return x * (1.0 - trigger.mask) + trigger.mask * trigger.pattern


def choose_poison_indices(key: jax.Array, labels: jax.Array, rate: float, exclude_class: int = -1) -> jax.Array:
    """``round(rate * N)`` distinct indices, uniformly among examples whose label != ``exclude_class``."""
    rate = check_fraction("rate", rate)
    n = labels.shape[0]
    k = int(round(rate * n))
    eligible = labels != exclude_class
    if k > int(np.asarray(eligible).sum()):
        raise PoisonJaxInputError(f"rate={rate} asks for {k} poisons but only {int(eligible.sum())} examples are eligible")
    scores = jnp.where(eligible, jax.random.uniform(key, (n,)), -1.0)
    return jax.lax.top_k(scores, k)[1]


def badnets_poison(key: jax.Array, x: jax.Array, y: jax.Array, rate: float, target_class: int,
                   trigger: Trigger):
    """Poison ``rate`` of ``(x [N,H,W,C] in [0,1], y [N])`` with the BadNets trigger and target label.

    Returns ``(x_poisoned, y_poisoned, indices)``. Images of the target class are not chosen (their
    label would not change).
    """
    check_in_range("x", x, 0.0, 1.0)
    if x.ndim != 4:
        raise PoisonJaxInputError(f"x must be NHWC images with shape (N, H, W, C), got {tuple(x.shape)}")
    idx = choose_poison_indices(key, y, rate, exclude_class=target_class)
    xp = x.at[idx].set(apply_trigger(x[idx], trigger))
    yp = y.at[idx].set(target_class)
    return xp, yp, idx


def flip_labels(key: jax.Array, y: jax.Array, rate: float, num_classes: int, source_class: int = -1,
                target_class: int = -1):
    r"""Label flipping. Untargeted (default): ``rate`` of the labels become a uniformly random *other*
    class, :math:`\tilde y = (y + u) \bmod C`, :math:`u \sim U\{1..C-1\}`. Targeted (``source_class`` and
    ``target_class`` given): ``rate`` of the *source-class* examples are relabelled ``target_class``.
    Returns ``(y_flipped, indices)``."""
    k1, k2 = jax.random.split(key)
    if (source_class >= 0) != (target_class >= 0):
        raise PoisonJaxInputError("give both source_class and target_class for targeted flipping, or neither")
    if source_class >= 0:
        if source_class == target_class:
            raise PoisonJaxInputError("target_class must differ from source_class")
        rate = check_fraction("rate", rate)
        src = y == source_class
        k = int(round(rate * int(src.sum())))
        idx = jax.lax.top_k(jnp.where(src, jax.random.uniform(k1, y.shape), -1.0), k)[1]
        return y.at[idx].set(target_class), idx
    idx = choose_poison_indices(k1, y, rate)
    shift = jax.random.randint(k2, idx.shape, 1, num_classes)
    return y.at[idx].set((y[idx] + shift) % num_classes), idx


def attack_success_rate(pred_triggered: jax.Array, y_true: jax.Array, target_class: int) -> jax.Array:
    r"""ASR :math:`= \frac{|\{i : y_i \ne y_t, \hat y(\tilde x_i) = y_t\}|}{|\{i : y_i \ne y_t\}|}` (``pred`` ``[..., N]``)."""
    valid = (y_true != target_class).astype(jnp.float32)
    return jnp.sum((pred_triggered == target_class) * valid, axis=-1) / jnp.maximum(valid.sum(), 1)
