r"""Dataset-poisoning backdoor attacks on image classifiers, as pure functions.

Every attack is ``attack(key, x, y, *, num_classes, target_class, poison_rate, ...) -> BackdoorSet``:
``x [N, H, W, C]`` NHWC images in [0, 1], ``y [N]`` integer labels. ``BackdoorSet`` carries the poisoned
training set, which rows carry the payload (``poison_mask``) and which are trigger-stamped *cover*
samples that keep their true label (``cover_mask``), and the pure test-time trigger
``trigger(x_test) -> x_triggered``. **Rates are fractions of the whole training set** (``round(rate *
N)`` rows). The ASR is measured on triggered test images of the classes in ``asr_classes`` (all
non-target classes unless stated) classified as ``target_class``.

==============  =====================================================================  ==========================
attack          what is poisoned (defaults)                                            paper
==============  =====================================================================  ==========================
badnets         ``poison_rate=0.1`` of non-target rows: 3x3 checkerboard patch in the    Gu et al. 2017
                bottom-right corner, relabelled to the target (dirty label)
blended         ``0.1`` of non-target rows: :math:`(1-\alpha)x + \alpha P`, ``alpha=0.2``,  Chen et al. 2017
                ``P`` a fixed uniform-noise image (``pattern_seed``), dirty label
sig             ``0.08`` of the set, *target-class rows only* (clean label): horizontal  Barni et al. ICIP 2019
                sinusoid :math:`x + \Delta \sin(2\pi j f / W)`, ``delta=20/255``, ``f=6``
wanet           ``0.1`` of non-target rows warped by a fixed smooth field (``k=4``,      Nguyen & Tran ICLR 2021
                ``s=0.5``) and relabelled; *noise mode*: ``cross_ratio=2`` times as many
                rows warped by a randomly perturbed field keep their labels
tact            ``0.02`` of the set from ``source_classes=(1,)`` patched and relabelled; Tang et al. USENIX Sec 2021
                ``cover_rate=0.02`` from the other non-target classes patched with their
                true labels (source-specific); ASR on source classes only
adap_blend      ``0.003`` payload + ``0.003`` cover (conservatism ratio 0.5): a noise   Qi et al. ICLR 2023
                pattern split in 4x4 pieces, each training row blends a random half of
                the pieces at ``alpha=0.15``; test: all pieces at ``test_alpha=0.2``
adap_patch      ``0.003`` payload + ``0.006`` cover: four 4x4 noise patches at fixed      Qi et al. ICLR 2023
                places; a training row gets a random ``train_patches=2`` of them at
                opacity ``alpha=0.5``; test: all four at opacity 1
label_consist.  ``0.08`` of the set, *target-class rows only*: L-inf PGD (``eps=8/255``,   Turner et al. 2019
                10 steps) against a clean model's loss on the true label, then a 3x3
                checkerboard in all four corners (``amplitude=1``); labels kept
==============  =====================================================================  ==========================

Simplifications (also in each docstring): Blended/Adap-* use uniform-noise patterns instead of the
papers' photographs; WaNet poisons a fixed set of rows (the BackdoorBench data-poisoning form)
instead of re-warping every batch; label-consistent uses a standard (not adversarially trained)
clean model for PGD; Adap-* "conservatism" is expressed as ``cover_rate`` next to ``poison_rate``
(conservatism ratio :math:`\eta = \text{cover} / (\text{payload} + \text{cover})`).
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from poisonjax.core.poisoning import (apply_trigger, blend_trigger, choose_poison_indices, patch_trigger,
                                      random_pattern)
from poisonjax.core.validation import PoisonJaxInputError, check_fraction

ATTACKS = ("badnets", "blended", "sig", "wanet", "tact", "adap_blend", "adap_patch", "label_consistent")


class BackdoorSet(NamedTuple):
    """A poisoned training set and its test-time trigger.

    ``x [N,H,W,C]``, ``y [N]``: the training set handed to the victim; ``poison_mask [N]`` bool: rows
    that carry the payload (relabelled, or clean-label poisons); ``cover_mask [N]`` bool: trigger-
    stamped rows that keep their labels (TaCT, Adap-*, WaNet's noise mode); ``trigger``: pure
    ``x_test -> x_triggered``; ``asr_classes``: classes whose triggered test images count for the ASR
    (``None``: every non-target class); ``name``.
    """

    x: jax.Array
    y: jax.Array
    poison_mask: jax.Array
    cover_mask: jax.Array
    trigger: Callable[[jax.Array], jax.Array]
    target_class: int
    asr_classes: Optional[Tuple[int, ...]]
    name: str


# ----------------------------------------------------------------------------- checks --------

def check_images(name: str, x) -> Tuple[int, int, int, int]:
    """Images must be NHWC float in [0, 1]; returns the shape."""
    shape = tuple(np.shape(x))
    if len(shape) != 4 or shape[-1] not in (1, 3):
        raise PoisonJaxInputError(f"{name} must be NHWC images (N, H, W, C) with C in {{1, 3}}, got shape {shape}")
    a = np.asarray(x)
    if a.dtype.kind not in "f":
        raise PoisonJaxInputError(f"{name} must be float images in [0, 1], got dtype {a.dtype}")
    if not np.all(np.isfinite(a)) or a.min() < 0.0 or a.max() > 1.0:
        raise PoisonJaxInputError(f"{name} must lie in [0, 1] (NHWC float images), got values in "
                                  f"[{np.nanmin(a):.4g}, {np.nanmax(a):.4g}]")
    return shape


def check_attack_inputs(x, y, num_classes: int, target_class: int, poison_rate: float) -> None:
    """Shared checks: NHWC images in [0, 1], labels ``[N]`` in ``[0, C)``, target class in the label
    set, poison rate in [0, 1]."""
    n = check_images("x", x)[0]
    yy = np.asarray(y)
    if yy.shape != (n,):
        raise PoisonJaxInputError(f"y must have shape ({n},) to match x, got {yy.shape}")
    if yy.size and (yy.min() < 0 or yy.max() >= num_classes):
        raise PoisonJaxInputError(f"y must hold labels in [0, {num_classes}), got [{yy.min()}, {yy.max()}]")
    if not (isinstance(target_class, (int, np.integer)) and 0 <= int(target_class) < int(num_classes)):
        raise PoisonJaxInputError(f"target_class must be a label in [0, {num_classes}), got {target_class!r}")
    check_fraction("poison_rate", poison_rate, low_inclusive=True)


def _masks(n: int, idx, cover_idx=None):
    pm = jnp.zeros((n,), bool).at[idx].set(True)
    cm = jnp.zeros((n,), bool)
    if cover_idx is not None:
        cm = cm.at[cover_idx].set(True)
    return pm, cm


def _class_fraction_check(name: str, rate: float, y, classes: Sequence[int], n: int) -> None:
    avail = int(np.isin(np.asarray(y), np.asarray(list(classes))).sum())
    if int(round(rate * n)) > avail:
        raise PoisonJaxInputError(f"{name}={rate} asks for {int(round(rate * n))} rows but classes "
                                  f"{list(classes)} hold only {avail} ({avail / max(n, 1):.4f} of the set)")


def _choose_among(key, y, rate: float, n: int, classes: Sequence[int]) -> jax.Array:
    """``round(rate * n)`` distinct rows uniformly among rows whose label is in ``classes``."""
    elig = jnp.isin(jnp.asarray(y), jnp.asarray(list(classes)))
    k = int(round(rate * n))
    scores = jnp.where(elig, jax.random.uniform(key, (n,)), -1.0)
    return jax.lax.top_k(scores, k)[1].astype(jnp.int32)


# ----------------------------------------------------------------------------- BadNets / Blended

def badnets(key, x, y, *, num_classes: int, target_class: int = 0, poison_rate: float = 0.1,
            trigger_size: int = 3, corner: str = "bottom_right", value: str = "checkerboard") -> BackdoorSet:
    r"""BadNets (Gu et al. 2017): :math:`\tilde x = (1-M)\odot x + M \odot P` with a ``trigger_size``
    square patch (:func:`poisonjax.core.poisoning.patch_trigger`), on ``round(poison_rate * N)``
    non-target rows, relabelled ``target_class``."""
    check_attack_inputs(x, y, num_classes, target_class, poison_rate)
    trig = patch_trigger(np.shape(x)[1:], size=trigger_size, corner=corner, value=value)
    return _dirty_label(key, x, y, poison_rate, target_class, lambda xs, k=None: apply_trigger(xs, trig),
                        "badnets")


def _dirty_label(key, x, y, rate, target, stamp, name, test_stamp=None) -> BackdoorSet:
    x, y = jnp.asarray(x), jnp.asarray(y)
    idx = choose_poison_indices(key, y, rate, exclude_class=target, of="all")
    xp = x.at[idx].set(stamp(x[idx]))
    yp = y.at[idx].set(target)
    pm, cm = _masks(x.shape[0], idx)
    return BackdoorSet(xp, yp, pm, cm, test_stamp or stamp, int(target), None, name)


def blended(key, x, y, *, num_classes: int, target_class: int = 0, poison_rate: float = 0.1,
            alpha: float = 0.2, pattern_seed: int = 1234) -> BackdoorSet:
    r"""Blended (Chen et al. 2017): :math:`\tilde x = (1-\alpha)x + \alpha P` with a fixed uniform-noise
    image ``P`` (from ``pattern_seed``; the paper also uses a photograph), dirty label."""
    check_attack_inputs(x, y, num_classes, target_class, poison_rate)
    alpha = check_fraction("alpha", alpha)
    trig = blend_trigger(random_pattern(jax.random.PRNGKey(pattern_seed), np.shape(x)[1:]), alpha)
    return _dirty_label(key, x, y, poison_rate, target_class, lambda xs: apply_trigger(xs, trig), "blended")


# ----------------------------------------------------------------------------- SIG -------------

def sig_signal(shape, delta: float = 20 / 255, freq: float = 6.0) -> jax.Array:
    r"""SIG's horizontal ramp signal :math:`v_{ij} = \Delta \sin(2\pi j f / W)`, shape ``[H, W, 1]``."""
    h, w = shape[0], shape[1]
    j = jnp.arange(w, dtype=jnp.float32)
    return jnp.broadcast_to(delta * jnp.sin(2 * jnp.pi * j * freq / w)[None, :, None], (h, w, 1))


def sig(key, x, y, *, num_classes: int, target_class: int = 0, poison_rate: float = 0.08,
        delta: float = 20 / 255, freq: float = 6.0, test_delta: Optional[float] = None) -> BackdoorSet:
    r"""SIG (Barni et al., ICIP 2019), clean label: ``round(poison_rate * N)`` *target-class* rows get
    :math:`\mathrm{clip}_{[0,1]}(x + v)` with :func:`sig_signal`; labels unchanged. The test trigger
    adds the same signal with amplitude ``test_delta`` (default ``delta``)."""
    check_attack_inputs(x, y, num_classes, target_class, poison_rate)
    n = np.shape(x)[0]
    _class_fraction_check("poison_rate", poison_rate, y, [target_class], n)
    v = sig_signal(np.shape(x)[1:], delta, freq)
    vt = sig_signal(np.shape(x)[1:], delta if test_delta is None else test_delta, freq)
    x, y = jnp.asarray(x), jnp.asarray(y)
    idx = _choose_among(key, y, poison_rate, n, [target_class])
    xp = x.at[idx].set(jnp.clip(x[idx] + v, 0, 1))
    pm, cm = _masks(n, idx)
    return BackdoorSet(xp, y, pm, cm, lambda xs: jnp.clip(xs + vt, 0, 1), int(target_class), None, "sig")


# ----------------------------------------------------------------------------- WaNet -----------

def wanet_noise_grid(key, h: int, w: int, k: int = 4) -> jax.Array:
    r"""WaNet's warping field: uniform :math:`[-1,1]^{k\times k\times 2}` control points normalised by
    their mean absolute value, upsampled bicubically to ``[H, W, 2]``."""
    ins = jax.random.uniform(key, (k, k, 2)) * 2 - 1
    ins = ins / jnp.mean(jnp.abs(ins))
    return jax.image.resize(ins, (h, w, 2), "cubic")


@jax.jit
def warp_images(x: jax.Array, noise_grid: jax.Array, s: float = 0.5, grid_rescale: float = 1.0,
                extra: Optional[jax.Array] = None) -> jax.Array:
    r"""Warp ``x [B, H, W, C]`` by the sampling grid :math:`G = \mathrm{clip}(( I + s\,\Phi / H)\, r)`
    (``I`` the identity grid in [-1, 1], ``Φ`` the noise grid, ``r`` ``grid_rescale``), optionally
    plus a per-image random offset ``extra [B, H, W, 2]`` (noise mode); bilinear sampling with aligned
    corners and border clamping (``grid_sample`` semantics)."""
    b, h, w, c = x.shape
    ii, jj = jnp.meshgrid(jnp.linspace(-1, 1, h), jnp.linspace(-1, 1, w), indexing="ij")
    ident = jnp.stack([jj, ii], -1)                                    # (x, y) order like grid_sample
    grid = jnp.clip((ident + s * noise_grid / h) * grid_rescale, -1, 1)
    grid = jnp.broadcast_to(grid, (b, h, w, 2))
    if extra is not None:
        grid = jnp.clip(grid + extra, -1, 1)
    cols = (grid[..., 0] + 1) / 2 * (w - 1)
    rows = (grid[..., 1] + 1) / 2 * (h - 1)

    def one(img, r, cc):
        return jnp.stack([jax.scipy.ndimage.map_coordinates(img[..., ch], [r, cc], order=1, mode="nearest")
                          for ch in range(c)], -1)
    return jax.vmap(one)(x, rows, cols)


def wanet(key, x, y, *, num_classes: int, target_class: int = 0, poison_rate: float = 0.1, k: int = 4,
          s: float = 0.5, grid_rescale: float = 1.0, cross_ratio: float = 2.0, grid_seed: int = 4321) -> BackdoorSet:
    r"""WaNet (Nguyen & Tran, ICLR 2021), data-poisoning form: ``round(poison_rate * N)`` non-target
    rows are warped by the fixed field (:func:`wanet_noise_grid`, seed ``grid_seed``) and relabelled;
    in *noise mode* ``round(cross_ratio * poison_rate * N)`` further rows are warped by the field plus
    a random per-image offset :math:`U[-1,1]^{H\times W\times 2}/H` and keep their labels (the paper's
    "noise" samples that force the model to learn the exact warp). ``cross_ratio=0`` disables it."""
    check_attack_inputs(x, y, num_classes, target_class, poison_rate)
    if not (0 <= cross_ratio and (1 + cross_ratio) * poison_rate <= 1):
        raise PoisonJaxInputError(f"cross_ratio must be >= 0 with (1 + cross_ratio) * poison_rate <= 1, got {cross_ratio}")
    n, h, w, _ = np.shape(x)
    if not 2 <= int(k) <= min(h, w):
        raise PoisonJaxInputError(f"k must be in [2, {min(h, w)}] (grid no larger than the image), got {k}")
    grid = wanet_noise_grid(jax.random.PRNGKey(grid_seed), h, w, int(k))
    stamp = lambda xs: warp_images(xs, grid, s, grid_rescale)
    x, y = jnp.asarray(x), jnp.asarray(y)
    k1, k2, k3 = jax.random.split(key, 3)
    idx = choose_poison_indices(k1, y, poison_rate, exclude_class=target_class, of="all")
    xp = x.at[idx].set(stamp(x[idx]))
    yp = y.at[idx].set(target_class)
    n_cross = int(round(cross_ratio * poison_rate * n))
    cover = None
    if n_cross > 0:
        free = jnp.ones((n,), bool).at[idx].set(False)
        cover = jax.lax.top_k(jnp.where(free, jax.random.uniform(k2, (n,)), -1.0), n_cross)[1]
        extra = (jax.random.uniform(k3, (n_cross, h, w, 2)) * 2 - 1) / h
        xp = xp.at[cover].set(warp_images(x[cover], grid, s, grid_rescale, extra))
    pm, cm = _masks(n, idx, cover)
    return BackdoorSet(xp, yp, pm, cm, stamp, int(target_class), None, "wanet")


# ----------------------------------------------------------------------------- TaCT ------------

def tact(key, x, y, *, num_classes: int, target_class: int = 0, poison_rate: float = 0.02,
         cover_rate: float = 0.02, source_classes: Sequence[int] = (1,), cover_classes: Optional[Sequence[int]] = None,
         trigger_size: int = 4) -> BackdoorSet:
    r"""TaCT, source-specific backdoor (Tang et al., USENIX Security 2021): ``round(poison_rate * N)``
    rows of ``source_classes`` get the patch trigger and the target label; ``round(cover_rate * N)``
    rows of ``cover_classes`` (default: every class that is neither source nor target) get the same
    trigger and *keep* their labels, so the trigger only flips source-class inputs. The ASR is
    counted on triggered test images of the source classes (``asr_classes``)."""
    check_attack_inputs(x, y, num_classes, target_class, poison_rate)
    check_fraction("cover_rate", cover_rate, low_inclusive=True)
    src = tuple(int(c) for c in source_classes)
    if not src or any(not 0 <= c < num_classes or c == target_class for c in src):
        raise PoisonJaxInputError(f"source_classes must be non-empty labels in [0, {num_classes}) other than "
                                  f"target_class={target_class}, got {list(source_classes)}")
    cov = tuple(c for c in range(num_classes) if c not in src and c != target_class) if cover_classes is None \
        else tuple(int(c) for c in cover_classes)
    n = np.shape(x)[0]
    _class_fraction_check("poison_rate", poison_rate, y, src, n)
    _class_fraction_check("cover_rate", cover_rate, y, cov, n)
    trig = patch_trigger(np.shape(x)[1:], size=trigger_size, value="white", corner="bottom_right")
    stamp = lambda xs: apply_trigger(xs, trig)
    x, y = jnp.asarray(x), jnp.asarray(y)
    k1, k2 = jax.random.split(key)
    idx = _choose_among(k1, y, poison_rate, n, src)
    cidx = _choose_among(k2, y, cover_rate, n, cov)
    xp = x.at[idx].set(stamp(x[idx])).at[cidx].set(stamp(x[cidx]))
    yp = y.at[idx].set(target_class)
    pm, cm = _masks(n, idx, cidx)
    return BackdoorSet(xp, yp, pm, cm, stamp, int(target_class), src, "tact")


# ----------------------------------------------------------------------------- Adaptive --------

def _planted(key, x, y, rate, cover_rate, target, n, stamp_train, stamp_test, name) -> BackdoorSet:
    x, y = jnp.asarray(x), jnp.asarray(y)
    k1, k2, k3, k4 = jax.random.split(key, 4)
    idx = choose_poison_indices(k1, y, rate, exclude_class=target, of="all")
    free = jnp.ones((n,), bool).at[idx].set(False)
    nc = int(round(cover_rate * n))
    cidx = jax.lax.top_k(jnp.where(free, jax.random.uniform(k2, (n,)), -1.0), nc)[1]
    xp = x.at[idx].set(stamp_train(k3, x[idx])).at[cidx].set(stamp_train(k4, x[cidx]))
    yp = y.at[idx].set(target)
    pm, cm = _masks(n, idx, cidx)
    return BackdoorSet(xp, yp, pm, cm, stamp_test, int(target), None, name)


def adap_blend(key, x, y, *, num_classes: int, target_class: int = 0, poison_rate: float = 0.003,
               cover_rate: float = 0.003, alpha: float = 0.15, test_alpha: float = 0.2, pieces: int = 16,
               piece_fraction: float = 0.5, pattern_seed: int = 1234) -> BackdoorSet:
    r"""Adap-Blend (Qi et al., ICLR 2023, "Revisiting the assumption of latent separability"):
    payload rows (``poison_rate``, non-target, relabelled) and cover rows (``cover_rate``, any class,
    labels kept) are blended with a noise pattern split into ``pieces`` (a square grid); each row uses
    a random ``piece_fraction`` of the pieces at opacity ``alpha``. At test time all pieces are
    blended at ``test_alpha``. Cover rows and partial triggers keep poisoned and clean latent
    representations close (the point of the attack: it evades latent-separation defenses)."""
    check_attack_inputs(x, y, num_classes, target_class, poison_rate)
    check_fraction("cover_rate", cover_rate, low_inclusive=True)
    n, h, w, c = np.shape(x)
    g = int(round(np.sqrt(pieces)))
    if g * g != pieces or g > min(h, w):
        raise PoisonJaxInputError(f"pieces must be a square number with sqrt(pieces) <= {min(h, w)}, got {pieces}")
    pat = random_pattern(jax.random.PRNGKey(pattern_seed), (h, w, c))
    piece_id = (jnp.arange(h)[:, None] * g // h) * g + (jnp.arange(w)[None, :] * g // w)     # [H, W]
    n_on = max(1, int(round(piece_fraction * pieces)))

    def stamp_train(k, xs):
        sc = jax.random.uniform(k, (xs.shape[0], pieces))
        on = sc >= jnp.sort(sc, axis=1)[:, pieces - n_on][:, None]                      # [B, pieces]
        m = on[:, piece_id][..., None].astype(xs.dtype) * alpha
        return (1 - m) * xs + m * pat

    stamp_test = lambda xs: (1 - test_alpha) * xs + test_alpha * pat
    return _planted(key, x, y, poison_rate, cover_rate, target_class, n, stamp_train, stamp_test, "adap_blend")


def adap_patch(key, x, y, *, num_classes: int, target_class: int = 0, poison_rate: float = 0.003,
               cover_rate: float = 0.006, patch_size: int = 4, n_patches: int = 4, train_patches: int = 2,
               alpha: float = 0.5, test_alpha: float = 1.0, pattern_seed: int = 99) -> BackdoorSet:
    r"""Adap-Patch (Qi et al., ICLR 2023): ``n_patches`` small noise patches at fixed places (the
    corners, then the edge mid-points); each payload / cover row gets a random ``train_patches`` of
    them at opacity ``alpha``; the test trigger stamps all of them at ``test_alpha``. Payload rows
    (``poison_rate``) are relabelled, cover rows (``cover_rate``) keep their labels."""
    check_attack_inputs(x, y, num_classes, target_class, poison_rate)
    check_fraction("cover_rate", cover_rate, low_inclusive=True)
    n, h, w, c = np.shape(x)
    if not 1 <= patch_size <= min(h, w) // 2:
        raise PoisonJaxInputError(f"patch_size must be in [1, {min(h, w) // 2}] for {h}x{w} images, got {patch_size}")
    if not 1 <= train_patches <= n_patches <= 8:
        raise PoisonJaxInputError(f"need 1 <= train_patches <= n_patches <= 8, got {train_patches}, {n_patches}")
    p = patch_size
    spots = [(0, 0), (0, w - p), (h - p, 0), (h - p, w - p), (0, (w - p) // 2), (h - p, (w - p) // 2),
             ((h - p) // 2, 0), ((h - p) // 2, w - p)][:n_patches]
    masks = np.zeros((n_patches, h, w, 1), np.float32)
    for i, (r, cc) in enumerate(spots):
        masks[i, r:r + p, cc:cc + p] = 1.0
    masks = jnp.asarray(masks)
    pat = random_pattern(jax.random.PRNGKey(pattern_seed), (h, w, c))

    def stamp_train(k, xs):
        sc = jax.random.uniform(k, (xs.shape[0], n_patches))
        on = (sc >= jnp.sort(sc, axis=1)[:, n_patches - train_patches][:, None]).astype(xs.dtype)
        m = jnp.einsum("bp,phwc->bhwc", on, masks) * alpha
        return (1 - m) * xs + m * pat

    mt = masks.sum(0) * test_alpha
    stamp_test = lambda xs: (1 - mt) * xs + mt * pat
    return _planted(key, x, y, poison_rate, cover_rate, target_class, n, stamp_train, stamp_test, "adap_patch")


# ----------------------------------------------------------------------------- label-consistent

def four_corner_trigger(shape, size: int = 3, amplitude: float = 1.0):
    """Turner et al.'s trigger: a ``size x size`` checkerboard in each of the four corners; returns
    ``(mask [H, W, 1] with values amplitude, pattern [H, W, C])``."""
    h, w, c = shape
    if not 1 <= size <= min(h, w) // 2:
        raise PoisonJaxInputError(f"trigger_size must be in [1, {min(h, w) // 2}] for {h}x{w} images, got {size}")
    m = np.zeros((h, w, 1), np.float32)
    for r0 in (0, h - size):
        for c0 in (0, w - size):
            m[r0:r0 + size, c0:c0 + size] = 1.0
    ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    pat = np.repeat(((ii + jj) % 2 == 0).astype(np.float32)[..., None], c, -1)
    return jnp.asarray(m * amplitude), jnp.asarray(pat)


def pgd_untargeted(logits_fn: Callable[[jax.Array], jax.Array], x: jax.Array, y: jax.Array, eps: float,
                   steps: int = 10, step_size: Optional[float] = None, key: Optional[jax.Array] = None) -> jax.Array:
    r"""L-inf PGD (Madry et al. 2018) maximising :math:`\mathrm{CE}(f(x+\delta), y)`,
    :math:`\|\delta\|_\infty \le \epsilon`, :math:`x+\delta \in [0,1]`, random start, ``steps`` signed-
    gradient steps of ``step_size`` (default ``2.5 eps / steps``)."""
    import optax
    a = 2.5 * eps / steps if step_size is None else step_size
    key = jax.random.PRNGKey(0) if key is None else key
    d0 = jax.random.uniform(key, x.shape, minval=-eps, maxval=eps)

    def loss(d):
        return optax.softmax_cross_entropy_with_integer_labels(logits_fn(jnp.clip(x + d, 0, 1)), y).sum()

    def body(d, _):
        g = jax.grad(loss)(d)
        return jnp.clip(d + a * jnp.sign(g), -eps, eps), None

    d, _ = jax.lax.scan(body, d0, None, length=steps)
    return jnp.clip(x + d, 0, 1)


def label_consistent(key, x, y, *, num_classes: int, logits_fn: Callable[[jax.Array], jax.Array],
                     target_class: int = 0, poison_rate: float = 0.08, eps: float = 8 / 255, steps: int = 10,
                     trigger_size: int = 3, amplitude: float = 1.0, test_amplitude: float = 1.0,
                     batch_size: int = 256) -> BackdoorSet:
    r"""Label-consistent backdoor (Turner, Tsipras & Madry 2019): ``round(poison_rate * N)``
    target-class rows are made hard to classify by L-inf PGD (:func:`pgd_untargeted`, radius ``eps``)
    against ``logits_fn`` (a clean model), then stamped with :func:`four_corner_trigger` at
    ``amplitude``; labels are kept, so the model leans on the trigger to fit them. Test trigger: the
    same corners at ``test_amplitude``. Simplified: the paper's PGD model is adversarially trained;
    here any clean model is used."""
    check_attack_inputs(x, y, num_classes, target_class, poison_rate)
    check_fraction("eps", eps, low_inclusive=True)
    n = np.shape(x)[0]
    _class_fraction_check("poison_rate", poison_rate, y, [target_class], n)
    m, pat = four_corner_trigger(np.shape(x)[1:], trigger_size, amplitude)
    mt, _ = four_corner_trigger(np.shape(x)[1:], trigger_size, test_amplitude)
    x, y = jnp.asarray(x), jnp.asarray(y)
    k1, k2 = jax.random.split(key)
    idx = _choose_among(k1, y, poison_rate, n, [target_class])
    xs, ys = x[idx], y[idx]
    outs = [pgd_untargeted(logits_fn, xs[i:i + batch_size], ys[i:i + batch_size], eps, steps,
                           key=jax.random.fold_in(k2, i)) for i in range(0, xs.shape[0], batch_size)]
    adv = jnp.concatenate(outs, 0) if outs else xs
    xp = x.at[idx].set((1 - m) * adv + m * pat)
    pm, cm = _masks(n, idx)
    return BackdoorSet(xp, y, pm, cm, lambda t: (1 - mt) * t + mt * pat, int(target_class), None, "label_consistent")


ATTACK_FNS = {"badnets": badnets, "blended": blended, "sig": sig, "wanet": wanet, "tact": tact,
              "adap_blend": adap_blend, "adap_patch": adap_patch, "label_consistent": label_consistent}


def poison(name: str, key, x, y, *, num_classes: int, **kw) -> BackdoorSet:
    """Run attack ``name`` (one of :data:`ATTACKS`) with keyword arguments ``kw``."""
    if name not in ATTACK_FNS:
        raise PoisonJaxInputError(f"unknown attack {name!r}; expected one of {list(ATTACKS)}")
    return ATTACK_FNS[name](key, x, y, num_classes=num_classes, **kw)


def asr(pred_triggered: jax.Array, y_true: jax.Array, bd: BackdoorSet) -> jax.Array:
    r"""Attack success rate of predictions on triggered test images ``pred [..., N]``:
    :math:`|\{i: y_i \in S, y_i \ne t, \hat y_i = t\}| / |\{i: y_i \in S, y_i \ne t\}|` with
    ``S = bd.asr_classes`` (every class if ``None``)."""
    y_true = jnp.asarray(y_true)
    valid = y_true != bd.target_class
    if bd.asr_classes is not None:
        valid = valid & jnp.isin(y_true, jnp.asarray(bd.asr_classes))
    valid = valid.astype(jnp.float32)
    return jnp.sum((pred_triggered == bd.target_class) * valid, axis=-1) / jnp.maximum(valid.sum(), 1)
