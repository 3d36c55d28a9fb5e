r"""Confusion Training (Qi, Xie, Wang, Mahloujifar & Mittal, "Towards a proactive ML approach for
detecting backdoor poison samples", USENIX Security 2023), a poison-sample detector.

Idea: the defender *poisons the poisoned set again*. A small clean *base* set with random labels
(the *confusion batch*, every label different from the true one) is mixed into training; it
destroys the benign correlation between image content and label, so a model trained on the mix
(the *confused model*) can no longer fit ordinary clean samples, but it keeps fitting the
backdoor poison samples, whose trigger -> target correlation the confusion batch does not
touch. Poison samples are then the rows the confused model still fits.

Algorithm (rounds :math:`r = 0, \dots, R`; ``distillation_ratios`` :math:`\rho_0 > \dots > \rho_{R-1}`;
:math:`D_0` = the whole inspected set of :math:`N` rows):

1. *Pretrain* a base model on :math:`D_r` (round 0: the given victim, optionally trained further
   on the whole set; last round: on :math:`D_R` plus the clean base set), from the previous base.
2. *Confusion training* from the base: minimise
   :math:`\frac{1}{\lambda}\mathcal{L}_{D_r} + \frac{\lambda-1}{\lambda}\mathcal{L}_{\text{conf}}`
   with :math:`\mathcal{L}_{D_r}` the cross-entropy on :math:`D_r` (rows weighted by
   :math:`1/\sqrt{\text{freq}(y)+10^{-3}}`, the class-frequency reweighting of the reference code)
   and :math:`\mathcal{L}_{\text{conf}}` the cross-entropy of the base set under random wrong labels
   (``lam`` :math:`=\lambda`, the confusion factor).
3. *Distill*: loss :math:`\ell_i` of the confused model on every row of the inspected set;
   :math:`D_{r+1}` = the :math:`\lceil \rho_r N\rceil` lowest-loss rows, topped up so that each class
   keeps at least 2% of its rows (as the reference code does).

Output: scores :math:`s_i = -\ell_i` of the last confused model (higher = more suspicious); flags
:math:`p_\theta(y_i \mid x_i) >` ``confidence`` (the confused model is consistent with the label).

Simplified versus the paper / the reference code (``vtu81/backdoor-toolbox``, ``Unispac/Fight-Poison-With-Poison``):
(a) the confusion labels are drawn once per copy of the base set (``confusion_copies`` copies,
each with its own random wrong labels) instead of afresh at every step -- with several copies
the model cannot memorise them either; (b) confusion and inspected rows are mixed in one shuffled
set with per-row weights instead of a fixed confusion batch plus an inspected batch every
``batch_factor`` steps; training length is in epochs of that mix instead of a fixed number of
iterations; (c) the final flags are the label-consistent rows of the confused model over *all*
classes -- the paper's per-class likelihood-ratio test (2-D PCA, two Gaussians) that decides which
classes to cleanse is not implemented; (d) no data augmentation and far fewer epochs by default.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from poisonjax.core.validation import PoisonJaxInputError, check_fraction, check_positive_int
from poisonjax.vision.backdoor.detectors import DetectionReport


def _distill(loss: np.ndarray, y: np.ndarray, ratio: float, num_classes: int, min_class_frac: float = 0.02):
    """Indices of the ``ceil(ratio N)`` lowest-loss rows plus, per class, its lowest-loss rows up to
    ``min_class_frac`` of the class (sorted)."""
    n = len(loss)
    order = np.argsort(loss, kind="stable")
    keep = set(order[: int(np.ceil(ratio * n))].tolist())
    for c in range(num_classes):
        rows = order[y[order] == c]
        need = len(rows) // int(round(1 / min_class_frac))
        keep.update(rows[:need].tolist())
    return np.array(sorted(keep), dtype=np.int64)


def confusion_training(module, variables, x, y, x_clean, y_clean, key: jax.Array, *, num_classes: int,
                       distillation_ratios: Sequence[float] = (0.5, 0.2, 0.04, 0.02, 0.01),
                       lam: float = 10.0, pretrain_epochs: int = 2, initial_pretrain_epochs: int = 0,
                       confusion_epochs: int = 4, confusion_copies: int = 8, batch_size: int = 64,
                       learning_rate: float = 0.01, confidence: float = 0.5) -> DetectionReport:
    r"""Confusion Training detector (Qi et al. 2023); math and simplifications in the module docstring.

    Args:
      module, variables: the victim (flax module) and its variables trained on the inspected set
        (the base model of round 0; ``initial_pretrain_epochs > 0`` trains it further on ``x, y``).
      x: ``[N, H, W, C]`` inspected (poisoned) training images in [0, 1]; y: ``[N]`` their labels.
      x_clean, y_clean: ``[M, H, W, C]``, ``[M]`` the defender's small clean base set.
      key: PRNG key; num_classes: number of labels.
      distillation_ratios: :math:`\rho_r`, decreasing fractions in (0, 1]; ``R = len`` rounds of
        distillation, ``R + 1`` confused models in all.
      lam: confusion factor :math:`\lambda > 1`.
      pretrain_epochs, confusion_epochs: epochs of the base-model and confusion training per round.
      confusion_copies: copies of the base set, each with its own random wrong labels.
      confidence: a row is flagged when the confused model gives its label probability above this.

    Returns:
      ``DetectionReport(scores [N] = -loss, flags [N], info)`` with ``info["distilled"]`` (the
      rows of the last distilled set) and ``info["sizes"]`` (distilled-set size per round).
    """
    from poisonjax.vision.backdoor.attacks import check_images
    from poisonjax.vision.backdoor.victim import fit, make_optimizer, predict
    check_images("x", x)
    check_images("x_clean", x_clean)
    yy, yc = np.asarray(y), np.asarray(y_clean)
    n, m = int(np.shape(x)[0]), int(np.shape(x_clean)[0])
    if yy.shape != (n,) or yc.shape != (m,):
        raise PoisonJaxInputError(f"y must have shape ({n},) and y_clean ({m},), got {yy.shape} and {yc.shape}")
    for nm, lab in (("y", yy), ("y_clean", yc)):
        if lab.size and (lab.min() < 0 or lab.max() >= num_classes):
            raise PoisonJaxInputError(f"{nm} must hold labels in [0, {num_classes}), got [{lab.min()}, {lab.max()}]")
    if num_classes < 2:
        raise PoisonJaxInputError(f"num_classes must be >= 2 (the confusion labels must differ from the true one), got {num_classes}")
    ratios = [check_fraction("distillation_ratios entry", r) for r in distillation_ratios]
    if any(b >= a for a, b in zip(ratios, ratios[1:])):
        raise PoisonJaxInputError(f"distillation_ratios must decrease, got {list(distillation_ratios)}")
    if not lam > 1:
        raise PoisonJaxInputError(f"lam (confusion factor) must be > 1, got {lam}")
    confidence = check_fraction("confidence", confidence)
    confusion_copies = check_positive_int("confusion_copies", confusion_copies)
    confusion_epochs = check_positive_int("confusion_epochs", confusion_epochs)
    pretrain_epochs = check_positive_int("pretrain_epochs", pretrain_epochs, minimum=0)
    initial_pretrain_epochs = check_positive_int("initial_pretrain_epochs", initial_pretrain_epochs, minimum=0)

    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(yy, jnp.int32)
    x_clean = jnp.asarray(x_clean, jnp.float32)
    opt = make_optimizer(learning_rate)
    k_lab, key = jax.random.split(key)
    # random wrong labels for confusion_copies copies of the base set: y + U{1..C-1} mod C
    shift = jax.random.randint(k_lab, (confusion_copies, m), 1, num_classes)
    xc_rep = jnp.tile(x_clean, (confusion_copies, 1, 1, 1))
    yc_conf = ((jnp.asarray(yc)[None] + shift) % num_classes).reshape(-1).astype(jnp.int32)

    base = variables
    distilled = np.arange(n)
    sizes, loss = [], None
    for r in range(len(ratios) + 1):
        last = r == len(ratios)
        key, k1, k2 = jax.random.split(key, 3)
        sizes.append(len(distilled))
        xd, yd = x[distilled], y[distilled]
        ep = initial_pretrain_epochs if r == 0 else pretrain_epochs
        if ep > 0:
            xp, yp = (jnp.concatenate([xd, x_clean]), jnp.concatenate([yd, jnp.asarray(yc, jnp.int32)])) if last else (xd, yd)
            base = fit(module, base, xp, yp, k1, epochs=ep, batch_size=batch_size, optimizer=opt)
        # confusion training: weights give (1/lam) L_D + ((lam-1)/lam) L_conf in expectation
        nd, nc = len(distilled), int(yc_conf.shape[0])
        freq = np.bincount(np.asarray(yd), minlength=num_classes) / nd
        wcls = 1.0 if last else 1.0 / np.sqrt(freq[np.asarray(yd)] + 1e-3)
        wd = np.ones(nd) * wcls
        wd = wd / wd.mean() * (nd + nc) / (nd * lam)
        wc = np.full(nc, (nd + nc) * (lam - 1) / (nc * lam))
        confused = fit(module, base, jnp.concatenate([xd, xc_rep]), jnp.concatenate([yd, yc_conf]), k2,
                       epochs=confusion_epochs, batch_size=batch_size, optimizer=opt,
                       sign=jnp.asarray(np.concatenate([wd, wc]), jnp.float32))
        logits = predict(module, confused, x)
        loss = np.asarray(optax.softmax_cross_entropy_with_integer_labels(logits, y))
        if not last:
            distilled = _distill(loss, yy, ratios[r], num_classes)
    p_label = np.exp(-loss)                                      # softmax probability of the label
    return DetectionReport(jnp.asarray(-loss), jnp.asarray(p_label > confidence),
                           {"distilled": distilled, "sizes": sizes, "variables": confused})
