r"""Deep supervised hashing victims (CSQ, DPN) and Hamming-ranking retrieval metrics.

A hashing model :math:`f_\theta(x) = \tanh(\cdot) \in (-1,1)^K` (:class:`poisonjax.vision.models.HashNet`)
gives binary codes :math:`b = \mathrm{sign}(f_\theta(x)) \in \{-1, 1\}^K`; retrieval ranks the
database by Hamming distance :math:`d_H(b_q, b_j) = (K - b_q^\top b_j) / 2`.

Losses (per example; ``h = f(x)`` ``[B, K]``, ``y`` ``[B]``):

* **CSQ** (Yuan et al., "Central Similarity Quantization for Efficient Image and Video Retrieval",
  CVPR 2020): class hash centers :math:`c_y` (rows of a Hadamard matrix and their negations when
  :math:`C \le 2K`, else Bernoulli :math:`\pm1`), loss
  :math:`\frac1K\sum_k \mathrm{BCE}\big(\tfrac{h_k+1}{2}, \tfrac{c_{y,k}+1}{2}\big) + \lambda\frac1K\sum_k(|h_k|-1)^2`.
* **DPN** (Fan et al., "Deep Polarized Network for Supervised Learning of Accurate Binary Hashing
  Codes", IJCAI 2020): polarization loss :math:`\frac1K\sum_k \max(m - h_k t_{y,k}, 0)` towards a
  per-class random target code :math:`t_y \in \{\pm1\}^K`.
  Simplified: applied to the tanh outputs with margin ``m = 0.5`` (the paper polarises the raw
  outputs; its bit-wise hinge is the same).

Metrics: :func:`average_precision` / :func:`mean_average_precision` (relevance = same label, full
database ranking, ties broken by database order), and :func:`trigger_metrics` for PADHASH's ASR
(top-40 retrieved, success if more than 30% are of the target class) and t-mAP.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from poisonjax.core.validation import check_choice

HASH_METHODS = ("csq", "dpn")


def hash_centers(num_classes: int, bits: int, key=None, kind: str = "auto") -> np.ndarray:
    r"""``[C, K]`` class centers/target codes in :math:`\{-1, 1\}`.

    ``kind="hadamard"``: rows of the Sylvester Hadamard matrix :math:`H_K` followed by rows of
    :math:`-H_K` (pairwise Hamming distance :math:`\ge K/2`; needs ``K`` a power of 2 and
    :math:`C \le 2K`). ``kind="bernoulli"``: i.i.d. fair :math:`\pm1` bits from ``key``.
    ``"auto"``: Hadamard when possible (CSQ's rule), else Bernoulli.
    """
    check_choice("kind", kind, ("auto", "hadamard", "bernoulli"))
    pow2 = bits > 0 and (bits & (bits - 1)) == 0
    if kind == "hadamard" or (kind == "auto" and pow2 and num_classes <= 2 * bits):
        if not pow2 or num_classes > 2 * bits:
            raise ValueError(f"Hadamard centers need bits a power of 2 and num_classes <= 2*bits, got bits={bits}, C={num_classes}")
        from scipy.linalg import hadamard
        h = hadamard(bits)
        return np.concatenate([h, -h])[:num_classes].astype(np.float32)
    key = jax.random.PRNGKey(0) if key is None else key
    return np.asarray(jnp.where(jax.random.bernoulli(key, 0.5, (num_classes, bits)), 1.0, -1.0), np.float32)


def csq_loss(h, y, centers, lam: float = 1e-4):
    r"""CSQ per-example loss (see module doc). ``h [B, K]`` in (-1, 1), ``y [B]``, ``centers [C, K]``."""
    c = (jnp.asarray(centers)[y] + 1.0) / 2.0
    p = jnp.clip((h + 1.0) / 2.0, 1e-6, 1 - 1e-6)
    bce = -(c * jnp.log(p) + (1 - c) * jnp.log(1 - p)).mean(-1)
    q = ((jnp.abs(h) - 1.0) ** 2).mean(-1)
    return bce + lam * q


def dpn_loss(h, y, codes, margin: float = 0.5):
    r"""DPN polarization loss :math:`\frac1K\sum_k\max(m - h_k t_{y,k}, 0)`; ``h [B, K]``, ``codes [C, K]``."""
    t = jnp.asarray(codes)[y]
    return jax.nn.relu(margin - h * t).mean(-1)


def hashing_loss(method: str, apply_fn: Callable, centers) -> Callable:
    """The victim's hashing loss (``csq`` or ``dpn``) on ``apply_fn(params, batch["x"])`` in the one
    per-example-loss signature ``(params, {"x": [B,H,W,C], "y": [B]}, key) -> [B]``; used both to
    train victims and as PADHASH's :math:`L`."""
    check_choice("hash method", method, HASH_METHODS)
    centers = jnp.asarray(centers)
    fn = csq_loss if method == "csq" else dpn_loss
    return lambda params, batch, key: fn(apply_fn(params, batch["x"]), batch["y"], centers)


def binary_codes(h):
    """``sign(h)`` with 0 mapped to +1: ``{-1, 1}`` codes of the same shape."""
    return jnp.where(h >= 0, 1.0, -1.0)


def hamming_distance(q, db):
    r""":math:`(K - q\,db^\top)/2` for ``q [Q, K]`` and ``db [N, K]`` in {-1, 1}: ``[Q, N]``."""
    return 0.5 * (q.shape[-1] - q @ db.T)


def _rank(dist):
    # ascending distance; ties broken by database position (stable sort)
    return jnp.argsort(dist, axis=-1, stable=True)


def average_precision(dist, relevant, topk=None):
    r"""AP of each query: rank the database by ascending ``dist`` ``[Q, N]`` (ties by position) and
    compute :math:`\frac{1}{R}\sum_{r: rel_r} \mathrm{prec}@r` over the top ``topk`` (all if None),
    where :math:`R` is the number of relevant items retrieved in that range. ``relevant [Q, N]``.
    Queries with no relevant item retrieved get AP 0. Returns ``[Q]``."""
    order = _rank(jnp.asarray(dist, jnp.float32))
    rel = jnp.take_along_axis(jnp.asarray(relevant, jnp.float32), order, axis=-1)
    if topk is not None:
        rel = rel[:, :topk]
    hits = jnp.cumsum(rel, -1)
    prec = hits / jnp.arange(1, rel.shape[-1] + 1)
    nrel = rel.sum(-1)
    return jnp.where(nrel > 0, (prec * rel).sum(-1) / jnp.maximum(nrel, 1), 0.0)


def mean_average_precision(q_codes, q_labels, db_codes, db_labels, topk=None):
    """mAP of Hamming ranking with relevance = same label (single-label data). Codes in {-1, 1}."""
    d = hamming_distance(q_codes, db_codes)
    rel = jnp.asarray(q_labels)[:, None] == jnp.asarray(db_labels)[None, :]
    return average_precision(d, rel, topk).mean()


def trigger_metrics(trigger_codes, target_labels, db_codes, db_labels, k: int = 40, threshold: float = 0.3):
    r"""PADHASH's per-trigger metrics, codes in {-1, 1}.

    * ``success [Q]``: the fraction of the top-``k`` retrieved (Hamming ranking) whose label is the
      trigger's target class exceeds ``threshold`` (ASR = its mean).
    * ``precision [Q]``: that fraction.
    * ``t_ap [Q]``: AP of the trigger query over the whole ranking with relevance = target label
      (t-mAP = its mean).
    """
    d = hamming_distance(trigger_codes, db_codes)
    rel = jnp.asarray(target_labels)[:, None] == jnp.asarray(db_labels)[None, :]
    order = _rank(d)[:, :k]
    frac = jnp.take_along_axis(rel, order, -1).mean(-1)
    return {"success": frac > threshold, "precision": frac, "t_ap": average_precision(d, rel)}
