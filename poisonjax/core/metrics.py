r"""Detection and membership metrics shared by the rooms: ROC AUC by mid-ranks and DeLong's covariance.

Every room that scores positives against negatives (membership inference in federated unlearning, RAVEN's
backdoor detection) uses these, so an AUC and its standard error mean the same thing everywhere.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from poisonjax.core.validation import PoisonJaxInputError, check_finite


def roc_auc(pos_scores, neg_scores) -> float:
    r"""ROC AUC of ``pos_scores [P]`` against ``neg_scores [N]`` by mid-ranks:
    :math:`(R_P - P(P+1)/2) / (P N)` with :math:`R_P` the sum of the positives' ranks in the pooled
    sample (ties get the mean rank, i.e. count one half)."""
    p = np.asarray(pos_scores, np.float64).ravel()
    n = np.asarray(neg_scores, np.float64).ravel()
    if p.size == 0 or n.size == 0:
        raise PoisonJaxInputError(f"roc_auc needs at least one positive and one negative score, got "
                                  f"{p.size} and {n.size}")
    check_finite("scores", np.concatenate([p, n]))
    ranks = rankdata(np.concatenate([p, n]))
    return float((ranks[:p.size].sum() - p.size * (p.size + 1) / 2.0) / (p.size * n.size))


def roc_auc_delong(pos_scores, neg_scores):
    r"""ROC AUCs of ``K`` scorers on the same examples with DeLong's covariance (DeLong et al.,
    Biometrics 1988), from mid-ranks (Sun & Xu, IEEE SPL 2014).

    ``pos_scores [K, P]`` and ``neg_scores [K, N]`` (or ``[P]`` / ``[N]`` for one scorer): scorer ``k``'s
    scores of the same ``P`` positives and ``N`` negatives. With
    :math:`\psi(x, y) = [x > y] + \tfrac12 [x = y]`, the structural components of scorer :math:`k` are

    .. math:: V^k_{10}(i) = \frac1N \sum_j \psi(x^k_i, y^k_j), \qquad
              V^k_{01}(j) = \frac1P \sum_i \psi(x^k_i, y^k_j),

    :math:`\mathrm{AUC}_k` is the mean of either, and

    .. math:: \mathrm{Cov}(\mathrm{AUC}_k, \mathrm{AUC}_l) = \frac{S^{kl}_{10}}{P} + \frac{S^{kl}_{01}}{N},

    with :math:`S_{10}`, :math:`S_{01}` the sample covariances (ddof 1) of the components over positives
    and over negatives. :math:`V_{10}(i)` is (rank of :math:`x_i` in the pooled sample minus its rank among
    the positives) / N, so everything costs one sort per scorer. Returns ``(aucs [K], cov [K, K])``
    (scalars ``(auc, variance)`` for one scorer). Needs at least two positives and two negatives. The
    standard error of a difference of two AUCs on the same examples is
    :math:`\sqrt{C_{kk} + C_{ll} - 2 C_{kl}}`.
    """
    p = np.asarray(pos_scores, np.float64)
    n = np.asarray(neg_scores, np.float64)
    single = p.ndim == 1
    p, n = np.atleast_2d(p), np.atleast_2d(n)
    if p.ndim != 2 or n.ndim != 2 or p.shape[0] != n.shape[0]:
        raise PoisonJaxInputError(f"roc_auc_delong: pos_scores and neg_scores must be [K, P] and [K, N] with the "
                                  f"same K, got {p.shape} and {n.shape}")
    P, N = p.shape[1], n.shape[1]
    if P < 2 or N < 2:
        raise PoisonJaxInputError(f"roc_auc_delong needs at least two positive and two negative scores, got {P} "
                                  f"and {N}")
    check_finite("scores", np.concatenate([p, n], axis=1))
    pooled = np.apply_along_axis(rankdata, 1, np.concatenate([p, n], axis=1))
    v10 = (pooled[:, :P] - np.apply_along_axis(rankdata, 1, p)) / N
    v01 = 1.0 - (pooled[:, P:] - np.apply_along_axis(rankdata, 1, n)) / P
    aucs = v10.mean(axis=1)
    cov = np.atleast_2d(np.cov(v10)) / P + np.atleast_2d(np.cov(v01)) / N
    if single:
        return float(aucs[0]), float(cov[0, 0])
    return aucs, cov


def auc_difference_se(cov, a: int, b: int) -> float:
    r"""Standard error of :math:`\mathrm{AUC}_a - \mathrm{AUC}_b` for two scorers of the same examples, from
    :func:`roc_auc_delong`'s covariance: :math:`\sqrt{C_{aa} + C_{bb} - 2 C_{ab}}` (clipped at 0 against
    rounding)."""
    c = np.atleast_2d(np.asarray(cov, np.float64))
    return float(np.sqrt(max(c[a, a] + c[b, b] - 2.0 * c[a, b], 0.0)))
