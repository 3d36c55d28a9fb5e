r"""Attacks on federated learning: data poisoning in malicious clients' local data, and model
poisoning of the updates they send.

**Model-poisoning attacks** share one signature (used by :mod:`poisonjax.federated.simulation`)::

    new_updates = attack(updates, malicious, key, *, context=None, aggregator=None, **hyper)

* ``updates [n, d]``: this round's honestly trained updates of the sampled clients (malicious clients'
  rows are their own honest updates, which they may use or replace);
* ``malicious [n]`` bool: which rows belong to attackers -- only those rows are changed;
* ``context``: the :class:`~poisonjax.federated.simulation.RoundContext` (global params, ...);
* ``aggregator``: ``aggregator(updates [n, d]) -> (aggregate [d], report)`` -- the server's rule with
  this round's state bound (the adaptive-attack hook; see :func:`adaptive`).

Omniscient attacks (LIE, Min-Max, Min-Sum, IPM, Fang) compute their statistics from the benign rows
(``~malicious``) of the same round, as in their papers' full-knowledge setting (falling back to all
rows if every sampled client is malicious). All use static shapes and masks, so they run inside
``jit``/``scan``; any callable with this signature plugs into the simulation (custom/adaptive hook).

**Data-poisoning attacks** rewrite malicious clients' padded local data once, before training:
:func:`flip_labels` (untargeted / targeted) and :func:`add_backdoor` (BadNets trigger + relabel).
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import norm as jnorm

from poisonjax.core.validation import PoisonJaxInputError, check_choice, check_fraction

__all__ = ["no_attack", "sign_flip", "gaussian", "scaling", "lie", "lie_z_max", "min_max", "min_sum", "ipm",
           "fang_krum", "fang_trimmed_mean", "adaptive", "MODEL_ATTACKS", "get_model_attack",
           "flip_labels", "add_backdoor", "apply_trigger", "DATA_ATTACKS"]


# --------------------------------------------------------------------------------- helpers ------

def _benign_stats(x, malicious):
    ben = ~malicious
    ben = jnp.where(jnp.any(ben), ben, jnp.ones_like(ben))
    w = ben.astype(jnp.float32)
    k = jnp.maximum(w.sum(), 1.0)
    mu = (w @ x) / k
    var = (w @ (x - mu) ** 2) / jnp.maximum(k - 1.0, 1.0)
    return ben, mu, jnp.sqrt(var)


def _replace(x, malicious, mal_row):
    mal_row = jnp.broadcast_to(mal_row, x.shape) if mal_row.ndim == 1 else mal_row
    return jnp.where(malicious[:, None], mal_row, x)


def _sqd(a, b):
    """``[p, d], [q, d] -> [p, q]`` squared distances via matrix products."""
    return jnp.maximum(jnp.sum(a * a, 1)[:, None] + jnp.sum(b * b, 1)[None, :] - 2.0 * a @ b.T, 0.0)


def attack_direction(mu, sd, direction):
    r"""The perturbation direction :math:`p` of the Min-Max / Min-Sum family (Shejwalkar & Houmansadr 2021):
    ``"unit"`` :math:`-\mu/\|\mu\|`, ``"std"`` :math:`-\sigma`, ``"sign"`` :math:`-\mathrm{sign}(\mu)`."""
    check_choice("direction", direction, ("unit", "std", "sign"))
    if direction == "unit":
        return -mu / jnp.maximum(jnp.linalg.norm(mu), 1e-12)
    if direction == "std":
        return -sd
    return -jnp.sign(mu)


def _binary_search(ok: Callable, gamma_init, iters: int):
    r"""Largest :math:`\gamma \in [0, 2\gamma_{init})` with ``ok(gamma)``: the halving search of
    Shejwalkar & Houmansadr (Alg. 1) -- step up by ``step`` on success, down on failure, halve ``step``;
    keep the last success (0 if none)."""
    gamma_init = jnp.asarray(gamma_init, jnp.float32)

    def body(_, c):
        g, step, best = c
        good = ok(g)
        best = jnp.where(good & (g > best), g, best)
        g = jnp.maximum(jnp.where(good, g + step, g - step), 0.0)
        return g, step / 2, best

    _, _, best = jax.lax.fori_loop(0, iters, body, (gamma_init, gamma_init / 2, jnp.float32(0.0)))
    return best


# ------------------------------------------------------------------------- model poisoning ------

def no_attack(updates, malicious, key, *, context=None, aggregator=None):
    """Identity (malicious clients send their honest updates)."""
    return updates


def sign_flip(updates, malicious, key, *, context=None, aggregator=None, scale: float = 1.0):
    r"""Sign flipping: malicious clients send :math:`-s\,x_i` (their own update, reversed and scaled;
    e.g. Damaskinos et al. 2018 / Li et al. 2019 RSA evaluation)."""
    return jnp.where(malicious[:, None], -scale * updates, updates)


def gaussian(updates, malicious, key, *, context=None, aggregator=None, std: float = 1.0,
             around_mean: bool = False):
    r"""Gaussian attack (Blanchard et al., 2017; Fang et al., 2020): malicious rows are
    :math:`\mathcal N(0, \texttt{std}^2 I)` (or centred on the benign mean with ``around_mean``)."""
    _, mu, _ = _benign_stats(updates, malicious)
    noise = std * jax.random.normal(key, updates.shape)
    return jnp.where(malicious[:, None], noise + (mu[None, :] if around_mean else 0.0), updates)


def scaling(updates, malicious, key, *, context=None, aggregator=None, gamma: Optional[float] = None):
    r"""Model replacement / scaling (Bagdasaryan et al., AISTATS 2020): malicious clients (typically
    trained on backdoored data) send :math:`\gamma\, x_i`. Default :math:`\gamma = n / f` with n the
    clients in the round and f the malicious ones among them (the paper's :math:`\gamma = n/\eta` with
    server rate :math:`\eta = 1`, split over f colluding attackers)."""
    n = updates.shape[0]
    f = jnp.maximum(jnp.sum(malicious), 1)
    g = n / f if gamma is None else jnp.float32(gamma)
    return jnp.where(malicious[:, None], g * updates, updates)


def lie_z_max(n: int, f: int) -> float:
    r"""Baruch et al. (NeurIPS 2019) :math:`z_{max}`: with :math:`s = \lfloor n/2 + 1\rfloor - f`,
    :math:`z_{max} = \Phi^{-1}((n - s)/n)`."""
    s = math.floor(n / 2 + 1) - f
    p = (n - s) / n
    from scipy.stats import norm
    return float(norm.ppf(min(max(p, 1e-6), 1 - 1e-6)))


def lie(updates, malicious, key, *, context=None, aggregator=None, z: Optional[float] = None,
        num_malicious: Optional[int] = None):
    r"""A Little Is Enough (Baruch et al., NeurIPS 2019): every malicious client sends
    :math:`\mu + z_{max}\sigma` (coordinate-wise benign mean and std of the round).

    ``z`` default: :func:`lie_z_max` with n = clients in the round and f = ``num_malicious``
    (default: the malicious clients in the round, computed in-graph)."""
    n = updates.shape[0]
    _, mu, sd = _benign_stats(updates, malicious)
    if z is None:
        f = jnp.sum(malicious) if num_malicious is None else jnp.int32(num_malicious)
        s = jnp.floor(n / 2 + 1) - f
        zz = jnorm.ppf(jnp.clip((n - s) / n, 1e-6, 1 - 1e-6))
    else:
        zz = jnp.float32(z)
    return _replace(updates, malicious, mu + zz * sd)


def min_max(updates, malicious, key, *, context=None, aggregator=None, direction: str = "unit",
            gamma_init: Optional[float] = None, iters: int = 30):
    r"""Min-Max (Shejwalkar & Houmansadr, NDSS 2021, AGR-agnostic): malicious update
    :math:`\mu + \gamma p` with the largest :math:`\gamma` (halving search) such that
    :math:`\max_i \|\mu+\gamma p - x_i\| \le \max_{i,j}\|x_i - x_j\|` over benign :math:`x`.
    ``direction`` p: ``"unit"`` :math:`-\mu/\|\mu\|`, ``"std"`` :math:`-\sigma`, ``"sign"`` :math:`-\mathrm{sign}(\mu)`.
    ``gamma_init`` (search range :math:`[0, 2\gamma_{init})`): default
    :math:`\max_{i,j}\|x_i-x_j\| / \|p\|`, which brackets every feasible :math:`\gamma` (the paper
    uses a fixed 10 for its scale of gradients)."""
    ben, mu, sd = _benign_stats(updates, malicious)
    p = attack_direction(mu, sd, direction)
    pair = ben[:, None] & ben[None, :]
    dmax = jnp.max(jnp.where(pair, _sqd(updates, updates), 0.0))

    def ok(g):
        m = (mu + g * p)[None, :]
        return jnp.max(jnp.where(ben, _sqd(m, updates)[0], 0.0)) <= dmax

    g0 = jnp.sqrt(dmax) / jnp.maximum(jnp.linalg.norm(p), 1e-12) if gamma_init is None else gamma_init
    g = _binary_search(ok, g0, iters)
    return _replace(updates, malicious, mu + g * p)


def min_sum(updates, malicious, key, *, context=None, aggregator=None, direction: str = "unit",
            gamma_init: Optional[float] = None, iters: int = 30):
    r"""Min-Sum (Shejwalkar & Houmansadr, NDSS 2021): like :func:`min_max` with the condition
    :math:`\sum_i \|\mu+\gamma p - x_i\|^2 \le \max_i \sum_j \|x_i - x_j\|^2` over benign :math:`x`."""
    ben, mu, sd = _benign_stats(updates, malicious)
    p = attack_direction(mu, sd, direction)
    pair = ben[:, None] & ben[None, :]
    d2 = jnp.where(pair, _sqd(updates, updates), 0.0)
    smax = jnp.max(jnp.where(ben, jnp.sum(d2, axis=1), 0.0))

    def ok(g):
        m = (mu + g * p)[None, :]
        return jnp.sum(jnp.where(ben, _sqd(m, updates)[0], 0.0)) <= smax

    g0 = jnp.sqrt(jnp.max(d2)) / jnp.maximum(jnp.linalg.norm(p), 1e-12) if gamma_init is None else gamma_init
    g = _binary_search(ok, g0, iters)
    return _replace(updates, malicious, mu + g * p)


def ipm(updates, malicious, key, *, context=None, aggregator=None, epsilon: float = 0.5):
    r"""Inner-product manipulation (Xie et al., UAI 2019): malicious clients send
    :math:`-\varepsilon\,\mu` (benign mean), making the aggregate's inner product with the true
    gradient negative for large enough :math:`\varepsilon`."""
    _, mu, _ = _benign_stats(updates, malicious)
    return _replace(updates, malicious, -epsilon * mu)


def fang_krum(updates, malicious, key, *, context=None, aggregator=None, num_malicious: Optional[int] = None,
              threshold: float = 1e-5, max_halvings: int = 30, spread: float = 1e-3):
    r"""Fang et al. (USENIX Security 2020), full-knowledge attack on Krum, in update space.

    With :math:`s = \mathrm{sign}(\mu)` (the benign direction of change), the first attacker sends
    :math:`-\lambda s`, the others stay within ``spread`` of it. :math:`\lambda` starts at the paper's
    upper bound
    :math:`\frac{1}{(m-2c-1)\sqrt d}\min_{i}\sum_{l\in\Gamma_i^{m-c-2}}\|x_l - x_i\| + \frac{1}{\sqrt d}\max_i\|x_i\|`
    (benign i, l) and is halved until Krum selects a malicious update (or :math:`\lambda <` ``threshold``).
    Krum here is evaluated with ``num_malicious`` (default: malicious clients in the round)."""
    from poisonjax.federated.aggregators import krum_scores
    n, d = updates.shape
    ben, mu, _ = _benign_stats(updates, malicious)
    c = jnp.sum(malicious) if num_malicious is None else jnp.int32(num_malicious)
    s = jnp.sign(mu)
    dist = jnp.sqrt(_sqd(updates, updates))
    both = ben[:, None] & ben[None, :] & ~jnp.eye(n, dtype=bool)
    ds = jnp.sort(jnp.where(both, dist, jnp.inf), axis=1)
    kb = jnp.maximum(n - c - 2, 1)
    sums = jnp.sum(jnp.where(jnp.arange(n)[None, :] < kb, jnp.where(jnp.isfinite(ds), ds, 0.0), 0.0), axis=1)
    min_sum_ = jnp.min(jnp.where(ben, sums, jnp.inf))
    max_norm = jnp.max(jnp.where(ben, jnp.linalg.norm(updates, axis=1), 0.0))
    lam0 = min_sum_ / (jnp.maximum(n - 2 * c - 1, 1) * jnp.sqrt(d)) + max_norm / jnp.sqrt(d)
    noise = spread * jax.random.normal(key, updates.shape) / jnp.sqrt(d)
    first = jnp.argmax(malicious)
    noise = noise.at[first].set(0.0)

    def crafted(lam):
        return jnp.where(malicious[:, None], (-lam * s)[None, :] + noise, updates)

    def selects_malicious(lam):
        sc = krum_scores(crafted(lam), jnp.ones((n,), bool), c)
        return malicious[jnp.argmin(sc)]

    def body(_, carry):
        lam, found = carry
        hit = selects_malicious(lam)
        found = found | hit | (lam < threshold)
        return jnp.where(found, lam, lam / 2), found

    lam, _ = jax.lax.fori_loop(0, max_halvings, body, (lam0, jnp.array(False)))
    return crafted(lam)


def fang_trimmed_mean(updates, malicious, key, *, context=None, aggregator=None, b: float = 2.0):
    r"""Fang et al. (USENIX Security 2020), full-knowledge attack on trimmed mean / median, in update space.

    With :math:`s_j = \mathrm{sign}(\mu_j)` and benign extremes :math:`w_{max,j}, w_{min,j}`: if
    :math:`s_j = -1` malicious values are drawn uniformly in :math:`[w_{max,j}, b\,w_{max,j}]`
    (:math:`[w_{max,j}, w_{max,j}/b]` if :math:`w_{max,j} \le 0`); if :math:`s_j = 1` in
    :math:`[w_{min,j}/b, w_{min,j}]` (:math:`[b\,w_{min,j}, w_{min,j}]` if :math:`w_{min,j} \le 0`)."""
    ben, mu, _ = _benign_stats(updates, malicious)
    wmax = jnp.max(jnp.where(ben[:, None], updates, -jnp.inf), axis=0)
    wmin = jnp.min(jnp.where(ben[:, None], updates, jnp.inf), axis=0)
    s = jnp.sign(mu)
    lo_neg = wmax
    hi_neg = jnp.where(wmax > 0, b * wmax, wmax / b)
    lo_pos = jnp.where(wmin > 0, wmin / b, b * wmin)
    hi_pos = wmin
    lo = jnp.where(s < 0, lo_neg, lo_pos)
    hi = jnp.where(s < 0, hi_neg, hi_pos)
    u = jax.random.uniform(key, updates.shape)
    mal = jnp.minimum(lo, hi)[None, :] + u * jnp.abs(hi - lo)[None, :]
    return jnp.where(malicious[:, None], mal, updates)


def adaptive(updates, malicious, key, *, context=None, aggregator=None, direction: str = "unit",
             num_candidates: int = 16, gamma_max: float = 100.0, objective: Optional[Callable] = None):
    r"""Adaptive attack hook: the attacker holds the server's aggregation rule and optimises its
    (shared) update against it.

    Candidates :math:`m(\gamma) = \mu + \gamma p` for ``num_candidates`` values of :math:`\gamma`
    on a geometric grid in :math:`(0, \gamma_{max}]` (plus 0); for each, the true ``aggregator`` is run
    (vmapped over candidates) and the candidate maximising ``objective(aggregate, mu, report)``
    is sent -- by default the deviation :math:`-\langle \bar x, \mu\rangle / \|\mu\|` of the aggregate
    against the benign direction. Works for non-differentiable rules (Krum, median, FLAME); pass a
    custom ``objective`` (e.g. one that also penalises ``report["flags"]``) to attack a specific
    defense. ``aggregator(updates) -> (aggregate, report)`` is supplied by the simulation.

    Simplified: a grid search along one direction (as in Shejwalkar & Houmansadr's AGR-tailored
    attacks), not a full gradient-based optimisation of d coordinates.
    """
    if aggregator is None:
        raise PoisonJaxInputError("adaptive attack needs aggregator=callable(updates) -> (aggregate, report)")
    _, mu, sd = _benign_stats(updates, malicious)
    p = attack_direction(mu, sd, direction)
    gammas = jnp.concatenate([jnp.zeros((1,)), gamma_max * 2.0 ** -jnp.arange(num_candidates - 1, dtype=jnp.float32)[::-1]])
    mun = mu / jnp.maximum(jnp.linalg.norm(mu), 1e-12)
    obj = objective or (lambda agg, mu_, rep: -jnp.dot(agg, mun))

    def score(g):
        agg, rep = aggregator(_replace(updates, malicious, mu + g * p))
        return obj(agg, mu, rep)

    vals = jax.lax.map(score, gammas)
    g = gammas[jnp.argmax(vals)]
    return _replace(updates, malicious, mu + g * p)


MODEL_ATTACKS = {
    "none": no_attack, "sign_flip": sign_flip, "gaussian": gaussian, "scaling": scaling, "lie": lie,
    "min_max": min_max, "min_sum": min_sum, "ipm": ipm, "fang_krum": fang_krum,
    "fang_trimmed_mean": fang_trimmed_mean, "adaptive": adaptive,
}


def get_model_attack(name: str, **kwargs) -> Callable:
    """Model attack ``name`` (one of :data:`MODEL_ATTACKS`) with hyperparameters bound."""
    if name not in MODEL_ATTACKS:
        raise PoisonJaxInputError(f"unknown model attack {name!r}; expected one of {sorted(MODEL_ATTACKS)}")
    return functools.partial(MODEL_ATTACKS[name], **kwargs)


# -------------------------------------------------------------------------- data poisoning ------

DATA_ATTACKS = ("none", "label_flip", "targeted_label_flip", "badnets")


def flip_labels(y: np.ndarray, num_classes: int, *, mode: str = "untargeted", source: int = 0,
                target: int = 1) -> np.ndarray:
    r"""Label flipping of a malicious client's whole local data (Tolpegin et al., ESORICS 2020;
    Fang et al., 2020), with the federated room's semantics on top of
    :func:`poisonjax.core.poisoning.flip_labels` at ``rate=1``:

    ``"untargeted"``: core mode ``"reverse"``, :math:`y \mapsto C - 1 - y` for every example (with odd
    :math:`C` the middle class maps to itself); ``"targeted"``: core mode ``"targeted"``, every
    example of class ``source`` is relabelled ``target``, others unchanged. Deterministic (no key
    needed: every eligible example is flipped). Works on any shape of ``y``; returns ``y``'s dtype."""
    from poisonjax.core.poisoning import flip_labels as core_flip
    check_choice("mode", mode, ("untargeted", "targeted"))
    y = np.asarray(y)
    flat = jnp.asarray(y.reshape(-1))
    key = jax.random.PRNGKey(0)   # rate=1 flips every eligible example: the key does not matter
    if mode == "untargeted":
        out, _ = core_flip(key, flat, 1.0, num_classes, mode="reverse")
    else:
        out, _ = core_flip(key, flat, 1.0, num_classes, mode="targeted", source_class=source, target_class=target)
    return np.asarray(out).reshape(y.shape).astype(y.dtype)


def trigger_for(example_shape, size: int = 2, value: float = 1.0):
    r"""The room's BadNets trigger as a :class:`poisonjax.core.poisoning.Trigger` (NumPy arrays):
    images ``(H, W, C)`` get a ``size x size`` square of ``value`` in the bottom-right corner
    (:func:`poisonjax.core.poisoning.patch_trigger`), feature vectors ``(F,)`` their last ``size``
    features (:func:`poisonjax.core.poisoning.feature_trigger`)."""
    from poisonjax.core import poisoning as P
    shape = tuple(int(s) for s in example_shape)
    t = (P.patch_trigger(shape, size=size, corner="bottom_right", value="white") if len(shape) >= 3
         else P.feature_trigger(shape[-1], size=size, value=1.0))
    mask = np.asarray(t.mask)
    return P.Trigger(mask, np.broadcast_to(np.float32(value), shape).astype(np.float32))


def apply_trigger(x: np.ndarray, size: int = 2, value: float = 1.0, example_ndim: Optional[int] = None) -> np.ndarray:
    r"""BadNets trigger (Gu et al., 2017) stamped with :func:`poisonjax.core.poisoning.apply_trigger`,
    :math:`(1-M)\odot x + M \odot P` (computed in NumPy, exact: ``M`` is 0/1): images
    ``[..., H, W, C]`` get a ``size x size`` square of ``value`` in the bottom-right corner; feature
    vectors ``[..., F]`` get their last ``size`` features set to ``value`` (:func:`trigger_for`).
    ``example_ndim`` = rank of one example (inferred: 3 if ``x.ndim >= 4``)."""
    from poisonjax.core.poisoning import apply_trigger as core_apply
    x = np.asarray(x)
    nd = example_ndim if example_ndim is not None else (3 if x.ndim >= 4 else 1)
    nd = 3 if nd >= 3 else 1
    return np.asarray(core_apply(x, trigger_for(x.shape[-nd:], size, value))).astype(x.dtype)


def add_backdoor(x: np.ndarray, y: np.ndarray, mask: np.ndarray, *, target: int = 0, fraction: float = 0.5,
                 size: int = 2, value: float = 1.0, seed: int = 0, example_ndim: Optional[int] = None):
    r"""BadNets in local data: a ``fraction`` of a client's valid examples ``x [S, ...]`` get the
    trigger (:func:`apply_trigger`) and label ``target``. Returns ``(x, y)``."""
    check_fraction("backdoor fraction", fraction)
    rng = np.random.default_rng(seed)
    valid = np.flatnonzero(np.asarray(mask) > 0)
    k = int(round(fraction * valid.size))
    pick = rng.choice(valid, k, replace=False) if k else np.zeros((0,), int)
    x = np.array(x, copy=True)
    y = np.array(y, copy=True)
    if k:
        nd = example_ndim if example_ndim is not None else x.ndim - 1
        x[pick] = apply_trigger(x[pick], size, value, nd)
        y[pick] = target
    return x, y
