r"""Poison-sample detectors: each a pure function returning a :class:`DetectionReport`
(per-sample suspicion ``scores [N]``, higher = more suspicious, and boolean ``flags [N]``).

* :func:`activation_clustering` -- Chen et al., "Detecting backdoor attacks on deep neural networks
  by activation clustering", SafeAI 2019: per class, the penultimate features are reduced to 10
  dimensions by FastICA and split by 2-means; the smaller cluster is flagged when its relative size is
  below ``size_threshold`` (0.35, ART's default). All classes are processed at once (``vmap`` over
  classes with masks).
* :func:`spectral_signatures` -- Tran, Li & Madry, NeurIPS 2018: per class, the score of a sample is
  its squared projection on the top singular vector of the centred features,
  :math:`\tau_i = \langle h_i - \bar h_c, v_c\rangle^2`; ``1.5 x poison_budget x N`` samples are removed.
* :func:`strip` -- Gao et al., "STRIP", ACSAC 2019: the entropy of the model's prediction on the input
  superimposed with ``n_overlay`` random clean images; triggered inputs keep predicting the target
  (low entropy).
* :func:`abl_isolation` -- Li et al., "Anti-backdoor learning", NeurIPS 2021, isolation stage: train
  with the local gradient ascent (LGA) loss :math:`\mathrm{sign}(\mathcal{L}-\gamma)\mathcal{L}` and
  isolate the ``isolation_ratio`` lowest-loss samples (backdoor samples are learnt fastest).

Metrics: :func:`detection_rates` (TPR/FPR of flags), :func:`tpr_at_fpr` (TPR at a fixed FPR of the
scores), :func:`flag_top_k`.
SPECTRE (robust covariance + QUE) is :func:`poisonjax.vision.backdoor.spectre.spectre`; Confusion Training
(Qi et al. USENIX Sec 2023) is :func:`poisonjax.vision.backdoor.confusion.confusion_training`.
"""
from __future__ import annotations

import functools
from typing import Callable, Dict, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from poisonjax.core.validation import PoisonJaxInputError, check_fraction, check_positive_int


class DetectionReport(NamedTuple):
    """``scores [N]`` (higher = more suspicious), ``flags [N]`` bool, ``info`` (per-method details)."""

    scores: jax.Array
    flags: jax.Array
    info: Dict


def check_features(features, labels, num_classes):
    """Validate ``features [N, D]`` (finite) and ``labels [N]`` in ``[0, num_classes)``; returns jnp arrays."""
    f = jnp.asarray(features, jnp.float32)
    if f.ndim != 2:
        raise PoisonJaxInputError(f"features must be [N, D], got shape {tuple(f.shape)}")
    lab = np.asarray(labels)
    if lab.shape != (f.shape[0],):
        raise PoisonJaxInputError(f"labels must have shape ({f.shape[0]},), got {lab.shape}")
    if lab.size and (lab.min() < 0 or lab.max() >= num_classes):
        raise PoisonJaxInputError(f"labels must lie in [0, {num_classes}), got [{lab.min()}, {lab.max()}]")
    if not np.all(np.isfinite(np.asarray(f))):
        raise PoisonJaxInputError("features contain NaN/inf")
    return f, jnp.asarray(labels)


_check_features = check_features


def flag_top_k(scores: jax.Array, k: int, name: str = "k") -> jax.Array:
    """Boolean flags of the ``k`` highest scores; ``k`` must be in [0, N]."""
    n = int(np.shape(scores)[0])
    if not (0 <= int(k) <= n):
        raise PoisonJaxInputError(f"{name} asks for {int(k)} flags but there are only {n} samples")
    idx = jax.lax.top_k(jnp.asarray(scores), int(k))[1]
    return jnp.zeros((n,), bool).at[idx].set(True)


def detection_rates(flags, poison_mask):
    """``(tpr, fpr)``: flagged fraction of the poisoned rows and of the clean rows."""
    f, p = np.asarray(flags, bool), np.asarray(poison_mask, bool)
    tpr = float(f[p].mean()) if p.any() else float("nan")
    fpr = float(f[~p].mean()) if (~p).any() else float("nan")
    return tpr, fpr


def tpr_at_fpr(scores, poison_mask, fpr: float = 0.05) -> float:
    """TPR at the threshold that flags ``fpr`` of the clean rows (the ``1 - fpr`` quantile of clean
    scores; strict ``>``)."""
    s, p = np.asarray(scores, np.float64), np.asarray(poison_mask, bool)
    if not p.any() or p.all():
        return float("nan")
    thr = np.quantile(s[~p], 1.0 - fpr)
    return float((s[p] > thr).mean())


# ------------------------------------------------------------------ Activation Clustering -----

def _masked_pca_whiten(f, m, dims):
    n = jnp.maximum(m.sum(), 1.0)
    mu = (f * m[:, None]).sum(0) / n
    xc = (f - mu) * m[:, None]
    cov = xc.T @ xc / n
    lam, vec = jnp.linalg.eigh(cov)
    lam, vec = lam[::-1][:dims], vec[:, ::-1][:, :dims]
    return xc @ vec / jnp.sqrt(jnp.maximum(lam, 1e-8))          # [N, dims], unit variance on the class


def _sym_decorrelate(w):
    s, u = jnp.linalg.eigh(w @ w.T)
    return u @ jnp.diag(1.0 / jnp.sqrt(jnp.maximum(s, 1e-12))) @ u.T @ w


def fastica(z, m, key, iters: int = 200):
    r"""FastICA (Hyvärinen 1999), parallel/symmetric, logcosh contrast, on whitened ``z [N, d]``
    restricted to rows with ``m = 1``: :math:`W \leftarrow E[g(Wz) z^\top] - E[g'(Wz)] W`,
    :math:`W \leftarrow (WW^\top)^{-1/2} W`, ``iters`` fixed iterations. Returns the sources ``[N, d]``."""
    d = z.shape[1]
    n = jnp.maximum(m.sum(), 1.0)
    w0 = _sym_decorrelate(jax.random.normal(key, (d, d)))

    def body(w, _):
        u = z @ w.T                                                  # [N, d]
        g, gp = jnp.tanh(u), 1 - jnp.tanh(u) ** 2
        w_new = (g * m[:, None]).T @ z / n - ((gp * m[:, None]).sum(0) / n)[:, None] * w
        return _sym_decorrelate(w_new), None

    w, _ = jax.lax.scan(body, w0, None, length=iters)
    return z @ w.T


def _kmeans2(s, m, key, iters: int = 30, restarts: int = 5):
    """Masked 2-means (Lloyd) with ``restarts`` random initial pairs; the lowest inertia wins."""
    def one(k):
        p = m / jnp.maximum(m.sum(), 1.0)
        ids = jax.random.choice(k, s.shape[0], (2,), replace=False, p=p)
        c0 = s[ids]

        def body(c, _):
            d = ((s[:, None, :] - c[None]) ** 2).sum(-1)            # [N, 2]
            a = jnp.argmin(d, 1)
            oh = jax.nn.one_hot(a, 2) * m[:, None]
            cnt = oh.sum(0)
            newc = (oh.T @ s) / jnp.maximum(cnt, 1.0)[:, None]
            return jnp.where(cnt[:, None] > 0, newc, c), None

        c, _ = jax.lax.scan(body, c0, None, length=iters)
        d = ((s[:, None, :] - c[None]) ** 2).sum(-1)
        return c, (d.min(1) * m).sum()
    cs, inert = jax.vmap(one)(jax.random.split(key, restarts))
    return cs[jnp.argmin(inert)]


def activation_clustering(features, labels, num_classes: int, *, n_components: int = 10,
                          size_threshold: float = 0.35, key: Optional[jax.Array] = None,
                          ica_iters: int = 200) -> DetectionReport:
    r"""Activation Clustering (Chen et al. 2019).

    For every class :math:`c` (all at once, ``vmap`` with masks): centre the features of the rows
    labelled :math:`c`, project on the top ``n_components`` principal directions and whiten, run
    :func:`fastica`, then 2-means. With :math:`A` the smaller cluster and :math:`r_A = |A|/n_c` its
    relative size, rows in :math:`A` are flagged when :math:`r_A <` ``size_threshold`` (the paper's
    relative-size analysis). Score of row :math:`i` (for ranking across classes):
    :math:`\bar s_c \tanh(\mu_i / \bar{|\mu|}_c)` with the margin
    :math:`\mu_i = \|s_i - \mu_B\| - \|s_i - \mu_A\|` (positive nearer the small cluster) and
    :math:`\bar s_c` the class's mean simplified silhouette :math:`(b_i - a_i)/\max(a_i, b_i)` (own /
    other centroid distances): well-separated classes (the paper's silhouette analysis) rank first.
    Note: ICA whitens and rotates, and k-means is rotation invariant, so the ICA step matters only
    through the clustering's initialisation; it is kept to follow the paper.

    Args:
      features: ``[N, D]`` penultimate activations; labels: ``[N]`` (the poisoned set's labels).
    """
    f, lab = _check_features(features, labels, num_classes)
    n_components = check_positive_int("n_components", n_components)
    size_threshold = check_fraction("size_threshold", size_threshold)
    dims = min(n_components, f.shape[1])
    key = jax.random.PRNGKey(0) if key is None else key

    sc, fl, (rel, sil) = _ac_core(f, lab, key, num_classes, dims, float(size_threshold), int(ica_iters))
    return DetectionReport(sc, fl, {"relative_size": rel, "silhouette": sil})


@functools.partial(jax.jit, static_argnums=(3, 4, 5, 6))
def _ac_core(f, lab, key, num_classes, dims, size_threshold, ica_iters):
    def per_class(c, k):
        m = (lab == c).astype(jnp.float32)
        z = _masked_pca_whiten(f, m, dims)
        k1, k2 = jax.random.split(k)
        s = fastica(z, m, k1, ica_iters)
        cen = _kmeans2(s, m, k2)
        d = ((s[:, None, :] - cen[None]) ** 2).sum(-1)
        a = jnp.argmin(d, 1)
        cnt = (jax.nn.one_hot(a, 2) * m[:, None]).sum(0)
        small = jnp.argmin(cnt)
        r = cnt[small] / jnp.maximum(m.sum(), 1.0)
        db, ds_ = jnp.take(d, 1 - small, axis=1), jnp.take(d, small, axis=1)
        margin = jnp.sqrt(db) - jnp.sqrt(ds_)
        own, other = jnp.sqrt(jnp.min(d, 1)), jnp.sqrt(jnp.max(d, 1))
        sil = ((other - own) / jnp.maximum(other, 1e-12) * m).sum() / jnp.maximum(m.sum(), 1.0)
        scale = (jnp.abs(margin) * m).sum() / jnp.maximum(m.sum(), 1.0)
        flag = (a == small) & (r < size_threshold) & (m > 0)
        return jnp.where(m > 0, sil * jnp.tanh(margin / jnp.maximum(scale, 1e-12)), 0.0), flag, (r, sil)

    classes = jnp.arange(num_classes)
    sc, fl, rel = jax.vmap(per_class)(classes, jax.random.split(key, num_classes))
    return sc.sum(0), fl.any(0), rel


# ------------------------------------------------------------------ Spectral Signatures -------

def spectral_scores(features, labels, num_classes: int) -> jax.Array:
    r"""Per-row :math:`\tau_i = \langle h_i - \bar h_{y_i}, v_{y_i}\rangle^2` with :math:`v_c` the top
    right singular vector of class :math:`c`'s centred feature matrix, divided by the variance along
    the class's *second* singular direction :math:`\lambda_2 / n_c`, so that classes compare and a
    class with a spectral gap (a dominant poison direction) ranks first (Tran et al. rank within a
    label)."""
    f, lab = _check_features(features, labels, num_classes)
    return _ss_core(f, lab, num_classes)


@functools.partial(jax.jit, static_argnums=(2,))
def _ss_core(f, lab, num_classes):
    def per_class(c):
        m = (lab == c).astype(jnp.float32)
        n = jnp.maximum(m.sum(), 1.0)
        mu = (f * m[:, None]).sum(0) / n
        xc = (f - mu) * m[:, None]
        lam, vec = jnp.linalg.eigh(xc.T @ xc)
        t = (xc @ vec[:, -1]) ** 2
        return jnp.where(m > 0, t / jnp.maximum(lam[-2] / n, 1e-12), 0.0)

    return jax.vmap(per_class)(jnp.arange(num_classes)).sum(0)


def spectral_signatures(features, labels, num_classes: int, *, poison_budget: float,
                        multiplier: float = 1.5) -> DetectionReport:
    r"""Spectral Signatures (Tran et al. 2018): :func:`spectral_scores`, then flag the
    ``round(multiplier * poison_budget * N)`` highest-scoring rows.

    Deviation: the paper removes :math:`1.5\epsilon n_c` rows *per label* with :math:`\epsilon` the
    poison fraction of that label; not knowing the target class, we rank all rows by the
    class-normalised scores and remove :math:`1.5\times` the poison budget in total.
    ``poison_budget`` is the expected poisoned fraction of the set, in [0, 1]."""
    poison_budget = check_fraction("poison_budget", poison_budget, low_inclusive=True)
    s = spectral_scores(features, labels, num_classes)
    k = int(round(multiplier * poison_budget * s.shape[0]))
    return DetectionReport(s, flag_top_k(s, k, "poison_budget * multiplier"), {"removed": k})


# ------------------------------------------------------------------ STRIP ---------------------

def strip_entropy(logits_fn: Callable[[jax.Array], jax.Array], x: jax.Array, clean_pool: jax.Array,
                  key: jax.Array, n_overlay: int = 16, blend: Optional[float] = None, batch_size: int = 256) -> jax.Array:
    r"""STRIP's entropy :math:`H(x) = -\frac{1}{n}\sum_{j=1}^{n}\sum_c p_c(x^{(j)}) \log p_c(x^{(j)})`
    with the superposition :math:`x^{(j)} = \mathrm{clip}_{[0,1]}(x + x_{\pi_j})` (the paper's
    ``addWeighted(x, 1, x_j, 1)``; or :math:`(1-b)x + b\,x_{\pi_j}` with ``blend=b``),
    :math:`x_{\pi_j}` random images of ``clean_pool``. ``x [N, H, W, C]`` -> ``[N]``."""
    n = x.shape[0]
    idx = jax.random.randint(key, (n, n_overlay), 0, clean_pool.shape[0])

    def ent(xb, ib):
        ov = clean_pool[ib]                                                     # [B, n, H, W, C]
        mix = jnp.clip(xb[:, None] + ov, 0, 1) if blend is None else (1 - blend) * xb[:, None] + blend * ov
        lg = logits_fn(mix.reshape((-1,) + x.shape[1:]))
        lp = jax.nn.log_softmax(lg, -1)
        h = -(jnp.exp(lp) * lp).sum(-1).reshape(xb.shape[0], n_overlay)
        return h.mean(1)

    out = [ent(x[i:i + batch_size], idx[i:i + batch_size]) for i in range(0, n, batch_size)]
    return jnp.concatenate(out)


def strip(logits_fn, x, clean_pool, key, *, n_overlay: int = 16, frr: float = 0.05, blend: Optional[float] = None,
          clean_reference: Optional[jax.Array] = None) -> DetectionReport:
    r"""STRIP (Gao et al. 2019): score :math:`-H(x)`; flag rows whose entropy is below the ``frr``
    quantile of the entropies of ``clean_reference`` (default ``clean_pool``), the false-rejection
    rate the defender accepts on clean inputs."""
    frr = check_fraction("frr", frr)
    n_overlay = check_positive_int("n_overlay", n_overlay)
    k1, k2 = jax.random.split(key)
    h = strip_entropy(logits_fn, x, clean_pool, k1, n_overlay, blend)
    ref = clean_pool if clean_reference is None else clean_reference
    thr = jnp.quantile(strip_entropy(logits_fn, ref, clean_pool, k2, n_overlay, blend), frr)
    return DetectionReport(-h, h < thr, {"threshold": thr})


# ------------------------------------------------------------------ ABL isolation -------------

def abl_isolation(module, variables, x, y, key, *, epochs: int = 10, batch_size: int = 128,
                  learning_rate: float = 0.01, gamma: float = 0.5, isolation_ratio: float = 0.01,
                  augment: bool = False) -> DetectionReport:
    r"""ABL's isolation stage (Li et al. 2021): train ``variables`` (a freshly initialised victim) for
    ``epochs`` with LGA, :math:`\mathrm{sign}(\mathcal{L}_B - \gamma)\mathcal{L}_B` (batch-mean CE
    held near ``gamma``), then score each row by its negative loss and flag the
    ``round(isolation_ratio * N)`` lowest-loss rows. ``info["variables"]`` is the trained model."""
    from poisonjax.vision.backdoor.victim import fit, make_optimizer, predict
    import optax
    isolation_ratio = check_fraction("isolation_ratio", isolation_ratio)
    v = fit(module, variables, x, y, key, epochs=epochs, batch_size=batch_size,
            optimizer=make_optimizer(learning_rate), lga_gamma=gamma, augment=augment)
    loss = optax.softmax_cross_entropy_with_integer_labels(predict(module, v, x), y)
    k = int(round(isolation_ratio * x.shape[0]))
    return DetectionReport(-loss, flag_top_k(-loss, k, "isolation_ratio"), {"variables": v})
