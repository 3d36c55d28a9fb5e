r"""T-Core stage 1: seed sifting and seed expansion (pure functions of features and labels).

**Topological-invariance sifting** (:func:`sift_seeds`). For every class :math:`c` and each of three
depths :math:`d` (the pooled outputs of the encoder's three deepest stages,
:func:`poisonjax.vision.tcore.common.stage_features`), the class's features are L2-normalised and
clustered by DBSCAN (scikit-learn, on the host; the clustering is a data-dependent graph search, a
poor fit for static-shape JAX). DBSCAN's radius is chosen per (class, depth) by the k-distance rule:
:math:`\varepsilon = \mathrm{quantile}_{q}\{\,\mathrm{dist}(z_i, \mathrm{NN}_{k}(z_i))\,\}` with
``k = min_samples - 1`` neighbours (sklearn counts the point itself in ``min_samples``), ``min_samples = 5``
and ``q = eps_quantile = 0.5`` (the median: about half of the class are core points). The class's
candidate seeds are the samples in the *largest* cluster at every depth (intersection: a sample whose
neighbourhood is the class's bulk at all depths -- "topologically invariant"); an empty intersection
falls back to the largest cluster of the deepest layer, then to the whole class.

Among the candidates, the top ``seed_fraction`` (1%) of the class's size (at least one sample) by
**kNN label consistency** :math:`\kappa_i = \frac1k |\{j \in \mathrm{kNN}_k(i): y_j = y_i\}|`
(cosine similarity on the deepest features, over the whole downstream set, ``k = 10``; ties broken by
cosine similarity to the candidates' mean) are the seeds. Poisoned dirty-label samples keep the
neighbourhood of their true class, so their :math:`\kappa` with the target label is low.

**Seed expansion by confusion training** (:func:`expand_seeds`; the objective of Qi et al., USENIX
Security 2023, "Towards a proactive ML approach for detecting backdoor poison samples"). A linear
head on the concatenated, standardised three-depth features is trained by full-batch Adam on

.. math:: \mathcal L(W) = \frac1N \sum_{i=1}^N \mathrm{CE}(W z_i, y_i)
          + \lambda\, \frac1{|S|} \sum_{s \in S} \mathrm{CE}(W z_s, r_s), \qquad r_s \sim U\{0..C-1\}

with fresh random labels :math:`r_s` for the seeds :math:`S` at every step (``confusion_weight``
:math:`\lambda = 1`, ``confusion_steps = 200``, learning rate ``1e-2``). The random labels on clean
seeds destroy the fit of *semantic* features, while the backdoor correlation (trigger :math:`\to`
target), absent from the clean seeds, stays fitted; so after training, poisoned samples have a low loss
on their given label and clean ones a high loss. Each round adds the ``growth`` (5%) of the whole set
with the *highest* loss among the non-seeds; ``rounds`` rounds (default 2).

Simplification: the confusion model is a linear head on frozen multi-depth features (Qi et al.
confusion-train the whole network), which keeps the stage cheap on a CPU.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from poisonjax.core.training import feature_standardization
from poisonjax.core.validation import PoisonJaxInputError, check_fraction, check_positive_int
from poisonjax.vision.tcore.common import check_labels


def _l2n(f):
    f = np.asarray(f, np.float64)
    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


def kdistance_eps(f: np.ndarray, min_samples: int = 5, eps_quantile: float = 0.5) -> float:
    r"""DBSCAN radius by the k-distance rule: the ``eps_quantile`` quantile over points of the distance
    to their ``(min_samples - 1)``-th nearest other point (``f [n, d]``, host)."""
    n = f.shape[0]
    k = int(min(max(min_samples - 1, 1), n - 1))
    if k < 1:
        return 1.0
    d2 = np.maximum((f ** 2).sum(1)[:, None] + (f ** 2).sum(1)[None] - 2 * f @ f.T, 0.0)
    np.fill_diagonal(d2, np.inf)
    kd = np.sqrt(np.partition(d2, k - 1, axis=1)[:, k - 1])
    return float(max(np.quantile(kd, eps_quantile), 1e-9))


def dbscan_largest_cluster(f, min_samples: int = 5, eps_quantile: float = 0.5) -> np.ndarray:
    """Boolean ``[n]`` membership of DBSCAN's largest cluster on L2-normalised ``f [n, d]`` (noise
    excluded; all False when DBSCAN finds no cluster). sklearn's ``DBSCAN`` with the k-distance radius."""
    from sklearn.cluster import DBSCAN
    f = _l2n(f)
    if f.shape[0] < 2:
        return np.ones(f.shape[0], bool)
    eps = kdistance_eps(f, min_samples, eps_quantile)
    lab = DBSCAN(eps=eps, min_samples=int(min(min_samples, f.shape[0]))).fit(f).labels_
    if (lab >= 0).sum() == 0:
        return np.zeros(f.shape[0], bool)
    big = np.bincount(lab[lab >= 0]).argmax()
    return lab == big


def knn_label_consistency(feats, y, k: int = 10, chunk: int = 1000) -> jax.Array:
    r""":math:`\kappa_i` = fraction of the ``k`` nearest neighbours of row ``i`` (cosine similarity,
    self excluded) that carry label ``y_i``; ``feats [N, D]``, ``y [N]`` -> ``[N]`` (jitted, ``chunk``
    rows at a time)."""
    f = jnp.asarray(feats, jnp.float32)
    n = f.shape[0]
    return _knn_jit(f, jnp.asarray(y), int(min(k, n - 1)), int(min(chunk, n)))


def _knn_impl(f, y, k, chunk):
    f = f / jnp.maximum(jnp.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    n = f.shape[0]
    idx = jnp.arange(n)
    pad = (-n) % chunk
    ip = jnp.concatenate([idx, jnp.zeros((pad,), idx.dtype)]).reshape(-1, chunk)

    def one(rows):
        s = f[rows] @ f.T
        s = jnp.where(rows[:, None] == idx[None], -jnp.inf, s)
        _, nb = jax.lax.top_k(s, k)
        return (y[nb] == y[rows][:, None]).mean(1)
    return jax.lax.map(one, ip).reshape(-1)[:n]


_knn_jit = jax.jit(_knn_impl, static_argnums=(2, 3))


def sift_seeds(stage_feats: Sequence, y, num_classes: int, *, seed_fraction: float = 0.01, min_samples: int = 5,
               eps_quantile: float = 0.5, knn_k: int = 10) -> Tuple[np.ndarray, Dict]:
    r"""Stage-1 seeds (see the module docstring): boolean ``[N]`` mask and an info dict
    (``per_class_candidates``, ``per_class_seeds``).

    Args:
      stage_feats: list of ``[N, d_i]`` features at the depths to intersect (three in T-Core).
      y: ``[N]`` labels in ``[0, num_classes)``, every class non-empty.
      seed_fraction: seeds per class as a fraction of the class size, in (0, 1] (T-Core: 1%).
    """
    check_fraction("seed_fraction", seed_fraction)
    check_fraction("eps_quantile", eps_quantile)
    check_positive_int("min_samples", min_samples)
    y = np.asarray(y)
    check_labels(y, num_classes)
    if not stage_feats:
        raise PoisonJaxInputError("stage_feats must hold at least one [N, d] feature array")
    feats = [np.asarray(f) for f in stage_feats]
    kappa = np.asarray(knn_label_consistency(feats[-1], y, knn_k))
    deep = _l2n(feats[-1])
    seeds = np.zeros(len(y), bool)
    cands, per_seed = [], []
    for c in range(num_classes):
        rows = np.flatnonzero(y == c)
        inter = np.ones(len(rows), bool)
        last = None
        for f in feats:
            last = dbscan_largest_cluster(f[rows], min_samples, eps_quantile)
            inter &= last
        cand = inter if inter.any() else (last if last.any() else np.ones(len(rows), bool))
        cr = rows[cand]
        n_seed = int(min(max(1, round(seed_fraction * len(rows))), len(cr)))
        centre = deep[cr].mean(0)
        order = np.lexsort((-(deep[cr] @ centre), -kappa[cr]))        # kappa desc, then closeness desc
        seeds[cr[order[:n_seed]]] = True
        cands.append(int(cand.sum()))
        per_seed.append(n_seed)
    return seeds, {"per_class_candidates": cands, "per_class_seeds": per_seed}


def confusion_losses(feats, y, seed_mask, key, num_classes: int, *, confusion_weight: float = 1.0,
                     steps: int = 200, learning_rate: float = 1e-2) -> jax.Array:
    r"""Per-example loss ``[N]`` on the given labels after confusion training (module docstring);
    ``feats [N, D]`` (concatenated depths), ``seed_mask [N]``. Pure and jitted (``lax.scan`` of steps)."""
    return _confusion_jit(jnp.asarray(feats, jnp.float32), jnp.asarray(y, jnp.int32),
                          jnp.asarray(seed_mask, jnp.float32), key, int(num_classes), float(confusion_weight),
                          int(steps), float(learning_rate))


def _confusion_impl(f, y, sm, key, num_classes, confusion_weight, steps, learning_rate):
    mu, sd = feature_standardization(f)
    f = (f - mu) / sd
    opt = optax.adam(learning_rate)

    def total(p, r):
        lg = f @ p["w"] + p["b"]
        base = optax.softmax_cross_entropy_with_integer_labels(lg, y).mean()
        conf = (optax.softmax_cross_entropy_with_integer_labels(lg, r) * sm).sum() / jnp.maximum(sm.sum(), 1)
        return base + confusion_weight * conf

    p = {"w": jnp.zeros((f.shape[1], num_classes)), "b": jnp.zeros((num_classes,))}

    def step(carry, k):
        p, s = carry
        r = jax.random.randint(k, y.shape, 0, num_classes)
        g = jax.grad(total)(p, r)
        u, s = opt.update(g, s, p)
        return (optax.apply_updates(p, u), s), None
    (p, _), _ = jax.lax.scan(step, (p, opt.init(p)), jax.random.split(key, steps))
    return optax.softmax_cross_entropy_with_integer_labels(f @ p["w"] + p["b"], y)


_confusion_jit = jax.jit(_confusion_impl, static_argnums=(4, 5, 6, 7))


def expand_seeds(feats, y, seed_mask, key, num_classes: int, *, rounds: int = 2, growth: float = 0.05,
                 confusion_weight: float = 1.0, steps: int = 200, learning_rate: float = 1e-2) -> np.ndarray:
    r"""Seed expansion: ``rounds`` rounds of confusion training, each adding the ``growth`` fraction of
    ``N`` (5%) non-seed rows with the highest confusion loss. Returns the grown boolean ``[N]`` mask."""
    check_fraction("growth", growth)
    mask = np.asarray(seed_mask, bool).copy()
    n = len(mask)
    add = int(round(growth * n))
    for r in range(int(rounds)):
        loss = np.asarray(confusion_losses(feats, y, mask, jax.random.fold_in(key, r), num_classes,
                                           confusion_weight=confusion_weight, steps=steps,
                                           learning_rate=learning_rate))
        loss = np.where(mask, -np.inf, loss)
        k = int(min(add, (~mask).sum()))
        if k > 0:
            mask[np.argsort(-loss, kind="stable")[:k]] = True
    return mask


def concat_depths(stage_feats: Sequence) -> jax.Array:
    """The depths' features side by side, ``[N, sum_i d_i]``."""
    return jnp.concatenate([jnp.asarray(f, jnp.float32) for f in stage_feats], axis=1)
