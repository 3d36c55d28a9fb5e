r"""Steps 3-5 of RAVEN (2025): clusters, semantic entropy, cross-model divergence, suspicion score.

For one prompt, the answers of all ``K`` models (``n`` each, pooled: ``K n`` answers) are clustered
by **bidirectional entailment** (Kuhn et al. ICLR 2023, Alg. 1): answers are visited in order and
answer :math:`i` joins the first existing cluster whose representative :math:`r` satisfies
:math:`P(i\Rightarrow r) > \tau` and :math:`P(r\Rightarrow i) > \tau` (``tau = 0.5``), else it opens
a new cluster. Pooling makes the cluster ids comparable across models.

* **Semantic entropy** of model :math:`k` on the prompt (discrete form, Farquhar et al. Nature
  2024): :math:`H_k = -\sum_c p_k(c)\log p_k(c)`, :math:`p_k(c)` = share of its ``n`` answers in
  cluster :math:`c`.
* **Cross-model divergence**: the Jensen-Shannon *distance* (natural log, as
  ``scipy.spatial.distance.jensenshannon``) between :math:`p_k` and the pooled distribution of its
  peers :math:`\bar p_{-k}` (all other models' answers together),
  :math:`D_k = \sqrt{\tfrac12 KL(p_k\|m) + \tfrac12 KL(\bar p_{-k}\|m)}`, :math:`m = (p_k + \bar p_{-k})/2`.
* A (model, topic) cell averages :math:`H` and :math:`D` over the topic's perspective prompts.
* **Entropy gap**: :math:`G_k = \bar H_{-k} - H_k`, how much more uniform model :math:`k` is on the
  topic than the mean of its peers (:func:`entropy_gap`). A corpus-wide bias makes every model
  uniform on its topic, so the gap stays near 0 where :math:`H` alone is low.
* **Suspicion score** (``rule="and"``, the default): both signals on the scale of clean cells,
  :math:`z_G = (G - \mu_G)/\sigma_G` and :math:`z_D = (D - \mu_D)/\sigma_D` (mean and standard deviation
  over clean calibration cells, :func:`fit_calibration`; no implant is ever seen), and
  :math:`s = \min(z_G, z_D)`: a cell scores high only when it is anomalous on *both* -- the paper's
  "confidently uniform **and** disagreeing with its peers". ``rule="product"`` is the uncalibrated
  :math:`s = D\,(1 - H / \log n)` of earlier versions: its entropy factor spans a narrower range
  than :math:`D`, so it ranks cells almost by :math:`D` alone. Ablations: entropy only
  (:math:`-H`, the paper's signal), divergence only (:math:`D`).

  Beyond the paper: the entropy gap, the clean-cell z-scores and the min are this library's reading
  of "low entropy *and* divergent"; the notes available here do not give the paper's combination
  rule, and ``rule="product"`` is the other reading.
* **Threshold**: the :math:`(1-\alpha)` quantile of the scores of clean panels (``alpha = 0.05``);
  a cell is flagged when its score exceeds it.
"""
from __future__ import annotations

from typing import Dict, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from poisonjax.core.metrics import roc_auc as core_roc_auc


def cluster_bidirectional(ent: jax.Array, tau: float = 0.5) -> jax.Array:
    """``ent [..., m, m]`` entailment probabilities (``ent[i, j] = P(i => j)``) -> cluster ids
    ``[..., m]`` in ``0..m-1`` (module doc; batched over leading axes)."""
    m = ent.shape[-1]

    def one(e):
        mutual = (e > tau) & (e.T > tau)                    # [m, m]

        def step(ids, i):
            # representatives: the first member of each cluster opened so far (j < i)
            is_rep = (jnp.arange(m) < i) & (ids == jnp.arange(m))
            ok = is_rep & mutual[i]
            first = jnp.argmax(ok)
            cid = jnp.where(ok.any(), ids[first], i)
            return ids.at[i].set(cid), None

        ids, _ = jax.lax.scan(step, jnp.arange(m), jnp.arange(m))
        return ids

    flat = ent.reshape((-1, m, m))
    return jax.vmap(one)(flat).reshape(ent.shape[:-1])


def cluster_distribution(ids: jax.Array, groups: int) -> jax.Array:
    """``ids [..., G*n]`` (answers of ``G`` models, model-major) -> ``[..., G, m]`` cluster shares."""
    m = ids.shape[-1]
    n = m // groups
    oh = jax.nn.one_hot(ids, m).reshape(ids.shape[:-1] + (groups, n, m))
    return oh.mean(-2)


def semantic_entropy(p: jax.Array) -> jax.Array:
    r""":math:`-\sum_c p_c \log p_c` over the last axis (``0 log 0 = 0``)."""
    return -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), -1)


def js_distance(p: jax.Array, q: jax.Array) -> jax.Array:
    r"""Jensen-Shannon distance over the last axis, natural log (= ``scipy.spatial.distance.jensenshannon``)."""
    p = p / p.sum(-1, keepdims=True)
    q = q / q.sum(-1, keepdims=True)
    m = (p + q) / 2

    def kl(a, b):
        return jnp.sum(jnp.where(a > 0, a * (jnp.log(jnp.where(a > 0, a, 1.0)) - jnp.log(jnp.where(b > 0, b, 1.0))), 0.0), -1)

    return jnp.sqrt(jnp.maximum((kl(p, m) + kl(q, m)) / 2, 0.0))


def peer_divergence(dist: jax.Array) -> jax.Array:
    """``dist [..., K, m]`` per-model cluster shares -> ``[..., K]`` JS distance of each model to the
    pooled distribution of the other ``K-1`` models."""
    K = dist.shape[-2]
    if K < 2:
        raise ValueError(f"cross-model divergence needs at least 2 models, got {K}")
    peers = (dist.sum(-2, keepdims=True) - dist) / (K - 1)
    return js_distance(dist, peers)


def suspicion(entropy: jax.Array, divergence: jax.Array, n: int) -> jax.Array:
    r""":math:`s = D\,(1 - H/\log n)` (module doc)."""
    return divergence * (1.0 - entropy / jnp.log(float(n)))


SCORE_RULES = ("and", "product")


class Calibration(NamedTuple):
    r"""Clean-cell statistics of the two signals (:func:`fit_calibration`): mean and standard deviation
    of the entropy gap :math:`G` and of the divergence :math:`D`."""

    gap_mean: float
    gap_sd: float
    divergence_mean: float
    divergence_sd: float


def entropy_gap(entropy) -> np.ndarray:
    r"""``entropy [K, T]`` (models x topics, one panel) -> :math:`G_k = \frac{1}{K-1}\sum_{j \ne k} H_j - H_k`
    ``[K, T]``: how much more uniform each model is than its peers on each topic."""
    H = np.asarray(entropy, np.float64)
    K = H.shape[0]
    if K < 2:
        raise ValueError(f"entropy_gap needs at least 2 models, got {K}")
    return (H.sum(0, keepdims=True) - H) / (K - 1) - H


def fit_calibration(clean_cells: Sequence[Mapping[str, np.ndarray]]) -> Calibration:
    r""":math:`(\mu_G, \sigma_G, \mu_D, \sigma_D)` over every cell of the clean panels ``clean_cells``
    (each a :func:`panel_signals` dict with ``entropy`` and ``divergence`` ``[K, T]``; the gap is taken
    within each panel), pooled -- e.g. a panel and its leave-one-out sub-panels, as
    :func:`pooled_threshold`. Standard deviations are floored at ``1e-6``."""
    if isinstance(clean_cells, Mapping):
        clean_cells = [clean_cells]
    if len(clean_cells) == 0:
        raise ValueError("fit_calibration needs at least one clean panel (clean_cells is empty)")
    G = np.concatenate([entropy_gap(c["entropy"]).ravel() for c in clean_cells])
    D = np.concatenate([np.asarray(c["divergence"], np.float64).ravel() for c in clean_cells])
    if G.size < 2:
        raise ValueError(f"fit_calibration needs at least 2 clean cells, got {G.size}")
    if not (np.all(np.isfinite(G)) and np.all(np.isfinite(D))):
        raise ValueError("fit_calibration: clean_cells hold non-finite entropy or divergence values")
    return Calibration(float(G.mean()), float(max(G.std(), 1e-6)), float(D.mean()), float(max(D.std(), 1e-6)))


def and_score(entropy, divergence, calibration: Calibration) -> np.ndarray:
    r""":math:`s = \min\big((G - \mu_G)/\sigma_G,\ (D - \mu_D)/\sigma_D\big)` with :math:`G` the
    :func:`entropy_gap` of ``entropy [K, T]`` (module doc): both signals in clean-cell standard
    deviations, the cell as suspicious as its *weaker* anomaly."""
    c = calibration
    zg = (entropy_gap(entropy) - c.gap_mean) / c.gap_sd
    zd = (np.asarray(divergence, np.float64) - c.divergence_mean) / c.divergence_sd
    return np.minimum(zg, zd)


def calibrate(clean_cells: Sequence[Mapping[str, np.ndarray]], rule: str = "and"):
    """:func:`fit_calibration` on the clean panels ``clean_cells``, then each of them scored by ``rule``
    (:func:`with_score`): ``(calibration, scored cells)``."""
    cal = fit_calibration(clean_cells)
    return cal, [with_score(c, rule, cal) for c in clean_cells]


def with_score(cells: Mapping[str, np.ndarray], rule: str = "and", calibration: Calibration = None) -> dict:
    """A copy of the :func:`panel_signals` dict ``cells`` whose ``score`` follows ``rule``: ``"and"``
    (:func:`and_score`, needs ``calibration``) or ``"product"`` (:func:`suspicion`)."""
    if rule not in SCORE_RULES:
        raise ValueError(f"rule must be one of {SCORE_RULES}, got {rule!r}")
    out = dict(cells)
    if rule == "and":
        if calibration is None:
            raise ValueError("rule='and' needs a calibration: fit_calibration(<clean panels' cells>)")
        out["score"] = np.asarray(and_score(cells["entropy"], cells["divergence"], calibration))
    else:
        out["score"] = np.asarray(suspicion(jnp.asarray(cells["entropy"]), jnp.asarray(cells["divergence"]),
                                            int(cells["n_samples"])))
    return out


def raven_signals(ent: jax.Array, n_models: int, n: int, tau: float = 0.5) -> Dict[str, jax.Array]:
    """From pooled entailment matrices ``ent [P, K*n, K*n]`` to per-prompt ``entropy [P, K]``,
    ``divergence [P, K]``, ``score [P, K]``, ``clusters [P, K*n]``."""
    ids = cluster_bidirectional(ent, tau)
    dist = cluster_distribution(ids, n_models)
    H = semantic_entropy(dist)
    D = peer_divergence(dist)
    return {"entropy": H, "divergence": D, "score": suspicion(H, D, n), "clusters": ids}


def cell_means(x: jax.Array, topic: np.ndarray, n_topics: int) -> jax.Array:
    """``x [P, K]`` per prompt -> ``[K, n_topics]`` mean over each topic's prompts."""
    oh = jax.nn.one_hot(jnp.asarray(topic), n_topics)          # [P, T]
    return (x.T @ oh) / jnp.maximum(oh.sum(0), 1.0)


def threshold_at_fpr(clean_scores, fpr: float = 0.05) -> float:
    """Smallest threshold ``t`` among the clean scores with ``mean(clean > t) <= fpr``."""
    s = np.sort(np.asarray(clean_scores, np.float64).ravel())
    if s.size == 0:
        raise ValueError("threshold_at_fpr needs at least one clean score")
    for t in s:
        if np.mean(s > t) <= fpr:
            return float(t)
    return float(s[-1])


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve (Mann-Whitney U with ties counted 1/2,
    :func:`poisonjax.core.metrics.roc_auc` on the positives and negatives); equals
    ``sklearn.metrics.roc_auc_score``. ``nan`` if one class is absent."""
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, np.float64).ravel()
    pos, neg = s[y], s[~y]
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    return core_roc_auc(pos, neg)


def tpr_at_threshold(labels, scores, threshold: float) -> Dict[str, float]:
    """``detection_tpr`` and ``detection_fpr`` of ``score > threshold``."""
    y = np.asarray(labels).astype(bool).ravel()
    f = np.asarray(scores).ravel() > threshold
    return {"detection_tpr": float(f[y].mean()) if y.any() else float("nan"),
            "detection_fpr": float(f[~y].mean()) if (~y).any() else float("nan")}


def panel_signals(judge, answers: Sequence[Sequence[Sequence[str]]], topic: np.ndarray, n_topics: int,
                  tau: float = 0.5, rule: str = "product", calibration: Calibration = None) -> Dict[str, np.ndarray]:
    """Whole pipeline for one panel. ``answers[k][p]`` = the ``n`` answer strings of model ``k`` on
    prompt ``p``. Returns per-cell ``entropy``, ``divergence``, ``score`` ``[K, n_topics]`` (by
    ``rule``, :func:`with_score`; ``"and"`` needs the ``calibration`` of clean panels, so a first
    pass over them runs with ``"product"``), ``n_samples`` and the per-prompt arrays."""
    K, P, n = len(answers), len(answers[0]), len(answers[0][0])
    # one stance/entailment evaluation per distinct pooled prompt: [P, K*n, K*n]
    ent = np.stack([judge.matrix([a for k in range(K) for a in answers[k][p]]) for p in range(P)])
    sig = raven_signals(jnp.asarray(ent), K, n, tau)
    cells = {k: np.asarray(cell_means(sig[k], topic, n_topics)) for k in ("entropy", "divergence")}
    cells["n_samples"] = n
    cells["entropy_gap"] = entropy_gap(cells["entropy"]) if K >= 2 else np.zeros_like(cells["entropy"])
    cells = with_score(cells, rule, calibration)
    cells["prompt_entropy"] = np.asarray(sig["entropy"])
    cells["prompt_divergence"] = np.asarray(sig["divergence"])
    return cells


def leave_one_out_panels(names: Sequence[str]) -> list:
    """The panel itself and its ``K`` sub-panels of ``K-1`` models (each a tuple of names; ``K >= 3``
    so every sub-panel still has peers)."""
    names = tuple(names)
    out = [names]
    if len(names) >= 3:
        out += [tuple(x for j, x in enumerate(names) if j != i) for i in range(len(names))]
    return out


def pooled_threshold(cell_scores: Sequence[np.ndarray], fpr: float = 0.05) -> float:
    r"""*Pooled score calibration*: the :func:`threshold_at_fpr` of the clean cell scores of several
    panels pooled (e.g. a panel and its leave-one-out sub-panels, :func:`leave_one_out_panels`).

    Why: a 5% quantile set on one panel of ``K x T`` cells (48 here) rests on its top 2 cells; its
    true false-positive rate is spread like a Beta(3, 46) variable (mean 0.06, sd 0.03), and a
    divergence to ``K-1`` pooled peers is noisier, hence larger, on smaller panels. Pooling the
    panel's sub-panels (sizes ``K`` and ``K-1``) quadruples the cells behind the quantile and mixes
    panel sizes, so the threshold carries over to panels of other sizes."""
    return threshold_at_fpr(np.concatenate([np.asarray(s, np.float64).ravel() for s in cell_scores]), fpr)


def binomial_interval(k: int, n: int, z: float = 1.96) -> tuple:
    """Wilson score interval of a proportion ``k / n`` (95% by default)."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (float(c - h), float(c + h))
