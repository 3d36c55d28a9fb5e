r"""GeminiGuard (Lyu et al., 2025, "Two Heads Are Better than One: Model-Weight and Latent-Space
Analysis for Federated Learning on Non-iid Data against Poisoning Attacks", arXiv:2503.23288).

An unsupervised, server-side defense against untargeted and targeted model-poisoning attacks under
non-IID data, built from two complementary analyses whose outlier decisions are fused:

**Model-weight analysis (MWA)** on the full client weights :math:`W_i = w_g + \Delta_i \in \mathbb R^d`
(:func:`weight_statistics`). With the coordinate-wise median :math:`\tilde W` and the coordinate-wise
scaled MAD :math:`\sigma_j = 1.4826\,\mathrm{med}_i |W_{ij} - \tilde W_j|` over the valid clients, and
the robust per-coordinate profile :math:`z_{ij} = (W_{ij} - \tilde W_j)/\sigma_j`, five statistics:

- *magnitude* :math:`m_i = \|W_i - \tilde W\|_2` (scaling / model replacement, Gaussian, IPM with
  large epsilon, Fang);
- *direction* :math:`a_i = 1 - \cos(W_i - w_g,\ \tilde W - w_g)`, the cosine distance of the
  client's weight displacement from the global model to the median displacement (sign flipping,
  IPM, Min-Max/Min-Sum with the unit/sign directions);
- *coherence* :math:`h_i = |\frac{1}{|J|}\sum_{j \in J} \mathrm{sign}(z_{ij})|` over the informative
  coordinates :math:`J` (:math:`\sigma_j > 0`): how consistently a client sits on one side of the
  median. A benign non-IID client deviates from the median in many coordinates in both directions
  (:math:`h_i \approx 0`); statistical attacks that craft :math:`\mu \pm \gamma\,\sigma`-type updates
  (LIE, Min-Max/Min-Sum with the std direction) deviate coherently (:math:`h_i \to 1`). The sign
  form is used because a mean/RMS ratio is dominated by the few heavy-tailed coordinates of non-IID
  updates.
- *extremity* :math:`e_i = \mathrm{med}_{j \in J} |z_{ij}|`, the client's typical per-coordinate
  deviation in units of the benign spread: about 0.67 for a benign client, about 2 or more for an
  update that sits beyond the benign extremes in most coordinates (Fang et al.'s trimmed-mean/median
  attack, scaled or noisy updates); a median over coordinates, so the heavy-tailed coordinates of
  non-IID updates do not dominate it;
- *crowding* :math:`k_i = -\log(\min_{j \ne i}\|W_i - W_j\| + \epsilon\,\mathrm{med}_i \min_{j\ne i}\|W_i - W_j\|)`:
  benign non-IID clients never coincide, while colluding attackers that share one crafted update
  (LIE, Min-Max, Min-Sum, IPM, Fang, the adaptive attack) form a (near-)duplicate cluster -- the
  dense-cluster signal of clustering defenses such as FLAME, as a per-client score.

Each statistic becomes a robust z-score across the valid clients,
:math:`\zeta(s)_i = (s_i - \mathrm{med}(s)) / \max(1.4826\,\mathrm{MAD}(s), \text{floor})` (for the
bounded coherence and the extremity the floor is ``coherence_floor`` = 0.05, since benign values cluster at 0 with a
tiny MAD; otherwise a relative 1e-6), and the MWA score is
:math:`S^W_i = \max(\zeta(m)_i, \zeta(a)_i, \zeta(h)_i, \zeta(g)_i, \zeta(k)_i,\ \tfrac{\tau_W}{\tau_{sum}}\sum_k \zeta_k(\cdot)_i^+)`
(one-sided: only *large* values are suspicious; the last term accumulates moderate evidence over
several statistics, ``tau_sum`` = 6 by default).

**Quantity skew** (``scale_invariant=True``, the default): Dirichlet partitions give some benign
clients ten times the data, hence ten times the local steps, of others; their raw updates then sit
beyond the median in every coordinate and their models far out in latent space, like attacks. So
the profile statistics (coherence, extremity) and the latent head work on norm-equalised updates
:math:`\Delta_i\,\mathrm{med}_j\|\Delta_j\|/\|\Delta_i\|` (the update's shape, not its size), and the
magnitude statistic is :math:`\log\|W_i - \tilde W\|` with a robust scale of at least 0.3 (so at
:math:`\tau_W = 4` an update must be over :math:`e^{1.2} \approx 3.3` times the median deviation when
benign sizes barely vary; when they vary more, the measured spread sets the bar), which flags
multiplicative outliers (model replacement boosts by n/f = 5x or more) rather than the spread of
benign sizes. On digits at alpha 0.1 with no
attack this cuts false flags from about 2 to 0.1 clients per round (20 clients).

**Latent-space analysis (LSA)** on the penultimate-layer representations (PLRs) of the server's
auxiliary samples, ``features [n, A, h]`` = each client model :math:`W_i` applied to the same A
samples (:func:`latent_statistics`). Pairwise squared MMD (Gaussian kernel, median bandwidth; the
FLARE measure, Wang et al. 2022), and per client the mean MMD to its :math:`k` nearest clients
(:math:`k = \lfloor n_{valid}/2 \rfloor` as in FLARE). The LSA score is its robust z-score :math:`S^L_i`.

**Fusion** (:func:`geminiguard`): a client is flagged when

- ``fusion="union"`` (default): :math:`S^W_i > \tau_W` **or** :math:`S^L_i > \tau_L` (an outlier in either
  view -- the issue's and the paper's "two heads" rule);
- ``fusion="intersection"``: both;
- ``fusion="sum"``: :math:`S^W_i + S^L_i > \tau_W + \tau_L`;
- ``fusion="weight"`` / ``"latent"``: one head only (ablations).

Kept clients are averaged (data-size weights if given); with ``clip=True`` (default False) each kept
update is first clipped to the median norm of the kept updates (bounding what a non-flagged attacker can do).
If everything would be flagged, the client(s) with the lowest fused score are kept.

Reconstruction note (read this): the paper's text available to us (abstract, summaries) states the
two components -- a *novel* model-weight analysis on full weights and a *custom* latent-space
analysis on PLRs with MMD-based trust (FLARE's successor) -- combined with adaptive (data-driven)
thresholds, but not the exact statistics or fusion formula. The five MWA statistics, the robust
MAD z-scores as the adaptive threshold (default 4), the kNN-MMD latent score and the union fusion
are our reconstruction, chosen because each targets one family of attacks while staying calm on
heterogeneous benign clients (checked on digits at alpha 0.1-1.0). Magnitude, coherence and
crowding are translation-invariant, so they are identical on :math:`W_i` and :math:`\Delta_i`; the
direction statistic is measured on weights relative to the global model. Simplified: no
PCA/clustering stage, no trust-weighted (softmax) averaging. Known blind spots: unboosted sign
flipping of a few clients, and colluders who decorrelate their updates *and* stay within the
benign spread (see :func:`adaptive_against_geminiguard`). Trade-off of ``scale_invariant`` measured
on digits at alpha 0.1 (20 clients, 4 attackers, seed 0): with it, no false flags without attack
and Fang's attack caught (recall 0.93), but boosted attacks whose size sits inside the benign
quantity-skew spread are partly missed (model replacement x5: recall 0.09, backdoor ASR 1.0;
sign flip x4: recall 0.5); with ``scale_invariant=False`` those are caught better (recall 0.63 and
0.83) at the price of about two benign clients flagged every round, the same large ones, which
costs 5-9 points of accuracy. At alpha 0.5 both settings catch all of them.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from poisonjax.core.validation import PoisonJaxInputError, check_choice
from poisonjax.federated.aggregators.base import (Aggregator, aggregator_fn, masked_median, mmd2_matrix,
                                                  pairwise_sq_distances, weighted_mean)

FUSIONS = ("union", "intersection", "sum", "weight", "latent")
_MAD = 1.4826


def robust_z(s: jax.Array, valid: jax.Array, eps: float = 1e-6, floor: float = 0.0) -> jax.Array:
    r"""``[n] -> [n]``: :math:`(s_i - \mathrm{med}) / \max(1.4826\,\mathrm{MAD},\ \text{floor},\ \epsilon(|\mathrm{med}| + 1))`
    over the ``valid`` entries (0 for invalid ones)."""
    med = masked_median(s[:, None], valid)[0]
    mad = masked_median(jnp.abs(s - med)[:, None], valid)[0]
    z = (s - med) / jnp.maximum(jnp.maximum(_MAD * mad, floor), eps * (jnp.abs(med) + 1.0))
    return jnp.where(valid, z, 0.0)


def equalise_norms(x: jax.Array, valid: jax.Array) -> jax.Array:
    r"""``[n, d] -> [n, d]``: :math:`\Delta_i \cdot \mathrm{med}_{j\ valid}\|\Delta_j\| / \|\Delta_i\|`, every
    update rescaled to the median update norm (direction kept)."""
    norms = jnp.linalg.norm(x, axis=1)
    med = masked_median(norms[:, None], valid)[0]
    return x * (med / jnp.maximum(norms, 1e-12))[:, None]


def weight_statistics(w: jax.Array, valid: jax.Array, w_global: Optional[jax.Array] = None,
                      coherence_floor: float = 0.05, scale_invariant: bool = False, sum_scale: float = 0.0) -> dict:
    r"""MWA statistics of full client weights ``w [n, d]`` (see module docstring).

    With ``scale_invariant`` (needs ``w_global``) the per-coordinate profile (coherence, extremity) is
    computed on norm-equalised weights :math:`w_g + \Delta_i\,\mathrm{med}_j\|\Delta_j\| / \|\Delta_i\|`
    and the magnitude statistic on :math:`\log\|W_i - \tilde W\|` (see :func:`geminiguard`).

    Returns ``magnitude [n]``, ``direction [n]`` (needs ``w_global [d]``; zeros otherwise),
    ``coherence [n]``, ``extremity [n]``, ``crowding [n]`` and the per-statistic robust z-scores
    ``z_magnitude``, ``z_direction``, ``z_coherence``, ``z_extremity``, ``z_crowding``; ``score [n]`` =
    their maximum, or ``sum_scale`` times the sum of their positive parts if that is larger (evidence
    accumulated over several statistics, see :func:`geminiguard`'s ``tau_sum``).
    """
    w = w.astype(jnp.float32)
    w_raw = w
    if scale_invariant and w_global is not None:
        w = w_global[None, :] + equalise_norms(w - w_global[None, :], valid)
    med = masked_median(w, valid)                                         # [d]
    mad = masked_median(jnp.abs(w - med[None, :]), valid)                 # [d]
    dev = w - med[None, :]
    if scale_invariant and w_global is not None:
        raw_med = masked_median(w_raw, valid)
        magnitude = jnp.log(jnp.linalg.norm(w_raw - raw_med[None, :], axis=1) + 1e-30)
    else:
        magnitude = jnp.linalg.norm(dev, axis=1)
    scale = _MAD * mad
    # coordinates with no spread among clients carry no information: leave them out of the profile
    informative = scale > 1e-12 * (jnp.max(scale) + 1e-30)
    z = jnp.where(informative[None, :], dev / jnp.where(informative, scale, 1.0)[None, :], 0.0)
    cnt = jnp.maximum(jnp.sum(informative), 1)
    coherence = jnp.abs(jnp.sum(jnp.sign(z), axis=1)) / cnt
    extremity = jnp.nanmedian(jnp.where(informative[None, :], jnp.abs(z), jnp.nan), axis=1)
    extremity = jnp.where(jnp.isfinite(extremity), extremity, 0.0)
    if w_global is not None:
        disp = w_raw - w_global[None, :]
        ref = med - w_global
        cos = (disp @ ref) / jnp.maximum(jnp.linalg.norm(disp, axis=1) * jnp.linalg.norm(ref), 1e-12)
        direction = 1.0 - cos
    else:
        direction = jnp.zeros(w.shape[0], jnp.float32)
    n = w.shape[0]
    d2 = pairwise_sq_distances(w_raw - med[None, :])
    both = valid[:, None] & valid[None, :] & ~jnp.eye(n, dtype=bool)
    nn = jnp.sqrt(jnp.min(jnp.where(both, d2, jnp.inf), axis=1))
    nn = jnp.where(jnp.isfinite(nn), nn, 0.0)
    nn_med = masked_median(nn[:, None], valid)[0]
    crowding = -jnp.log(nn + 1e-3 * nn_med + 1e-30)
    # log scale: a benign spread of sizes is not suspicious; flag only multiplicative outliers, i.e. at
    # tau = 4 an update more than e^(4 * 0.3) ~ 3.3x the median deviation when the sizes barely vary
    zm = robust_z(magnitude, valid, floor=0.3 if (scale_invariant and w_global is not None) else 0.0)
    za = robust_z(direction, valid)
    zh = robust_z(coherence, valid, floor=coherence_floor)
    zg = robust_z(extremity, valid, floor=coherence_floor)
    zk = robust_z(crowding, valid, floor=0.1)
    score = jnp.maximum(jnp.maximum(jnp.maximum(zm, za), jnp.maximum(zh, zk)), zg)
    pos = sum(jnp.maximum(v, 0.0) for v in (zm, za, zh, zg, zk))
    score = jnp.maximum(score, sum_scale * pos)
    return dict(magnitude=magnitude, direction=direction, coherence=coherence, extremity=extremity,
                crowding=crowding, z_magnitude=zm, z_direction=za, z_coherence=zh, z_extremity=zg, z_crowding=zk,
                score=jnp.where(valid, score, jnp.inf))


def latent_statistics(features: jax.Array, valid: jax.Array, k: Optional[int] = None,
                      bandwidth: Optional[float] = None) -> dict:
    r"""LSA statistics of PLRs ``features [n, A, h]``: ``mmd [n, n]`` (squared MMD), ``knn_mmd [n]``
    (mean MMD² to the ``k`` nearest valid clients, default :math:`\lfloor n_{valid}/2\rfloor`) and its
    robust z-score ``score [n]``."""
    n = features.shape[0]
    m2 = mmd2_matrix(features, bandwidth)
    both = valid[:, None] & valid[None, :] & ~jnp.eye(n, dtype=bool)
    srt = jnp.sort(jnp.where(both, m2, jnp.inf), axis=1)
    kv = jnp.sum(valid).astype(jnp.int32)
    kk = jnp.clip(kv // 2 if k is None else jnp.int32(k), 1, jnp.maximum(kv - 1, 1))
    take = jnp.arange(n)[None, :] < kk
    knn = jnp.sum(jnp.where(take & jnp.isfinite(srt), srt, 0.0), axis=1) / kk
    score = robust_z(knn, valid)
    return dict(mmd=m2, knn_mmd=knn, score=jnp.where(valid, score, jnp.inf))


def fuse(score_w: jax.Array, score_l: jax.Array, valid: jax.Array, *, fusion: str = "union",
         tau_weight: float = 4.0, tau_latent: float = 4.0) -> jax.Array:
    """``[n]`` bool flags from the two heads' robust scores (see module docstring)."""
    check_choice("fusion", fusion, FUSIONS)
    fw, fl = score_w > tau_weight, score_l > tau_latent
    flags = {"union": fw | fl, "intersection": fw & fl, "sum": (score_w + score_l) > (tau_weight + tau_latent),
             "weight": fw, "latent": fl}[fusion]
    return flags & valid


@aggregator_fn()
def geminiguard(x, valid, state, key, context, weights, *, features=None, w_global=None, fusion: str = "union",
                tau_weight: float = 4.0, tau_latent: float = 4.0, k: Optional[int] = None, clip: bool = False,
                bandwidth: Optional[float] = None, coherence_floor: float = 0.05, scale_invariant: bool = True,
                tau_sum: Optional[float] = 6.0):
    r"""GeminiGuard aggregation ``(aggregate, state, report)`` (module docstring has the math).

    Args (besides the engine's common ones):
      x: ``[n, d]`` client updates :math:`\Delta_i` (the decorator accepts pytrees too).
      features: ``[n, A, h]`` PLRs of each client model on the server's auxiliary samples; default
        ``context.client_features(x)`` (the simulation provides it).
      w_global: ``[d]`` flattened global weights :math:`w_g`; default from ``context.global_params``
        (zeros if neither is given: the weight statistics are then computed on the updates).
      fusion: one of :data:`FUSIONS`; ``tau_weight``, ``tau_latent``: robust-z thresholds.
      k: neighbours for the latent kNN-MMD score (default half the valid clients).
      clip: clip kept updates to their median norm before averaging.
      coherence_floor: smallest scale of the coherence z-score (see module docstring).
      tau_sum: the weight head also flags a client whose positive robust z-scores *sum* over the five
        statistics to more than ``tau_sum`` (None: off), so ``score_weight`` is
        :math:`\max(\max_k \zeta_k,\ \tfrac{\tau_W}{\tau_{sum}}\sum_k \zeta_k^+)`. Attacks that are moderately
        unusual on several statistics at once (sign flipping, Fang's attack under strong non-IID: each
        z about 2-3) are caught, while a benign client is rarely unusual on more than one.
      scale_invariant: analyse each update's *shape*, not its size, wherever size is not the signal:
        the per-coordinate profile (coherence, extremity) and the latent head use norm-equalised
        updates :math:`\Delta_i\,\mathrm{med}_j\|\Delta_j\|/\|\Delta_i\|`, and the magnitude statistic is
        taken on a log scale. Under quantity skew (Dirichlet partitions give some clients 10x the data
        of others) a big benign client takes 10x the local steps, so its raw update is far from the
        median in every coordinate and its model far out in latent space, exactly like an attack;
        without this, GeminiGuard flags the same large benign clients round after round at alpha 0.1.
        Size attacks (scaling, noise, Fang) stay visible to the log-magnitude statistic, which sees
        multiplicative outliers (a 20x update) rather than the 2-3x spread of benign sizes.

    ``report``: ``scores`` (fused suspicion, higher = more suspicious: max of the two heads'
    z-scores), ``flags``, ``weights``, ``score_weight``, ``score_latent``, ``flags_weight``,
    ``flags_latent`` and the raw statistics.
    """
    n = x.shape[0]
    if n < 3:
        raise PoisonJaxInputError(f"geminiguard needs at least 3 clients for robust statistics, got {n}")
    check_choice("fusion", fusion, FUSIONS)
    if w_global is None:
        if context is not None:
            from poisonjax.federated.simulation import flatten_params
            w_global = flatten_params(context.global_params)
        else:
            w_global = jnp.zeros((x.shape[1],), jnp.float32)
    w_global = jnp.asarray(w_global, jnp.float32)
    if w_global.shape != (x.shape[1],):
        raise PoisonJaxInputError(f"w_global must have shape ({x.shape[1]},), got {w_global.shape}")
    full = w_global[None, :] + x
    ws = weight_statistics(full, valid, w_global, coherence_floor, scale_invariant,
                           float(tau_weight) / float(tau_sum) if tau_sum else 0.0)
    use_latent = fusion != "weight"
    if use_latent:
        if features is None:
            if context is None or getattr(context, "features_fn", None) is None:
                raise PoisonJaxInputError("geminiguard needs features=[n, A, h] or a context with features_fn and "
                                          "aux data (or fusion='weight')")
            features = context.client_features(equalise_norms(x, valid) if scale_invariant else x)
        features = jnp.asarray(features)
        if features.ndim != 3 or features.shape[0] != n:
            raise PoisonJaxInputError(f"features must have shape ({n}, A, h), got {features.shape}")
        ls = latent_statistics(features, valid, k, bandwidth)
        s_lat = ls["score"]
    else:
        ls = {}
        s_lat = jnp.where(valid, 0.0, jnp.inf)
    s_w = ws["score"]
    flags = fuse(s_w, s_lat, valid, fusion=fusion, tau_weight=tau_weight, tau_latent=tau_latent)
    fused = jnp.maximum(jnp.where(valid, s_w, -jnp.inf), jnp.where(valid, s_lat, -jnp.inf) if use_latent else -jnp.inf)
    keep = valid & ~flags
    # never drop everyone: fall back to the least suspicious valid client(s)
    best = valid & (fused <= jnp.min(jnp.where(valid, fused, jnp.inf)))
    keep = jnp.where(jnp.any(keep), keep, best)
    flags = valid & ~keep
    w = keep.astype(jnp.float32) if weights is None else jnp.where(keep, weights, 0.0)
    xs = x
    if clip:
        norms = jnp.linalg.norm(x, axis=1)
        med = masked_median(norms[:, None], keep)[0]
        xs = x * jnp.minimum(1.0, med / jnp.maximum(norms, 1e-12))[:, None]
    agg = weighted_mean(xs, w)
    report = dict(scores=jnp.where(valid, fused, jnp.inf), flags=flags, weights=w / jnp.maximum(w.sum(), 1e-12),
                  score_weight=s_w, score_latent=s_lat, flags_weight=valid & (s_w > tau_weight),
                  flags_latent=valid & (s_lat > tau_latent), magnitude=ws["magnitude"], direction=ws["direction"],
                  coherence=ws["coherence"], extremity=ws["extremity"], crowding=ws["crowding"])
    if use_latent:
        report["knn_mmd"] = ls["knn_mmd"]
    return agg, state, report


def make_aggregator(**hyper) -> Aggregator:
    """GeminiGuard as an :class:`~poisonjax.federated.aggregators.Aggregator` for the simulation
    (stateless; ``needs=("features",)`` unless ``fusion="weight"``)."""
    import functools
    fusion = hyper.get("fusion", "union")
    check_choice("fusion", fusion, FUSIONS)
    needs = () if fusion == "weight" else ("features",)
    return Aggregator("geminiguard", functools.partial(geminiguard, **hyper), lambda n, d: None, needs)


def adaptive_against_geminiguard(tau_weight: float = 4.0, tau_latent: float = 4.0, penalty: float = 10.0,
                                 direction: str = "unit", num_candidates: int = 16, gamma_max: float = 100.0,
                                 decorrelate: bool = True):
    r"""Adaptive attack optimised against both GeminiGuard scores (a model attack for the simulation).

    The attackers know GeminiGuard and run it in the loop (the engine's ``aggregator`` hook). They
    send :math:`m_i(\gamma) = \mu + \gamma p + \nu_i` (benign mean :math:`\mu`, direction :math:`p`
    from ``direction`` as in Min-Max) and pick, on a geometric grid of :math:`\gamma` (plus 0), the one
    maximising

    .. math:: -\langle \bar x, \hat\mu\rangle
              - \lambda\|\mu\| \sum_{i\ \mathrm{mal}} [(S^W_i - \tau_W)_+ + (S^L_i - \tau_L)_+],

    i.e. the largest deviation of the aggregate that keeps every malicious client's model-weight and
    latent-space score under GeminiGuard's thresholds. With ``decorrelate`` each attacker adds its own
    Gaussian :math:`\nu_i` whose norm equals the benign clients' median nearest-neighbour distance,
    so the colluders do not form the duplicate cluster that the crowding statistic looks for.
    Simplified: one direction and a grid over :math:`\gamma` (as the engine's ``attacks.adaptive``),
    not a full optimisation of every coordinate.
    """

    def attack(updates, malicious, key, *, context=None, aggregator=None):
        from poisonjax.federated import attacks as T
        if aggregator is None:
            raise PoisonJaxInputError("adaptive_against_geminiguard needs the aggregator hook (run it in the simulation)")
        n, d = updates.shape
        ben = ~malicious
        nb = jnp.maximum(jnp.sum(ben), 1)
        mu = jnp.sum(jnp.where(ben[:, None], updates, 0.0), 0) / nb
        sd = jnp.sqrt(jnp.sum(jnp.where(ben[:, None], (updates - mu) ** 2, 0.0), 0) / nb)
        p = T.attack_direction(mu, sd, direction)
        if decorrelate:
            d2 = pairwise_sq_distances(updates)
            pair = ben[:, None] & ben[None, :] & ~jnp.eye(n, dtype=bool)
            nn = jnp.sqrt(jnp.min(jnp.where(pair, d2, jnp.inf), axis=1))
            nn_med = masked_median(jnp.where(jnp.isfinite(nn), nn, 0.0)[:, None], ben)[0]
            noise = jax.random.normal(key, (n, d))
            noise = noise / jnp.linalg.norm(noise, axis=1, keepdims=True) * nn_med
        else:
            noise = jnp.zeros((n, d))
        gammas = jnp.concatenate([jnp.zeros((1,)),
                                  gamma_max * 2.0 ** -jnp.arange(num_candidates - 1, dtype=jnp.float32)[::-1]])
        mun = mu / jnp.maximum(jnp.linalg.norm(mu), 1e-12)

        def craft(g):
            return jnp.where(malicious[:, None], (mu + g * p)[None, :] + noise, updates)

        def objective(g):
            agg, rep = aggregator(craft(g))
            sw = jnp.where(jnp.isfinite(rep["score_weight"]), rep["score_weight"], 0.0)
            sl = jnp.where(jnp.isfinite(rep["score_latent"]), rep["score_latent"], 0.0)
            over = jnp.sum(jnp.where(malicious, jnp.maximum(sw - tau_weight, 0.0) + jnp.maximum(sl - tau_latent, 0.0),
                                     0.0))
            return -jnp.dot(agg, mun) - penalty * over * jnp.linalg.norm(mu)

        vals = jax.lax.map(objective, gammas)
        return craft(gammas[jnp.argmax(vals)])

    return attack
