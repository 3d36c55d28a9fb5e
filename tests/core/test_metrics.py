"""ROC AUC by mid-ranks and DeLong's covariance (poisonjax.core.metrics): against scikit-learn, against the
definition's structural components, and against the exact Mann-Whitney variance under the null."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from poisonjax.core.metrics import auc_difference_se, roc_auc, roc_auc_delong
from poisonjax.core.validation import PoisonJaxInputError


def _components(x, y):
    """The definition, pair by pair: V10(i) = mean_j psi(x_i, y_j), V01(j) = mean_i psi(x_i, y_j)."""
    psi = (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])
    return psi.mean(1), psi.mean(0)


def test_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    pos, neg = rng.integers(0, 6, 40).astype(float), rng.integers(0, 5, 70).astype(float)   # many ties
    want = roc_auc_score(np.r_[np.ones(40), np.zeros(70)], np.r_[pos, neg])
    assert roc_auc(pos, neg) == pytest.approx(want, abs=1e-12)
    assert roc_auc_delong(pos, neg)[0] == pytest.approx(want, abs=1e-12)


def test_delong_covariance_matches_the_structural_components():
    rng = np.random.default_rng(1)
    P, N = 23, 31
    pos = np.stack([rng.normal(1.0, 1, P), rng.integers(0, 4, P).astype(float)])   # two scorers, one with ties
    neg = np.stack([rng.normal(0.0, 1, N), rng.integers(0, 3, N).astype(float)])
    aucs, cov = roc_auc_delong(pos, neg)
    v10 = np.stack([_components(pos[k], neg[k])[0] for k in range(2)])
    v01 = np.stack([_components(pos[k], neg[k])[1] for k in range(2)])
    np.testing.assert_allclose(aucs, v10.mean(1), atol=1e-12)
    np.testing.assert_allclose(cov, np.cov(v10) / P + np.cov(v01) / N, atol=1e-12)
    same = roc_auc_delong(np.stack([pos[0], pos[0]]), np.stack([neg[0], neg[0]]))[1]
    assert same[0, 1] == pytest.approx(same[0, 0])            # a scorer against itself: difference has variance 0
    auc1, var1 = roc_auc_delong(pos[0], neg[0])
    assert auc1 == pytest.approx(aucs[0]) and var1 == pytest.approx(cov[0, 0])
    # the paired difference's SE is the DeLong SE of the difference of the two scorers' structural components
    d10, d01 = v10[0] - v10[1], v01[0] - v01[1]
    assert auc_difference_se(cov, 0, 1) == pytest.approx(np.sqrt(d10.var(ddof=1) / P + d01.var(ddof=1) / N), rel=1e-9)
    assert auc_difference_se(same, 0, 1) == 0.0


def test_delong_variance_under_the_null_matches_mann_whitney():
    """Both classes from one continuous law: Var(AUC) = (P + N + 1) / (12 P N) exactly; DeLong's estimate
    is unbiased for it up to O(1/n), and the AUCs' spread over draws agrees too."""
    rng = np.random.default_rng(2)
    P, N, R = 15, 400, 3000
    aucs, vs = [], []
    for _ in range(R):
        a, v = roc_auc_delong(rng.normal(size=P), rng.normal(size=N))
        aucs.append(a)
        vs.append(v)
    exact = (P + N + 1) / (12 * P * N)
    assert np.mean(vs) == pytest.approx(exact, rel=0.1)
    assert np.var(aucs) == pytest.approx(exact, rel=0.1)
    assert np.sqrt(exact) == pytest.approx(0.0759, abs=5e-4)   # 15 members: an MIA AUC is +-0.15 at 95%


def test_bad_input_is_a_one_line_error():
    with pytest.raises(PoisonJaxInputError, match="at least two positive"):
        roc_auc_delong([1.0], [0.0, 1.0])
    with pytest.raises(PoisonJaxInputError, match="same K"):
        roc_auc_delong(np.zeros((2, 3)), np.zeros((3, 3)))
    with pytest.raises(PoisonJaxInputError, match="scores"):
        roc_auc_delong([1.0, np.nan], [0.0, 1.0])
