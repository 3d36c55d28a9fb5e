r"""Link-prediction and node-classification metrics (jit-able JAX, equal to scikit-learn).

* :func:`roc_auc` -- the Mann-Whitney statistic with average ranks for ties,
  :math:`\mathrm{AUC} = (\sum_{i \in P} r_i - |P|(|P|+1)/2) / (|P||N|)`; equals
  ``sklearn.metrics.roc_auc_score``.
* :func:`average_precision` -- :math:`\mathrm{AP} = \sum_k (R_k - R_{k-1}) P_k` over the distinct
  score thresholds in decreasing order; equals ``sklearn.metrics.average_precision_score``.
* :func:`link_scores` / :func:`link_auc_ap` -- inner-product decoder probabilities on positive and
  negative test pairs and their AUC/AP.
* :func:`accuracy` -- node-classification accuracy on an index set.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def roc_auc(scores: jax.Array, labels: jax.Array) -> jax.Array:
    """ROC AUC of ``scores`` ``[P]`` for binary ``labels`` ``[P]`` (1 = positive); ties get average ranks."""
    s = jnp.asarray(scores, jnp.float32)
    y = jnp.asarray(labels).astype(jnp.float32)
    srt = jnp.sort(s)
    lo = jnp.searchsorted(srt, s, side="left")
    hi = jnp.searchsorted(srt, s, side="right")
    ranks = (lo + hi + 1) / 2.0  # 1-based average rank
    n_pos = jnp.sum(y)
    n_neg = y.shape[0] - n_pos
    return (jnp.sum(ranks * y) - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def average_precision(scores: jax.Array, labels: jax.Array) -> jax.Array:
    """Average precision (area under the step precision-recall curve, sklearn's definition)."""
    s = jnp.asarray(scores, jnp.float32)
    y = jnp.asarray(labels).astype(jnp.float32)
    order = jnp.argsort(-s, stable=True)
    s, y = s[order], y[order]
    tps = jnp.cumsum(y)
    fps = jnp.cumsum(1.0 - y)
    end = jnp.concatenate([s[1:] != s[:-1], jnp.array([True])])  # last index of each tie group
    recall = tps / jnp.sum(y)
    precision = tps / (tps + fps)
    r_end = jnp.where(end, recall, 0.0)
    prev = jnp.concatenate([jnp.zeros(1), jax.lax.cummax(r_end)[:-1]])
    return jnp.sum(jnp.where(end, (recall - prev) * precision, 0.0))


def link_scores(z: jax.Array, pos: jax.Array, neg: jax.Array):
    """``(scores [P+Q], labels [P+Q])``: :math:`\\sigma(z_i^\\top z_j)` for ``pos`` ``[P, 2]`` then
    ``neg`` ``[Q, 2]`` pairs."""
    pairs = jnp.concatenate([pos, neg], 0)
    s = jax.nn.sigmoid(jnp.sum(z[pairs[:, 0]] * z[pairs[:, 1]], -1))
    y = jnp.concatenate([jnp.ones(pos.shape[0]), jnp.zeros(neg.shape[0])])
    return s, y


def link_auc_ap(z: jax.Array, pos: jax.Array, neg: jax.Array):
    """``(auc, ap)`` of the inner-product decoder on embeddings ``z`` ``[N, d]``."""
    s, y = link_scores(z, pos, neg)
    return roc_auc(s, y), average_precision(s, y)


def accuracy(logits: jax.Array, labels: jax.Array, idx: jax.Array) -> jax.Array:
    """Fraction of nodes ``idx`` whose argmax logit equals the label."""
    return jnp.mean(jnp.argmax(logits[idx], -1) == labels[idx])
