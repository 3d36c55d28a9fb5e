r"""Detection and task metrics for federated defenses.

Detection treats ``report["flags"]`` as predictions of "malicious":
:math:`\mathrm{precision} = TP / (TP + FP)`, :math:`\mathrm{recall} = TP / (TP + FN)`, micro-averaged
over rounds (counts summed first). Undefined ratios (0/0) are ``None``.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import jax.numpy as jnp
import numpy as np


def detection_counts(flags, malicious) -> Dict[str, jnp.ndarray]:
    """``tp, fp, fn, tn`` of boolean ``flags [n]`` against ground truth ``malicious [n]``."""
    f = jnp.asarray(flags, bool)
    m = jnp.asarray(malicious, bool)
    return {"tp": jnp.sum(f & m), "fp": jnp.sum(f & ~m), "fn": jnp.sum(~f & m), "tn": jnp.sum(~f & ~m)}


def precision_recall(tp: float, fp: float, fn: float) -> Tuple[Optional[float], Optional[float]]:
    """``(precision, recall)``; each ``None`` when its denominator is 0."""
    p = float(tp) / (tp + fp) if (tp + fp) > 0 else None
    r = float(tp) / (tp + fn) if (tp + fn) > 0 else None
    return p, r


def detection_precision_recall(flags, malicious) -> Tuple[Optional[float], Optional[float]]:
    """Precision/recall of ``flags`` (``[n]`` or ``[rounds, n]``) against ``malicious`` (same shape)."""
    c = {k: float(v) for k, v in detection_counts(flags, malicious).items()}
    return precision_recall(c["tp"], c["fp"], c["fn"])


def detection_auroc(scores, malicious) -> Optional[float]:
    """Area under the ROC curve of suspicion ``scores`` (higher = more suspicious) for ``malicious``
    (Mann-Whitney U statistic, ties counted 1/2); ``None`` if only one class is present."""
    s = np.asarray(scores, np.float64).reshape(-1)
    m = np.asarray(malicious, bool).reshape(-1)
    pos, neg = s[m], s[~m]
    if pos.size == 0 or neg.size == 0:
        return None
    gt = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(gt / (pos.size * neg.size))
