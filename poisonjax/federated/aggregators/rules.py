"""The robust aggregation rules (FedAvg, Krum, Multi-Krum, median, trimmed mean, Bulyan, RFA, FLTrust,
FLAME, FoolsGold, DnC, centered clipping, FLARE); protocol in :mod:`poisonjax.federated.aggregators`."""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from poisonjax.core.validation import PoisonJaxInputError
from poisonjax.federated.aggregators.base import (aggregator_fn, dist_to, krum_min_clients, krum_scores, masked_median, mmd2_matrix, pairwise_cosine, pairwise_sq_distances, weighted_mean)


@aggregator_fn()
def fedavg(x, valid, state, key, context, weights):
    r"""FedAvg (McMahan et al., 2017): :math:`\bar x = \sum_i w_i x_i / \sum_i w_i` with ``weights``
    (e.g. local sample counts; uniform if None). Flags nothing; ``scores`` = :math:`\|x_i - \bar x\|`."""
    w = valid.astype(jnp.float32) if weights is None else weights
    agg = weighted_mean(x, w)
    return agg, state, {"scores": dist_to(x, agg), "weights": w / jnp.maximum(w.sum(), 1e-12)}


@aggregator_fn(krum_min_clients)
def krum(x, valid, state, key, context, weights, *, num_malicious: int):
    r"""Krum (Blanchard et al., NeurIPS 2017): return the single update with the smallest score
    :math:`s_i = \sum_{j \in N_i}\|x_i-x_j\|^2` over its :math:`n-f-2` nearest neighbours.
    Requires :math:`n > 2f+2`. ``scores`` = Krum scores; every non-selected client is flagged."""
    s = krum_scores(x, valid, num_malicious)
    i = jnp.argmin(s)
    sel = jnp.arange(x.shape[0]) == i
    return x[i], state, {"scores": s, "flags": ~sel, "weights": sel.astype(jnp.float32)}


@aggregator_fn(krum_min_clients)
def multi_krum(x, valid, state, key, context, weights, *, num_malicious: int,
               num_selected: Optional[int] = None):
    r"""Multi-Krum (Blanchard et al., 2017): average the ``num_selected`` updates (default
    :math:`m = n - f`) with the lowest Krum scores. Requires :math:`n > 2f+2`. Non-selected clients
    are flagged."""
    s = krum_scores(x, valid, num_malicious)
    k = jnp.sum(valid)
    m = k - num_malicious if num_selected is None else jnp.minimum(num_selected, k)
    rank = jnp.argsort(jnp.argsort(s))
    sel = (rank < m) & valid
    w = sel.astype(jnp.float32)
    return weighted_mean(x, w), state, {"scores": s, "flags": ~sel, "weights": w / jnp.maximum(w.sum(), 1)}


@aggregator_fn()
def median(x, valid, state, key, context, weights):
    r"""Coordinate-wise median (Yin et al., ICML 2018): :math:`\bar x_j = \mathrm{med}_i\, x_{ij}`
    (mean of the two middle values for even n). Flags nothing; ``scores`` = :math:`\|x_i-\bar x\|`."""
    agg = masked_median(x, valid)
    return agg, state, {"scores": dist_to(x, agg)}


@aggregator_fn(lambda n, kw: (1, ""))
def trimmed_mean(x, valid, state, key, context, weights, *, beta: float = 0.1):
    r"""Coordinate-wise trimmed mean (Yin et al., ICML 2018): per coordinate, drop the
    :math:`b = \lfloor \beta k \rfloor` largest and smallest of the k valid values and average the rest.
    ``beta`` in [0, 0.5). ``scores`` = fraction of coordinates where the client was trimmed;
    ``weights`` = fraction kept. Flags nothing."""
    if not 0.0 <= float(beta) < 0.5:
        raise PoisonJaxInputError(f"trimmed_mean: beta must be in [0, 0.5), got {beta}")
    n = x.shape[0]
    k = jnp.sum(valid).astype(jnp.int32)
    b = jnp.floor(beta * k).astype(jnp.int32)
    xv = jnp.where(valid[:, None], x, jnp.inf)
    order = jnp.argsort(xv, axis=0)
    xs = jnp.take_along_axis(xv, order, axis=0)
    pos = jnp.arange(n)[:, None]
    keep = (pos >= b) & (pos < k - b)
    agg = jnp.sum(jnp.where(keep, xs, 0.0), axis=0) / jnp.maximum(k - 2 * b, 1)
    rank = jnp.argsort(order, axis=0)  # rank of client i in coordinate j
    kept = (rank >= b) & (rank < k - b) & valid[:, None]
    frac = kept.mean(axis=1)
    return agg, state, {"scores": 1.0 - frac, "weights": frac}


@aggregator_fn(lambda n, kw: (4 * int(kw.get("num_malicious", 0)) + 3,
                            f"Bulyan needs n >= 4f + 3 clients for num_malicious f={kw.get('num_malicious', 0)}"))
def bulyan(x, valid, state, key, context, weights, *, num_malicious: int):
    r"""Bulyan (El Mhamdi et al., ICML 2018).

    1. Select :math:`\theta = n - 2f` updates by iterated Krum (Krum on the remaining set, remove the
       winner, repeat).
    2. Per coordinate, average the :math:`\beta = \theta - 2f` selected values closest to the
       coordinate-wise median of the selection.

    Requires :math:`n \ge 4f+3`. Clients not selected in step 1 are flagged; ``scores`` are the
    first-pass Krum scores."""
    f = int(num_malicious)
    n = x.shape[0]
    d2 = pairwise_sq_distances(x)
    k = jnp.sum(valid).astype(jnp.int32)
    theta = k - 2 * f

    def body(t, carry):
        avail, sel = carry
        s = krum_scores(x, avail, f, d2)
        i = jnp.argmin(s)
        active = t < theta
        hit = (jnp.arange(n) == i) & active
        return avail & ~hit, sel | hit

    _, sel = jax.lax.fori_loop(0, n - 2 * f, body, (valid, jnp.zeros((n,), bool)))
    med = masked_median(x, sel)
    dist = jnp.where(sel[:, None], jnp.abs(x - med[None, :]), jnp.inf)
    order = jnp.argsort(dist, axis=0)
    xs = jnp.take_along_axis(x, order, axis=0)
    beta = theta - 2 * f
    keep = jnp.arange(n)[:, None] < beta
    agg = jnp.sum(jnp.where(keep, xs, 0.0), axis=0) / jnp.maximum(beta, 1)
    s0 = krum_scores(x, valid, f, d2)
    return agg, state, {"scores": s0, "flags": ~sel, "weights": sel.astype(jnp.float32) / jnp.maximum(theta, 1)}


@aggregator_fn()
def rfa(x, valid, state, key, context, weights, *, iters: int = 10, nu: float = 1e-6):
    r"""RFA (Pillutla et al., IEEE TSP 2022): geometric median
    :math:`\arg\min_v \sum_i \alpha_i \|v - x_i\|` by the smoothed Weiszfeld iteration
    :math:`v \leftarrow \sum_i \beta_i x_i / \sum_i \beta_i`, :math:`\beta_i = \alpha_i / \max(\nu, \|v - x_i\|)`,
    starting from the weighted mean, ``iters`` times. Flags nothing; ``scores`` = :math:`\|x_i - v\|`."""
    a = valid.astype(jnp.float32) if weights is None else weights

    def body(_, v):
        b = a / jnp.maximum(nu, dist_to(x, v))
        return weighted_mean(x, b)

    v = jax.lax.fori_loop(0, iters, body, weighted_mean(x, a))
    b = a / jnp.maximum(nu, dist_to(x, v))
    return v, state, {"scores": dist_to(x, v), "weights": b / jnp.maximum(b.sum(), 1e-12)}


@aggregator_fn()
def fltrust(x, valid, state, key, context, weights, *, root_update=None):
    r"""FLTrust (Cao et al., NDSS 2021). With the server's update :math:`g_0` on its root dataset:
    trust :math:`TS_i = \mathrm{ReLU}(\cos(x_i, g_0))`, rescale :math:`\tilde x_i = x_i \|g_0\| / \|x_i\|`,
    aggregate :math:`\sum_i TS_i \tilde x_i / \sum_i TS_i`.

    ``root_update`` ``[d]`` (or ``context.root_update``; the simulation computes it when the
    aggregator is built with ``needs=("root_update",)``, as :func:`get_aggregator` does).
    Clients with :math:`TS_i = 0` are flagged; ``scores`` = :math:`1 - TS_i`."""
    g0 = root_update if root_update is not None else getattr(context, "root_update", None)
    if g0 is None:
        raise PoisonJaxInputError("fltrust needs root_update=[d] (the server's update on its root dataset) "
                                  "or a context with root_update")
    g0 = jnp.asarray(g0, jnp.float32).reshape(-1)
    nx = jnp.linalg.norm(x, axis=1)
    n0 = jnp.linalg.norm(g0)
    cos = (x @ g0) / jnp.maximum(nx * n0, 1e-12)
    ts = jnp.where(valid, jax.nn.relu(cos), 0.0)
    xt = x * (n0 / jnp.maximum(nx, 1e-12))[:, None]
    agg = weighted_mean(xt, ts)
    return agg, state, {"scores": 1.0 - ts, "flags": ts <= 0, "weights": ts / jnp.maximum(ts.sum(), 1e-12)}


@aggregator_fn()
def flame(x, valid, state, key, context, weights, *, noise_lambda: float = 0.001, mad_k: float = 2.0):
    r"""FLAME (Nguyen et al., USENIX Security 2022): filter, clip, add noise.

    1. Cosine distances :math:`D_{ij} = 1 - \cos(x_i, x_j)`; the admitted set is the majority cluster.
    2. Clip: :math:`S = \mathrm{median}_i \|x_i\|`, :math:`x_i \leftarrow x_i \min(1, S/\|x_i\|)`.
    3. Average the admitted clipped updates and add :math:`\mathcal N(0, (\lambda S)^2 I)`.

    Simplified: HDBSCAN (min cluster size n/2+1) is replaced by a density rule -- the core distance
    :math:`c_i` (cosine distance to the :math:`\lfloor k/2 \rfloor`-th nearest client) must satisfy
    :math:`c_i \le \mathrm{med}(c) + \texttt{mad\_k}\cdot 1.4826\,\mathrm{MAD}(c)`; the
    :math:`\lfloor k/2\rfloor + 1` densest clients are always admitted. Noise is added to the
    aggregate *update* (the paper adds it to the global model; same effect). ``scores`` = core distances."""
    n = x.shape[0]
    k = jnp.sum(valid).astype(jnp.int32)
    dcos = 1.0 - pairwise_cosine(x)
    both = valid[:, None] & valid[None, :] & ~jnp.eye(n, dtype=bool)
    ds = jnp.sort(jnp.where(both, dcos, jnp.inf), axis=1)
    ms = jnp.clip(k // 2, 1, n - 1)
    core = jnp.where(valid, jnp.take_along_axis(ds, jnp.full((n, 1), ms - 1), axis=1)[:, 0], jnp.inf)
    med = masked_median(core[:, None], valid)[0]
    mad = masked_median(jnp.abs(core - med)[:, None], valid)[0]
    rank = jnp.argsort(jnp.argsort(core))
    admit = valid & ((core <= med + mad_k * 1.4826 * mad + 1e-7) | (rank < k // 2 + 1))
    norms = jnp.linalg.norm(x, axis=1)
    s = masked_median(norms[:, None], valid)[0]
    xc = x * jnp.minimum(1.0, s / jnp.maximum(norms, 1e-12))[:, None]
    w = admit.astype(jnp.float32)
    agg = weighted_mean(xc, w) + noise_lambda * s * jax.random.normal(key, (x.shape[1],))
    return agg, state, {"scores": jnp.where(valid, core, 0.0), "flags": ~admit,
                        "weights": w / jnp.maximum(w.sum(), 1)}


def foolsgold_init(num_clients: int, dim: int):
    """FoolsGold state: ``{"history": [num_clients, dim]}`` (sum of each client's past updates)."""
    return {"history": jnp.zeros((num_clients, dim), jnp.float32)}


@aggregator_fn()
def foolsgold(x, valid, state, key, context, weights, *, client_ids=None, confidence: float = 1.0):
    r"""FoolsGold (Fung et al., RAID 2020). Histories :math:`H_i \mathrel{+}= x_i`; cosine
    similarities :math:`cs_{ij}` of histories; :math:`v_i = \max_{j\ne i} cs_{ij}`; pardoning
    :math:`cs_{ij} \leftarrow cs_{ij} v_i / v_j` if :math:`v_j > v_i`; :math:`\alpha_i = 1 - \max_j cs_{ij}`
    clipped to [0, 1], divided by its max, logit :math:`\alpha_i = \kappa(\ln\frac{\alpha_i}{1-\alpha_i}) + 0.5`
    clipped to [0, 1]; aggregate :math:`\sum_i \alpha_i x_i / \sum_i \alpha_i`.

    ``state = {"history": [N_total, d]}`` (``None``: start from zeros with ``N_total = n``);
    ``client_ids`` ``[n]`` index the history (default ``context.client_ids`` or ``arange(n)``).
    Clients with :math:`\alpha_i = 0` are flagged; ``scores`` = :math:`1 - \alpha_i`. Simplified: the
    paper's feature-importance weighting of the output layer is omitted."""
    n, d = x.shape
    if client_ids is None:
        client_ids = getattr(context, "client_ids", None)
    ids = jnp.arange(n) if client_ids is None else jnp.asarray(client_ids)
    if state is None:
        state = foolsgold_init(n if client_ids is None else int(np.max(np.asarray(ids))) + 1, d)
    hist = state["history"].at[ids].add(jnp.where(valid[:, None], x, 0.0))
    h = hist[ids]
    cs = pairwise_cosine(h) - jnp.eye(n)
    pair = valid[:, None] & valid[None, :]
    cs = jnp.where(pair, cs, -1.0)
    v = jnp.max(cs, axis=1)
    cs = jnp.where(v[None, :] > v[:, None], cs * v[:, None] / jnp.maximum(v[None, :], 1e-12), cs)
    a = jnp.clip(1.0 - jnp.max(cs, axis=1), 0.0, 1.0)
    a = jnp.where(valid, a, 0.0)
    a = a / jnp.maximum(jnp.max(a), 1e-12)
    a = jnp.where(a >= 1.0, 0.99, a)
    a = confidence * (jnp.log(a / (1.0 - a) + 1e-12) + 0.5)
    a = jnp.where(valid & jnp.isfinite(a), jnp.clip(a, 0.0, 1.0), 0.0)
    agg = weighted_mean(x, a)
    return agg, {"history": hist}, {"scores": 1.0 - a, "flags": (a <= 0) & valid,
                                    "weights": a / jnp.maximum(a.sum(), 1e-12)}


@aggregator_fn(lambda n, kw: (2 * int(kw.get("num_malicious", 0)) + 1,
                            f"DnC needs n > 2f clients for num_malicious f={kw.get('num_malicious', 0)}"))
def dnc(x, valid, state, key, context, weights, *, num_malicious: int, num_iters: int = 1,
        sub_dim: int = 10000, filter_frac: float = 1.0):
    r"""Divide-and-Conquer (Shejwalkar & Houmansadr, NDSS 2021).

    Repeat ``num_iters`` times: sample ``sub_dim`` coordinates, centre the sub-sampled updates
    :math:`C = X_r - \mu_r`, take the top right singular vector :math:`v` of :math:`C`, score
    :math:`s_i = (c_i^\top v)^2` and keep all but the :math:`\lfloor \texttt{filter\_frac}\cdot f\rfloor`
    highest. The aggregate is the mean of the clients kept in every iteration. :math:`v` comes from the
    ``[n, n]`` Gram matrix :math:`CC^\top` (same top singular direction, cheap for n << d).
    ``scores`` = mean outlier score; flagged = removed in some iteration."""
    n, d = x.shape
    b = min(int(sub_dim), d)
    nrem = int(math.floor(filter_frac * num_malicious))
    vf = valid.astype(jnp.float32)

    def one(k):
        cols = jax.random.choice(k, d, (b,), replace=False) if b < d else jnp.arange(d)
        xr = x[:, cols]
        mu = weighted_mean(xr, vf)
        c = (xr - mu[None, :]) * vf[:, None]
        evals, evecs = jnp.linalg.eigh(c @ c.T)
        u = evecs[:, -1]
        s = evals[-1] * u * u
        s = jnp.where(valid, s, -jnp.inf)
        rank = jnp.argsort(jnp.argsort(-s))
        return s, rank >= nrem

    s, good = jax.vmap(one)(jax.random.split(key, num_iters))
    good = jnp.all(good, axis=0) & valid
    w = good.astype(jnp.float32)
    sc = jnp.where(valid, jnp.mean(jnp.where(jnp.isfinite(s), s, 0.0), axis=0), 0.0)
    return weighted_mean(x, w), state, {"scores": sc, "flags": ~good, "weights": w / jnp.maximum(w.sum(), 1)}


def centered_clipping_init(num_clients: int, dim: int):
    """Centered clipping state: ``{"center": [dim]}`` (the previous aggregate, zeros at start)."""
    return {"center": jnp.zeros((dim,), jnp.float32)}


@aggregator_fn()
def centered_clipping(x, valid, state, key, context, weights, *, tau: Optional[float] = None, iters: int = 3):
    r"""Centered clipping (Karimireddy et al., ICML 2021):
    :math:`v \leftarrow v + \frac{1}{k}\sum_i \mathrm{clip}_\tau(x_i - v)` repeated ``iters`` times,
    with :math:`\mathrm{clip}_\tau(z) = z \min(1, \tau / \|z\|)` and :math:`v` starting at the previous
    round's aggregate (``state["center"]``; zeros at first; the paper's worker momentum is not modelled).
    ``tau=None`` uses the median of :math:`\|x_i - v\|` each iteration (simplified, scale-free choice;
    the paper tunes a fixed :math:`\tau`). ``scores`` = :math:`\|x_i - v\|`; flags clients that were
    clipped by more than half (:math:`\|x_i - v\| > 2\tau`) in the last iteration."""
    d = x.shape[1]
    v0 = jnp.zeros((d,), jnp.float32) if state is None else state["center"]
    vf = valid.astype(jnp.float32)
    k = jnp.maximum(vf.sum(), 1.0)

    def step(v, _):
        z = x - v[None, :]
        nz = jnp.linalg.norm(z, axis=1)
        t = masked_median(nz[:, None], valid)[0] if tau is None else jnp.float32(tau)
        c = z * jnp.minimum(1.0, t / jnp.maximum(nz, 1e-12))[:, None]
        return v + (vf @ c) / k, t

    v, ts = jax.lax.scan(step, v0, None, length=iters)
    dist = dist_to(x, v)
    return v, {"center": v}, {"scores": dist, "flags": valid & (dist > 2 * ts[-1]),
                              "weights": vf / k}


@aggregator_fn()
def flare(x, valid, state, key, context, weights, *, features=None, k: Optional[int] = None,
          temperature: float = 1.0, bandwidth: Optional[float] = None):
    r"""FLARE (Wang et al., AsiaCCS 2022): trust from penultimate-layer representations (PLRs).

    The server evaluates every client model :math:`w_g + x_i` on its auxiliary samples, giving PLRs
    ``features [n, A, h]`` (default: ``context.client_features(x)``). With pairwise
    :math:`\mathrm{MMD}^2` (:func:`mmd2_matrix`), each client votes for its ``k`` nearest clients
    (default :math:`\lfloor k_{valid}/2 \rfloor`); :math:`c_i` = votes received; trust
    :math:`TS = \mathrm{softmax}(c / \texttt{temperature})` over valid clients; the aggregate is
    :math:`\sum_i TS_i x_i`. Flags clients with fewer than half the average votes (:math:`c_i < k/2`;
    the paper only re-weights); ``scores`` = :math:`-c_i`."""
    n = x.shape[0]
    if features is None:
        if context is None or getattr(context, "features_fn", None) is None:
            raise PoisonJaxInputError("flare needs features=[n, A, h] or a context with features_fn and aux_data")
        features = context.client_features(x)
    m2 = mmd2_matrix(features, bandwidth)
    both = valid[:, None] & valid[None, :] & ~jnp.eye(n, dtype=bool)
    m2 = jnp.where(both, m2, jnp.inf)
    kv = jnp.sum(valid).astype(jnp.int32)
    kk = jnp.maximum(kv // 2, 1) if k is None else jnp.int32(k)
    rank = jnp.argsort(jnp.argsort(m2, axis=1), axis=1)  # rank of j among i's neighbours
    votes = (rank < kk) & both
    c = jnp.sum(votes & valid[:, None], axis=0).astype(jnp.float32)
    logits = jnp.where(valid, c / temperature, -jnp.inf)
    ts = jax.nn.softmax(logits)
    ts = jnp.where(valid, ts, 0.0)
    return ts @ x, state, {"scores": -c, "flags": valid & (c < 0.5 * kk), "weights": ts,
                           "votes": c}


