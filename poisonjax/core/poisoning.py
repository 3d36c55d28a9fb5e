r"""Data-poisoning primitives shared by every room: triggers, label flipping, poison-index selection.

JAX-first, pure, explicit PRNG keys, static output sizes. Semantics (one definition each):

* **Trigger** ``(mask M, pattern P)`` with ``M`` in [0, 1] broadcastable to one example and ``P`` of
  the example's shape. Stamping is the convex blend
  :math:`\tilde x = (1 - M) \odot x + M \odot P`.
  A BadNets patch has :math:`M \in \{0, 1\}` on a square (Gu et al. 2017); a Blended trigger
  (Chen et al. 2017) has :math:`M \equiv \alpha` everywhere; any other additive-in-pixel-space
  trigger is expressible the same way. Feature-vector triggers (tabular data, ``[F]``) use a mask over
  the last features.
* **Label flipping** (:func:`flip_labels`), three modes:
  ``"random"`` -- each chosen label becomes a uniformly random *other* class,
  :math:`\tilde y = (y + u) \bmod C`, :math:`u \sim U\{1, \dots, C-1\}`;
  ``"reverse"`` -- :math:`\tilde y = C - 1 - y` (the FL literature's untargeted flip, Tolpegin et
  al. 2020; note that with odd :math:`C` the middle class maps to itself);
  ``"targeted"`` -- chosen examples of ``source_class`` become ``target_class``.
  ``rate`` is the fraction of *eligible* examples that are flipped (all examples for ``random`` and
  ``reverse``, the source class for ``targeted``); ``rate=1`` with ``reverse`` flips every label.
* **Poison indices** (:func:`choose_poison_indices`): ``round(rate * N_eligible)`` distinct indices,
  uniformly among the eligible examples (label filters ``exclude_class`` / ``only_class`` and an
  optional validity ``mask`` for padded data). Uniform choice is top-k of i.i.d. uniform scores, so
  the output size is static.
* **ASR** (:func:`attack_success_rate`): the fraction of non-target examples whose triggered
  prediction is the target class.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from poisonjax.core.validation import PoisonJaxInputError, check_fraction

FLIP_MODES = ("random", "reverse", "targeted")


class Trigger(NamedTuple):
    """``mask`` (broadcastable to one example, values in [0, 1]) and ``pattern`` (one example's shape,
    values in the data range). Images: ``mask [H, W, 1]``, ``pattern [H, W, C]``."""

    mask: jax.Array
    pattern: jax.Array


def _check_image_shape(image_shape) -> Tuple[int, int, int]:
    if len(tuple(image_shape)) != 3:
        raise PoisonJaxInputError(f"image_shape must be (H, W, C), got {tuple(image_shape)}")
    return tuple(int(s) for s in image_shape)


def patch_trigger(image_shape: Sequence[int], size: int = 3, corner: str = "bottom_right",
                  value: str = "checkerboard", pattern: Optional[np.ndarray] = None) -> Trigger:
    r"""A BadNets patch: a ``size x size`` square in a corner with :math:`M \in \{0,1\}`.

    Args:
      image_shape: ``(H, W, C)``.
      size: side of the square, in ``[1, min(H, W)]``.
      corner: ``"bottom_right"``, ``"bottom_left"``, ``"top_right"`` or ``"top_left"``.
      value: ``"white"``, ``"black"``, ``"checkerboard"`` (BadNets' look) or ``"custom"`` (``pattern``).
      pattern: a ``[size, size, C]`` patch in [0, 1] for ``value="custom"``.
    """
    h, w, c = _check_image_shape(image_shape)
    if not (1 <= int(size) <= min(h, w)):
        raise PoisonJaxInputError(f"size must be in [1, {min(h, w)}] for images of shape {(h, w, c)} "
                                  f"(the trigger may not be larger than the image), got {size}")
    if corner not in ("bottom_right", "bottom_left", "top_right", "top_left"):
        raise PoisonJaxInputError(f"corner must be one of bottom_right/bottom_left/top_right/top_left, got {corner!r}")
    size = int(size)
    mask = np.zeros((h, w, 1), np.float32)
    r0 = h - size if corner.startswith("bottom") else 0
    c0 = w - size if corner.endswith("right") else 0
    mask[r0:r0 + size, c0:c0 + size] = 1.0
    pat = np.zeros((h, w, c), np.float32)
    if value == "white":
        pat[:] = 1.0
    elif value == "black":
        pass
    elif value == "checkerboard":
        ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        pat[:] = ((ii + jj) % 2 == 0).astype(np.float32)[..., None]
    elif value == "custom":
        p = np.asarray(pattern, np.float32) if pattern is not None else None
        if p is None or p.shape != (size, size, c):
            raise PoisonJaxInputError(f"pattern must be a ({size}, {size}, {c}) array for value='custom', "
                                      f"got {None if p is None else p.shape}")
        if p.min() < 0 or p.max() > 1:
            raise PoisonJaxInputError("pattern values must lie in [0, 1]")
        pat[r0:r0 + size, c0:c0 + size] = p
    else:
        raise PoisonJaxInputError(f"value must be 'white', 'black', 'checkerboard' or 'custom', got {value!r}")
    return Trigger(jnp.asarray(mask), jnp.asarray(pat))


def blend_trigger(pattern: jax.Array, alpha: float) -> Trigger:
    r"""Blended trigger (Chen et al. 2017): :math:`\tilde x = (1-\alpha) x + \alpha P` everywhere.

    ``pattern`` is one example (e.g. ``[H, W, C]`` in [0, 1]); ``alpha`` in [0, 1]."""
    alpha = check_fraction("alpha", alpha, low_inclusive=True)
    pattern = jnp.asarray(pattern, jnp.float32)
    return Trigger(jnp.full(pattern.shape[:-1] + (1,), alpha, jnp.float32) if pattern.ndim >= 2
                   else jnp.full(pattern.shape, alpha, jnp.float32), pattern)


def random_pattern(key: jax.Array, shape: Sequence[int]) -> jax.Array:
    """A fixed i.i.d. uniform [0, 1] pattern of ``shape`` (the Blended attack's noise image)."""
    return jax.random.uniform(key, tuple(shape), jnp.float32)


def feature_trigger(num_features: int, size: int = 2, value: float = 1.0) -> Trigger:
    r"""Trigger for feature vectors ``[F]``: the last ``size`` features are set to ``value``."""
    if not (1 <= int(size) <= int(num_features)):
        raise PoisonJaxInputError(f"size must be in [1, {num_features}] (the number of features), got {size}")
    mask = np.zeros((int(num_features),), np.float32)
    mask[-int(size):] = 1.0
    return Trigger(jnp.asarray(mask), jnp.asarray(mask * float(value)))


def apply_trigger(x: jax.Array, trigger: Trigger) -> jax.Array:
    r"""Stamp ``trigger`` on a batch ``x [..., *example_shape]``: :math:`(1-M)\odot x + M\odot P`."""
    return x * (1.0 - trigger.mask) + trigger.mask * trigger.pattern


def choose_poison_indices(key: jax.Array, labels: jax.Array, rate: float, exclude_class: int = -1,
                          only_class: int = -1, mask: Optional[jax.Array] = None,
                          of: str = "eligible") -> jax.Array:
    r"""``k = round(rate * N_eligible)`` (``of="eligible"``) or ``k = round(rate * N_valid)``
    (``of="all"``: a fraction of the whole, valid, training set) distinct indices drawn uniformly among
    eligible examples.

    Eligible: ``mask`` true (all if ``None``), label ``!= exclude_class`` (if ``>= 0``) and label
    ``== only_class`` (if ``>= 0``). Implementation: top-k of uniform scores, ineligible scored -1.

    Args:
      key: PRNG key.
      labels: ``[N]`` integer labels.
      rate: fraction in [0, 1] of the eligible examples.
    Returns:
      ``[k]`` int32 indices.
    """
    rate = check_fraction("rate", rate, low_inclusive=True)
    labels = jnp.asarray(labels)
    n = labels.shape[0]
    eligible = jnp.ones((n,), bool) if mask is None else jnp.asarray(mask).astype(bool)
    if exclude_class >= 0:
        eligible = eligible & (labels != exclude_class)
    if only_class >= 0:
        eligible = eligible & (labels == only_class)
    if of not in ("eligible", "all"):
        raise PoisonJaxInputError(f"of must be 'eligible' or 'all', got {of!r}")
    n_el = int(np.asarray(eligible).sum())
    n_valid = n if mask is None else int(np.asarray(mask).astype(bool).sum())
    k = int(round(rate * (n_el if of == "eligible" else n_valid)))
    if k > n_el:
        raise PoisonJaxInputError(f"rate={rate} asks for {k} poisons but only {n_el} examples are eligible")
    scores = jnp.where(eligible, jax.random.uniform(key, (n,)), -1.0)
    return jax.lax.top_k(scores, k)[1].astype(jnp.int32)


def flip_labels(key: jax.Array, y: jax.Array, rate: float, num_classes: int, mode: str = "random",
                source_class: int = -1, target_class: int = -1,
                mask: Optional[jax.Array] = None) -> Tuple[jax.Array, jax.Array]:
    r"""Label flipping; see the module docstring for the three modes' semantics.

    Args:
      key: PRNG key (choice of flipped examples; the new class in ``"random"`` mode).
      y: ``[N]`` integer labels in ``[0, num_classes)``.
      rate: fraction in [0, 1] of the eligible examples to flip.
      num_classes: C >= 2.
      mode: ``"random"``, ``"reverse"`` or ``"targeted"``.
      source_class, target_class: for ``"targeted"``.
      mask: optional ``[N]`` validity mask (padded client data); invalid rows are never flipped.
    Returns:
      ``(y_flipped [N], indices [k])``.
    """
    if mode not in FLIP_MODES:
        raise PoisonJaxInputError(f"mode must be one of {FLIP_MODES}, got {mode!r}")
    if int(num_classes) < 2:
        raise PoisonJaxInputError(f"num_classes must be >= 2, got {num_classes}")
    y = jnp.asarray(y)
    k1, k2 = jax.random.split(key)
    if mode == "targeted":
        for name, c in (("source_class", source_class), ("target_class", target_class)):
            if not (0 <= int(c) < num_classes):
                raise PoisonJaxInputError(f"{name} must be in [0, {num_classes}) for mode='targeted', got {c}")
        if source_class == target_class:
            raise PoisonJaxInputError("target_class must differ from source_class")
        idx = choose_poison_indices(k1, y, rate, only_class=source_class, mask=mask)
        return y.at[idx].set(target_class), idx
    idx = choose_poison_indices(k1, y, rate, mask=mask)
    if mode == "reverse":
        return y.at[idx].set((num_classes - 1 - y[idx]).astype(y.dtype)), idx
    shift = jax.random.randint(k2, idx.shape, 1, num_classes)
    return y.at[idx].set(((y[idx] + shift) % num_classes).astype(y.dtype)), idx


def poison_with_trigger(key: jax.Array, x: jax.Array, y: jax.Array, rate: float, target_class: int,
                        trigger: Trigger, relabel: bool = True, only_class: int = -1,
                        mask: Optional[jax.Array] = None):
    r"""Dirty-label (``relabel=True``, BadNets/Blended) or clean-label (``relabel=False``,
    ``only_class=target_class``) trigger poisoning of ``rate`` of the eligible examples.

    ``rate`` is a fraction of the whole (valid) training set: ``k = round(rate * N)``.
    Dirty-label poisons are chosen among non-target examples (their label changes to ``target_class``).
    Returns ``(x_poisoned, y_poisoned, indices)``."""
    exclude = target_class if relabel and only_class < 0 else -1
    idx = choose_poison_indices(key, y, rate, exclude_class=exclude, only_class=only_class, mask=mask, of="all")
    xp = x.at[idx].set(apply_trigger(x[idx], trigger))
    yp = y.at[idx].set(target_class) if relabel else y
    return xp, yp, idx


def attack_success_rate(pred_triggered: jax.Array, y_true: jax.Array, target_class: int) -> jax.Array:
    r"""ASR :math:`= |\{i: y_i \ne y_t, \hat y(\tilde x_i) = y_t\}| / |\{i: y_i \ne y_t\}|`.

    ``pred_triggered`` is ``[..., N]`` (a leading victim axis is allowed); ``y_true`` ``[N]``."""
    valid = (y_true != target_class).astype(jnp.float32)
    return jnp.sum((pred_triggered == target_class) * valid, axis=-1) / jnp.maximum(valid.sum(), 1)
