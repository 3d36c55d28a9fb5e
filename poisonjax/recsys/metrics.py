r"""Metrics for sequential-recommendation poisoning: full-ranking HR/NDCG, promotion, diversity.

**Full ranking.** For user :math:`u` with history :math:`H_u` and an evaluated item :math:`i`, the
0-based rank is the number of *other* candidate items scoring strictly higher,

.. math:: r_u(i) = |\{v \in \{1..V\} \setminus (H_u \cup \{i\}) : \hat y_{uv} > \hat y_{ui}\}|,

(history items are removed from the candidates, as in S3-Rec/ICLRec evaluation; ties count in the
item's favour). Then :math:`\mathrm{HR@k} = \frac1{|U|}\sum_u [r_u < k]` and
:math:`\mathrm{NDCG@k} = \frac1{|U|}\sum_u [r_u < k] / \log_2(r_u + 2)` (one relevant item, so
IDCG = 1).

* **Overall accuracy** (stealth): :math:`i = ` each user's test item.
* **Target promotion**: :math:`i = t` for every real user who never interacted with :math:`t`.

**Diversity / authenticity** of fake sequences (numpy, host side): target-repetition rate,
distinct-item ratio, entropy of item usage, distances of item-popularity and length distributions
from the real ones, and the cross-validated AUC of a logistic-regression fake-user detector.
"""
from __future__ import annotations

from typing import Dict, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from poisonjax.core.parallel import chunked_vmap
from poisonjax.recsys.models import score_all


def ranks_from_scores(scores: jax.Array, items: jax.Array, exclude: jax.Array) -> jax.Array:
    """0-based full-ranking ranks (module doc).

    Args:
      scores: ``[B, V + 1]`` scores (column 0 = padding, ignored).
      items: ``[B]`` evaluated item of each row, or ``[B, n]`` for ``n`` items per row.
      exclude: ``[B, H]`` item ids removed from the candidates (0 = padding, ignored).

    Returns:
      ``[B]`` (or ``[B, n]``) int32 ranks.
    """
    B = scores.shape[0]
    multi = items.ndim == 2
    it = items if multi else items[:, None]
    s_item = jnp.take_along_axis(scores, it, 1)                                    # [B, n]
    masked = scores.at[jnp.arange(B)[:, None], exclude].set(-jnp.inf)
    masked = masked.at[:, 0].set(-jnp.inf)
    r = jnp.sum(masked[:, None, :] > s_item[:, :, None], axis=2).astype(jnp.int32)  # [B, n]
    return r if multi else r[:, 0]


def hit_ndcg(ranks, ks: Sequence[int] = (5, 10, 20), weights=None) -> Dict[str, float]:
    """``{"hr@k": ..., "ndcg@k": ...}`` from 0-based ranks, averaged with optional row ``weights``."""
    r = np.asarray(ranks, np.float64)
    w = np.ones_like(r) if weights is None else np.asarray(weights, np.float64)
    tot = max(w.sum(), 1e-12)
    out = {}
    for k in ks:
        hit = (r < k).astype(np.float64)
        out[f"hr@{k}"] = float((hit * w).sum() / tot)
        out[f"ndcg@{k}"] = float((hit / np.log2(r + 2.0) * w).sum() / tot)
    return out


def make_ranker(model, chunk: int = 512):
    """``rank(params, seqs [U, L], items [U] or [U, n], exclude [U, H]) -> [U] / [U, n]`` ranks,
    computed in chunks of ``chunk`` users (:func:`poisonjax.core.parallel.chunked_vmap`) so memory
    is ``O(chunk * V)``; vmap it over
    stacked params for K victims (see :func:`make_ensemble_ranker`)."""

    def rank(params, seqs, items, exclude):
        def one_user(s, i, e):
            return ranks_from_scores(score_all(model, params, s[None]), i[None], e[None])[0]
        return chunked_vmap(one_user, chunk=min(int(chunk), seqs.shape[0]))(seqs, items, exclude)

    return rank


def make_ensemble_ranker(model, chunk: int = 512):
    """Jitted ranks for K stacked victims: ``(params[K], seqs, items, exclude) -> [K, U]``."""
    r = make_ranker(model, chunk)
    return jax.jit(jax.vmap(r, in_axes=(0, None, None, None)))


def target_displacement(test_ranks, target_ranks, eligible, k: int = 10) -> float:
    r"""NDCG@k that users' real test items lose *because the target ranks above them*, in one model:

    .. math:: \frac1{|U|}\sum_u \big[\mathrm{ndcg}_k(r_u - d_u) - \mathrm{ndcg}_k(r_u)\big], \qquad
              d_u = [\,u \text{ eligible} \wedge r_u(t) < r_u(i_u)\,],

    with :math:`r_u(i_u)` the test item's rank, :math:`r_u(t)` the target's (both full ranking over
    the same candidates) and "eligible" = the target is a candidate (not in the user's history, not
    the test item). A paired measure of the demotion DDSP argues plain promotion causes; it has no
    retraining noise, unlike the accuracy drop against a separately trained clean model.
    """
    r = np.asarray(test_ranks, np.float64)
    d = (np.asarray(eligible, bool) & (np.asarray(target_ranks) < r)).astype(np.float64)
    nd = lambda x: np.where(x < k, 1.0 / np.log2(x + 2.0), 0.0)
    return float(np.mean(nd(r - d) - nd(r)))


def never_interacted(history: np.ndarray, test_items: np.ndarray, target: int) -> np.ndarray:
    """``[U]`` bool: users whose history and test item both differ from ``target``."""
    return ~((np.asarray(history) == target).any(1) | (np.asarray(test_items) == target))


# ------------------------------------------------------------------- diversity / authenticity ----

def target_repetition(fake: np.ndarray, target: int) -> float:
    """Fraction of (non-padding) fake-sequence positions holding the target."""
    f = np.asarray(fake)
    n = (f > 0).sum()
    return float((f == target).sum() / max(n, 1))


def distinct_ratio(fake: np.ndarray) -> float:
    """Mean over fake sequences of ``#distinct items / length``."""
    vals = []
    for row in np.asarray(fake):
        row = row[row > 0]
        if row.size:
            vals.append(np.unique(row).size / row.size)
    return float(np.mean(vals)) if vals else 0.0


def usage_entropy(fake: np.ndarray, num_items: int, normalized: bool = True) -> float:
    r"""Shannon entropy :math:`-\sum_v p_v \log p_v` of item usage over all fake positions
    (divided by :math:`\log V` if ``normalized``)."""
    f = np.asarray(fake)
    c = np.bincount(f[f > 0].ravel(), minlength=num_items + 1)[1:].astype(np.float64)
    if c.sum() == 0:
        return 0.0
    p = c[c > 0] / c.sum()
    h = float(-(p * np.log(p)).sum())
    return h / np.log(num_items) if normalized and num_items > 1 else h


def popularity_distance(fake: np.ndarray, real_sequences, num_items: int) -> float:
    r"""1-Wasserstein distance between the :math:`\log(1+\mathrm{pop})` of items used by fake
    sequences and by real sequences (popularity counted on the real data)."""
    from scipy.stats import wasserstein_distance
    real = np.concatenate([np.asarray(s) for s in real_sequences])
    pop = np.bincount(real, minlength=num_items + 1)
    f = np.asarray(fake)
    f = f[f > 0]
    return float(wasserstein_distance(np.log1p(pop[f]), np.log1p(pop[real])))


def length_distance(fake_lengths, real_lengths) -> float:
    """Total-variation distance between the length histograms of fake and real sequences."""
    fl, rl = np.asarray(fake_lengths, np.int64), np.asarray(real_lengths, np.int64)
    m = int(max(fl.max(initial=0), rl.max(initial=0))) + 1
    pf = np.bincount(fl, minlength=m) / max(fl.size, 1)
    pr = np.bincount(rl, minlength=m) / max(rl.size, 1)
    return float(0.5 * np.abs(pf - pr).sum())


def loo_popularity(sequences, num_items: int):
    """Leave-self-out popularity: for each sequence, the count of each of its items over all *other*
    sequences. Returns a list of ``float64`` arrays aligned with ``sequences`` (padding 0 dropped).

    A detector that counts a real user's own interactions in the popularity of its items would see
    every real item with count >= 1 and a never-seen target with count 0: a leak that flags any fake
    user holding a cold target, whatever the rest of its sequence looks like."""
    seqs = [np.asarray(s)[np.asarray(s) > 0] for s in sequences]
    total = np.bincount(np.concatenate(seqs) if seqs else np.zeros(0, np.int64), minlength=num_items + 1)
    out = []
    for s in seqs:
        u, inv, cnt = np.unique(s, return_inverse=True, return_counts=True)
        out.append((total[s] - cnt[inv]).astype(np.float64))
    return out


FEATURE_NAMES = ("distinct_ratio", "max_item_share", "logpop_mean", "logpop_std", "logpop_min", "logpop_max",
                 "unseen_share", "period2_repeats")


def sequence_features(sequences, num_items: int, use_length: bool = False) -> np.ndarray:
    r"""Per-sequence detector features ``[N, 8]`` (:data:`FEATURE_NAMES`): distinct-item ratio, largest
    share of one item, mean/std/min/max of :math:`\log(1 + \mathrm{pop}_{-u})`, share of items no
    other user has (:math:`\mathrm{pop}_{-u} = 0`), and share of period-2 repeats
    (``s[l] == s[l-2]``, the alternating pattern of Yue et al.).

    :math:`\mathrm{pop}_{-u}` is leave-self-out popularity over *all* given sequences
    (:func:`loo_popularity`): what a platform holding the poisoned data sees, without counting a
    user's own interactions.

    ``use_length`` appends :math:`\log(\text{length})` (a 9th column). Leave it out when the fake
    sequences have one fixed length by design (the issue's default setting): length alone would then
    flag every attack equally and say nothing about the *content* of the sequences (the length
    mismatch is reported separately by :func:`length_distance`). Use it when fake lengths are drawn
    from the real length distribution."""
    pops = loo_popularity(sequences, num_items)
    feats = []
    for s, c in zip(sequences, pops):
        s = np.asarray(s)
        s = s[s > 0]
        _, cnt = np.unique(s, return_counts=True)
        rep2 = np.mean(s[2:] == s[:-2]) if s.size > 2 else 0.0
        p = np.log1p(c)
        feats.append([np.unique(s).size / s.size, cnt.max() / s.size, p.mean(), p.std(), p.min(), p.max(),
                      np.mean(c == 0), rep2] + ([np.log(s.size)] if use_length else []))
    return np.asarray(feats, np.float64)


def detector_auc(real_sequences, fake: np.ndarray, num_items: int, seed: int = 0,
                 max_real: int = 2000, folds: int = 5, use_length: bool = False) -> float:
    """AUC of a logistic-regression fake-user detector (lower = stealthier; 0.5 = chance).

    Features: :func:`sequence_features`, computed on the poisoned data (all real users plus the
    fakes, leave-self-out popularity). The classifier sees a reproducible subsample of ``max_real``
    real users and all fakes; the AUC is computed on out-of-fold predictions of stratified
    ``folds``-fold cross-validation (balanced class weights, standardised features, scikit-learn),
    so no sequence is scored by a model that saw it.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    rng = np.random.default_rng(seed)
    real = [np.asarray(r) for r in real_sequences]
    fake_rows = [r[r > 0] for r in np.asarray(fake)]
    feats = sequence_features(real + fake_rows, num_items, use_length)
    idx = np.arange(len(real))
    if len(real) > max_real:
        idx = np.sort(rng.choice(len(real), max_real, replace=False))
    X = np.concatenate([feats[idx], feats[len(real):]])
    y = np.concatenate([np.zeros(idx.size), np.ones(len(fake_rows))])
    nf = min(folds, len(fake_rows))
    if nf < 2:
        return float("nan")
    clf = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=1000))
    p = cross_val_predict(clf, X, y, cv=StratifiedKFold(nf, shuffle=True, random_state=seed), method="predict_proba")[:, 1]
    return float(roc_auc_score(y, p))
