"""WeiDetect (Sameera et al., 2025, "WeiDetect: Weibull Distribution-Based Defense against Poisoning
Attacks in Federated Learning for Network Intrusion Detection Systems", arXiv:2504.04367).

Two server-side phases per round:

1. **Validation scoring.** Each client's model ``w_i = w_global + delta_i`` is evaluated on a server
   validation set; its score ``s_i`` is the macro-F1 (``metric="macro_f1"``) or the recall of a
   protected target class (``metric="target_recall"``). See :func:`client_scores` (vmapped over
   clients, one compiled call).
2. **Weibull analysis.** An exponentiated Weibull distribution is fitted to ``{s_i}`` by maximum
   likelihood (:func:`fit_exponweib`, scipy's ``exponweib`` parameterization)::

       z = (s - loc) / scale,   F(s) = [1 - exp(-z^c)]^a,
       log f(s) = log a + log c + (a - 1) log(1 - exp(-z^c)) - z^c + (c - 1) log z - log scale.

   Poisoned models score low and fall into the low tail of ``F``. Clients with ``F(s_i) >= tau``
   (``selection="cdf"``) or the ``k`` highest ``F(s_i)`` (``selection="top_k"``) are kept and
   averaged (:func:`weidetect`).

Simplified / reconstructed: the paper selects "the models with the highest CDF values"; its exact
threshold is not stated in the text we could read, so ``tau`` (default 0.2) and ``k`` are config
options. Because ``F`` is monotone in the score, CDF thresholding equals a score threshold placed
at the fitted distribution's ``tau``-quantile -- the fit decides *where* the low tail starts.

Degenerate inputs: fewer than ``min_samples`` (default 5) finite scores raise
:class:`~poisonjax.core.validation.PoisonJaxInputError`; constant scores (all clients identical,
up to ``1e-9`` relative spread) skip the fit and keep every client.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from poisonjax.core.validation import PoisonJaxInputError, check_choice, check_fraction, check_positive_int

_MIN_SAMPLES = 5


class ExponWeib(NamedTuple):
    """Fitted parameters in scipy's order ``(a, c, loc, scale)`` plus the log-likelihood."""

    a: float
    c: float
    loc: float
    scale: float
    loglik: float


# --------------------------------------------------------------------------------------------------
# density, CDF
# --------------------------------------------------------------------------------------------------

def exponweib_logpdf(x, a, c, loc, scale):
    """``log f(x; a, c, loc, scale)`` of scipy's ``exponweib`` (``-inf`` for ``x <= loc``). Any shape."""
    x = jnp.asarray(x)
    z = (x - loc) / scale
    zpos = jnp.where(z > 0, z, 1.0)
    zc = zpos ** c
    # log(1 - exp(-z^c)) computed stably for small and large z^c
    log1mexp = jnp.log(-jnp.expm1(-zc))
    lp = jnp.log(a) + jnp.log(c) + (a - 1.0) * log1mexp - zc + (c - 1.0) * jnp.log(zpos) - jnp.log(scale)
    return jnp.where(z > 0, lp, -jnp.inf)


def exponweib_cdf(x, a, c, loc, scale):
    """``F(x) = [1 - exp(-((x - loc)/scale)^c)]^a`` (0 for ``x <= loc``). Any shape."""
    z = jnp.maximum((jnp.asarray(x) - loc) / scale, 0.0)
    return jnp.power(-jnp.expm1(-(z ** c)), a)


def exponweib_loglik(samples, a, c, loc, scale) -> float:
    """Total log-likelihood ``sum_i log f(x_i)`` in float64 (numpy), for comparing fits."""
    with jax.enable_x64(True):
        x = jnp.asarray(np.asarray(samples, np.float64))
        return float(jnp.sum(exponweib_logpdf(x, a, c, loc, scale)))


# --------------------------------------------------------------------------------------------------
# maximum-likelihood fit
# --------------------------------------------------------------------------------------------------

def _unpack(theta, umin, floc):
    """theta = (log a, log c, t, log scale); loc = umin - exp(t) (< min sample) unless fixed."""
    a, c, scale = jnp.exp(theta[0]), jnp.exp(theta[1]), jnp.exp(theta[3])
    loc = jnp.where(jnp.isnan(floc), umin - jnp.exp(theta[2]), floc)
    return a, c, loc, scale


def _nll(theta, u, mask, umin, floc):
    a, c, loc, scale = _unpack(theta, umin, floc)
    v = -jnp.sum(jnp.where(mask, exponweib_logpdf(u, a, c, loc, scale), 0.0))
    return jnp.where(jnp.isfinite(v), v, jnp.inf)


_LO = jnp.array([-9.0, -6.0, -40.0, -12.0])
_HI = jnp.array([9.0, 8.0, 10.0, 14.0])


def _lm_solve(u, mask, umin, floc, theta0, iters):
    """Levenberg-Marquardt-damped Newton on the negative log-likelihood from one start.

    Each step solves ``(H + lambda I) d = -g`` (exact JAX Hessian, 4x4); the step is accepted when
    the NLL decreases, and ``lambda`` shrinks by 3 on success and grows by 5 on failure. With a
    fixed ``loc`` the ``t`` coordinate is frozen (its gradient is masked)."""
    free = jnp.where(jnp.isnan(floc), jnp.ones(4), jnp.array([1.0, 1.0, 0.0, 1.0]))
    f = functools.partial(_nll, u=u, mask=mask, umin=umin, floc=floc)
    grad = jax.grad(f)
    hess = jax.hessian(f)

    def body(carry, _):
        th, fv, lam = carry
        g = grad(th) * free
        h = hess(th) * free[:, None] * free[None, :] + jnp.diag(1.0 - free)
        g = jnp.where(jnp.isfinite(g), g, 0.0)
        h = jnp.where(jnp.isfinite(h), h, 0.0)
        # damp with the magnitude of the Hessian diagonal (Marquardt) plus an identity floor
        damp = lam * (jnp.abs(jnp.diag(h)) + 1e-3)
        d = -jnp.linalg.solve(h + jnp.diag(damp), g)
        d = jnp.where(jnp.all(jnp.isfinite(d)), d, -g * 1e-3)
        d = jnp.clip(d, -2.0, 2.0) * free
        th_new = jnp.clip(th + d, _LO, _HI)
        f_new = f(th_new)
        ok = f_new < fv
        th = jnp.where(ok, th_new, th)
        fv = jnp.where(ok, f_new, fv)
        lam = jnp.clip(jnp.where(ok, lam / 3.0, lam * 5.0), 1e-9, 1e9)
        return (th, fv, lam), None

    (th, fv, _), _ = jax.lax.scan(body, (theta0, f(theta0), jnp.asarray(1.0)), None, length=iters)
    return th, fv


@functools.partial(jax.jit, static_argnames=("iters",))
def _fit_many(u, mask, umin, floc, starts, iters):
    return jax.vmap(lambda t0: _lm_solve(u, mask, umin, floc, t0, iters))(starts)


def _starts(u: np.ndarray, floc_std: float) -> np.ndarray:
    """A grid of starting points (log a, log c, t, log scale) in standardized units.

    loc gaps span 1e-3..3 sample ranges below the minimum; for each loc the scale starts at the
    mean distance to loc (the exponential MLE when a = c = 1) and (a, c) on a small grid."""
    umin = u.min()
    rng = max(float(u.max() - umin), 1e-6)
    gaps = [np.nan] if not np.isnan(floc_std) else [1e-3 * rng, 0.03 * rng, 0.3 * rng, 1.0 * rng, 3.0 * rng]
    out = []
    for gap in gaps:
        loc = floc_std if np.isnan(gap) else umin - gap
        t = 0.0 if np.isnan(gap) else np.log(gap)
        m = float(np.mean(u - loc))
        for a in (0.3, 1.0, 4.0):
            for c in (0.7, 1.5, 4.0):
                out.append([np.log(a), np.log(c), t, np.log(max(m, 1e-8))])
    return np.asarray(out, np.float64)


def fit_exponweib(samples, *, floc: Optional[float] = None, min_samples: int = _MIN_SAMPLES,
                  iters: int = 150) -> Tuple[float, float, float, float]:
    """Maximum-likelihood fit of scipy's ``exponweib(a, c, loc, scale)`` to 1-D ``samples``.

    Returns ``(a, c, loc, scale)`` in scipy's parameterization (use :func:`fit_exponweib_full` to
    get the log-likelihood too).

    Method (implemented here in JAX, float64):

    - samples are standardized ``u = (x - mean) / sd``; shapes ``a, c`` are scale-free, and
      ``loc = mean + sd * loc_u``, ``scale = sd * scale_u`` map back (the log-likelihood shifts
      by ``-n log sd``);
    - parameters are optimised unconstrained as ``theta = (log a, log c, t, log scale)`` with
      ``loc = min(u) - exp(t)``, i.e. ``loc`` stays strictly below the smallest sample where the
      likelihood is finite (a fixed ``floc`` replaces this, as ``scipy.stats.exponweib.fit(floc=)``);
    - a 45-point grid of starts (5 loc gaps x 3 ``a`` x 3 ``c``; scale from the mean distance to
      loc), each refined by Levenberg-Marquardt-damped Newton with exact JAX Hessians, all starts
      vmapped in one jitted call; the best finite likelihood wins.

    Note: when ``a * c < 1`` the density is unbounded at ``loc`` and the likelihood grows without
    bound as ``loc -> min(x)``; the lower bound on ``t`` caps that case,
    so such fits return ``loc`` just below the minimum (as scipy's optimiser does too).
    The lower bound on ``t`` (``exp(-40) sd``) lets the fit follow scipy into that singular corner.

    Raises:
      PoisonJaxInputError: fewer than ``min_samples`` finite samples, non-finite samples, samples
        at or below a fixed ``floc``, or constant samples (no spread: the fit is degenerate;
        :func:`weidetect_select` treats that case by keeping everyone).
    """
    r = fit_exponweib_full(samples, floc=floc, min_samples=min_samples, iters=iters)
    return r.a, r.c, r.loc, r.scale


def fit_exponweib_full(samples, *, floc: Optional[float] = None, min_samples: int = _MIN_SAMPLES,
                       iters: int = 150) -> ExponWeib:
    """:func:`fit_exponweib` returning :class:`ExponWeib` (with the float64 log-likelihood)."""
    x = np.asarray(samples, np.float64)
    if x.ndim != 1:
        raise PoisonJaxInputError(f"samples must be 1-D scores [n_clients], got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise PoisonJaxInputError(f"samples contains {int((~np.isfinite(x)).sum())} non-finite values; "
                                  "expected finite scores")
    min_samples = check_positive_int("min_samples", min_samples, minimum=2)
    if x.size < min_samples:
        raise PoisonJaxInputError(
            f"fit_exponweib needs at least {min_samples} scores to fit 4 parameters, got {x.size}")
    mean, sd = float(x.mean()), float(x.std())
    if sd <= 1e-9 * max(1.0, abs(mean)):
        raise PoisonJaxInputError("samples are constant (zero spread): the exponentiated-Weibull fit is "
                                  "degenerate")
    if floc is not None and not float(floc) < x.min():
        raise PoisonJaxInputError(f"floc={floc} must be below min(samples)={x.min():.6g}")
    u = (x - mean) / sd
    floc_u = np.nan if floc is None else (float(floc) - mean) / sd
    starts = _starts(u, floc_u)
    # pad to a power-of-two bucket (masked) so that client counts share one compilation
    size = max(64, 1 << int(np.ceil(np.log2(u.size))))
    upad = np.full(size, u.max())
    upad[:u.size] = u
    mask = np.arange(size) < u.size
    with jax.enable_x64(True):
        th, fv = _fit_many(jnp.asarray(upad), jnp.asarray(mask), jnp.asarray(u.min()), jnp.asarray(floc_u),
                           jnp.asarray(starts), iters=int(iters))
        th, fv = np.asarray(th), np.asarray(fv)
    if not np.any(np.isfinite(fv)):
        raise PoisonJaxInputError("exponentiated-Weibull fit failed: no finite likelihood from any start")
    best = int(np.nanargmin(np.where(np.isfinite(fv), fv, np.inf)))
    la, lc, t, ls = th[best]
    a, c = float(np.exp(la)), float(np.exp(lc))
    if floc is not None:
        loc = float(floc)
    else:  # map back in original units, keeping loc strictly below the smallest sample
        loc = float(x.min() - sd * np.exp(t))
        if not loc < x.min():
            loc = float(np.nextafter(x.min(), -np.inf))
    scale = sd * float(np.exp(ls))
    loglik = exponweib_loglik(x, a, c, loc, scale)
    return ExponWeib(a, c, loc, scale, loglik)


# --------------------------------------------------------------------------------------------------
# phase 1: validation scores (vmapped over clients)
# --------------------------------------------------------------------------------------------------

def confusion_matrix(y_true, y_pred, num_classes: int):
    """``[C, C]`` counts, rows = true class, columns = predicted class (jit/vmap-safe)."""
    idx = y_true * num_classes + y_pred
    return jnp.bincount(idx, length=num_classes * num_classes).reshape(num_classes, num_classes)


def macro_f1(y_true, y_pred, num_classes: int):
    """Macro-averaged F1 over ``num_classes`` (as sklearn's ``f1_score(average="macro",
    labels=range(C), zero_division=0)``)."""
    cm = confusion_matrix(y_true, y_pred, num_classes).astype(jnp.float32)
    tp = jnp.diag(cm)
    denom = cm.sum(0) + cm.sum(1)
    f1 = jnp.where(denom > 0, 2 * tp / jnp.maximum(denom, 1), 0.0)
    return f1.mean()


def class_recall(y_true, y_pred, cls: int):
    """Recall of class ``cls``: ``TP / (TP + FN)``."""
    pos = y_true == cls
    return jnp.sum(pos & (y_pred == cls)) / jnp.maximum(jnp.sum(pos), 1)


def check_validation_labels(y_val, num_classes: int, metric: str, target_class: Optional[int]) -> None:
    """Raise if the validation labels lack a class the score needs (every class for macro-F1, the
    target class for target recall)."""
    check_choice("metric", metric, ("macro_f1", "target_recall"))
    y = np.asarray(y_val)
    present = set(np.unique(y).tolist())
    if metric == "target_recall":
        if target_class is None:
            raise PoisonJaxInputError("metric='target_recall' needs target_class (an int class id)")
        if int(target_class) not in present:
            raise PoisonJaxInputError(
                f"validation set has no sample of target_class={target_class}; target-class recall is "
                f"undefined (classes present: {sorted(present)})")
    else:
        missing = sorted(set(range(num_classes)) - present)
        if missing:
            raise PoisonJaxInputError(
                f"validation set is missing classes {missing} of {num_classes}; macro-F1 scoring needs every "
                "class (use metric='target_recall' or a stratified validation split)")


def client_scores(apply_fn: Callable, client_params, x_val, y_val, *, num_classes: int,
                  metric: str = "macro_f1", target_class: Optional[int] = None, check: bool = True):
    """Phase 1: ``s [n_clients]`` = score of each client model on the validation set.

    Args:
      apply_fn: ``apply_fn(params, x [M, ...]) -> logits [M, C]``.
      client_params: pytree whose leaves have a leading client axis ``[n_clients, ...]``
        (full weights ``w_global + delta_i``).
      x_val, y_val: validation inputs ``[M, ...]`` and int labels ``[M]``.
      metric: ``"macro_f1"`` or ``"target_recall"`` (then ``target_class`` is required).
    """
    if check:
        check_validation_labels(y_val, num_classes, metric, target_class)
    y = jnp.asarray(y_val, jnp.int32)

    def one(p):
        pred = jnp.argmax(apply_fn(p, x_val), -1)
        if metric == "macro_f1":
            return macro_f1(y, pred, num_classes)
        return class_recall(y, pred, int(target_class))

    return jax.vmap(one)(client_params)


# --------------------------------------------------------------------------------------------------
# phase 2: selection and aggregation
# --------------------------------------------------------------------------------------------------

def weidetect_select(scores, *, selection: str = "cdf", threshold: float = 0.2, top_k: Optional[int] = None,
                     min_samples: int = _MIN_SAMPLES) -> Dict[str, Any]:
    """Fit the exponentiated Weibull to ``scores [n]`` and choose the clients to keep.

    Returns a dict with ``keep [n] bool``, ``cdf [n]`` (``F(s_i)``), ``params`` (``a, c, loc, scale``;
    ``None`` when the scores are constant) and ``constant`` (bool). Constant scores keep everyone.
    """
    check_choice("selection", selection, ("cdf", "top_k"))
    s = np.asarray(scores, np.float64)
    if s.ndim != 1:
        raise PoisonJaxInputError(f"scores must be 1-D [n_clients], got shape {s.shape}")
    if s.size < min_samples:
        raise PoisonJaxInputError(f"WeiDetect needs at least {min_samples} client scores to fit the Weibull, "
                                  f"got {s.size}")
    if not np.all(np.isfinite(s)):
        raise PoisonJaxInputError("scores contains non-finite values (a client model produced NaN?)")
    if s.std() <= 1e-9 * max(1.0, abs(s.mean())):
        return dict(keep=np.ones(s.size, bool), cdf=np.ones(s.size), params=None, constant=True)
    fit = fit_exponweib_full(s, min_samples=min_samples)
    with jax.enable_x64(True):
        cdf = np.asarray(exponweib_cdf(jnp.asarray(s), fit.a, fit.c, fit.loc, fit.scale))
    if selection == "cdf":
        check_fraction("threshold", threshold, low_inclusive=True, high_inclusive=True)
        keep = cdf >= threshold
        if not keep.any():  # never drop everyone: keep the best-scoring client(s)
            keep = s >= s.max()
    else:
        k = check_positive_int("top_k", top_k if top_k is not None else 0)
        if k > s.size:
            raise PoisonJaxInputError(f"top_k={k} exceeds the number of clients {s.size}")
        order = np.argsort(-s, kind="stable")
        keep = np.zeros(s.size, bool)
        keep[order[:k]] = True
    return dict(keep=keep, cdf=cdf, params=(fit.a, fit.c, fit.loc, fit.scale), loglik=fit.loglik, constant=False)


def weidetect(updates, scores, state=None, *, selection: str = "cdf", threshold: float = 0.2,
              top_k: Optional[int] = None, weights=None, min_samples: int = _MIN_SAMPLES):
    """WeiDetect aggregation: ``(aggregate, state, report)``.

    Args:
      updates: ``[n, d]`` array or pytree with leading client axis ``n`` (client updates ``delta_i``).
      scores: ``[n]`` phase-1 validation scores of the client models (see :func:`client_scores`).
      selection / threshold / top_k: see :func:`weidetect_select`.
      weights: optional ``[n]`` non-negative aggregation weights (e.g. client data sizes); the
        aggregate is ``sum_{i kept} w_i delta_i / sum_{i kept} w_i`` (plain mean by default).

    ``report``: ``scores`` (``1 - F(s_i)``, higher = more suspicious, the engine's convention),
    ``val_scores`` (the phase-1 scores), ``cdf``, ``flags`` (True = flagged malicious = not kept),
    ``kept``, ``params`` and ``constant``. ``state`` is passed through unchanged (WeiDetect is stateless).
    """
    sel = weidetect_select(scores, selection=selection, threshold=threshold, top_k=top_k, min_samples=min_samples)
    keep = jnp.asarray(sel["keep"])
    n = keep.shape[0]
    w = jnp.ones(n) if weights is None else jnp.asarray(weights, jnp.float32)
    w = jnp.where(keep, w, 0.0)
    w = w / jnp.maximum(w.sum(), 1e-12)

    def avg(leaf):
        if leaf.shape[0] != n:
            raise PoisonJaxInputError(f"updates leading axis {leaf.shape[0]} != number of scores {n}")
        return jnp.tensordot(w.astype(leaf.dtype), leaf, axes=1)

    agg = jax.tree.map(avg, updates)
    report = dict(scores=1.0 - np.asarray(sel["cdf"]), val_scores=np.asarray(scores, np.float64), cdf=sel["cdf"],
                  flags=~sel["keep"], kept=sel["keep"], params=sel["params"], constant=sel["constant"])
    return agg, state, report


# --------------------------------------------------------------------------------------------------
# in-graph version for the simulation (jit / lax.scan / vmap safe, float32)
# --------------------------------------------------------------------------------------------------

def fit_exponweib_traced(s: jax.Array, valid: jax.Array, iters: int = 50):
    """Traceable exponentiated-Weibull MLE of the ``valid`` entries of ``s [n]`` (float32).

    Same method as :func:`fit_exponweib` (standardize, ``loc = min - exp(t)``, multistart
    Levenberg-Marquardt Newton) but built from ``jnp`` only, so it runs inside the simulation's
    compiled round. Returns ``(params [4] = (a, c, loc, scale), constant: bool)``; when the valid
    scores have (near) zero spread ``constant`` is True and the params are meaningless.
    """
    s = s.astype(jnp.float32)
    nv = jnp.maximum(jnp.sum(valid), 1)
    mean = jnp.sum(jnp.where(valid, s, 0.0)) / nv
    var = jnp.sum(jnp.where(valid, (s - mean) ** 2, 0.0)) / nv
    sd = jnp.sqrt(var)
    constant = sd <= 1e-6 * jnp.maximum(1.0, jnp.abs(mean))
    sd_safe = jnp.where(constant, 1.0, sd)
    u = (s - mean) / sd_safe
    umin = jnp.min(jnp.where(valid, u, jnp.inf))
    umax = jnp.max(jnp.where(valid, u, -jnp.inf))
    u = jnp.where(valid, u, umax)
    rng = jnp.maximum(umax - umin, 1e-6)
    gaps = rng * jnp.array([1e-3, 0.03, 0.3, 1.0, 3.0])
    # 15 starts: every loc gap with three (a, c) pairs (the host fit uses the full 3 x 3 grid)
    ac = jnp.log(jnp.array([[0.3, 0.7], [1.0, 1.5], [4.0, 4.0]]))
    G = jnp.repeat(gaps, 3)
    A, C = jnp.tile(ac[:, 0], 5), jnp.tile(ac[:, 1], 5)
    m = jax.vmap(lambda g: jnp.sum(jnp.where(valid, u - (umin - g), 0.0)) / nv)(G)
    starts = jnp.stack([A, C, jnp.log(G), jnp.log(jnp.maximum(m, 1e-6))], axis=1)
    nan = jnp.float32(jnp.nan)
    th, fv = jax.vmap(lambda t0: _lm_solve(u, valid, umin, nan, t0, iters))(starts)
    fv = jnp.where(jnp.isfinite(fv), fv, jnp.inf)
    b = jnp.argmin(fv)
    la, lc, t, ls = th[b]
    smin = jnp.min(jnp.where(valid, s, jnp.inf))
    params = jnp.stack([jnp.exp(la), jnp.exp(lc), smin - sd_safe * jnp.exp(t), sd_safe * jnp.exp(ls)])
    return params, constant


def _weidetect_need(n, kw):
    ms = int(kw.get("min_samples", _MIN_SAMPLES))
    return ms, f"WeiDetect needs at least {ms} client scores to fit the exponentiated Weibull"


def _weidetect_inner(x, valid, state, key, context, weights, *, scores=None, metric: str = "macro_f1",
                     target_class: Optional[int] = None, selection: str = "cdf", threshold: float = 0.2,
                     top_k: Optional[int] = None, min_samples: int = _MIN_SAMPLES, val_x=None, val_y=None,
                     iters: int = 50):
    n = x.shape[0]
    check_choice("selection", selection, ("cdf", "top_k"))
    check_choice("metric", metric, ("macro_f1", "target_recall"))
    if scores is None:
        if context is None:
            raise PoisonJaxInputError("weidetect_aggregator needs scores=[n] or a context (client models + validation data)")
        vx = context.aux_x if val_x is None else val_x
        vy = context.aux_y if val_y is None else val_y
        if not isinstance(vy, jax.core.Tracer):
            check_validation_labels(np.asarray(vy), context.num_classes, metric, target_class)
        elif metric == "target_recall" and target_class is None:
            raise PoisonJaxInputError("metric='target_recall' needs target_class (an int class id)")
        logits = context.client_logits(x, vx)                       # [n, M, C]
        preds = jnp.argmax(logits, -1)
        yv = jnp.asarray(vy, jnp.int32)
        if metric == "macro_f1":
            scores = jax.vmap(lambda p: macro_f1(yv, p, context.num_classes))(preds)
        else:
            scores = jax.vmap(lambda p: class_recall(yv, p, int(target_class)))(preds)
    s = jnp.asarray(scores, jnp.float32)
    if s.shape != (n,):
        raise PoisonJaxInputError(f"scores must have shape ({n},), got {s.shape}")
    valid = valid & jnp.isfinite(s)
    s = jnp.where(valid, s, 0.0)
    params, constant = fit_exponweib_traced(s, valid, iters)
    cdf = exponweib_cdf(s, params[0], params[1], params[2], params[3])
    cdf = jnp.where(constant, 1.0, cdf)
    if selection == "cdf":
        keep = cdf >= threshold
    else:
        k = check_positive_int("top_k", top_k if top_k is not None else 0)
        rank = jnp.argsort(jnp.argsort(-jnp.where(valid, s, -jnp.inf)))
        keep = (rank < k) | constant
    keep = keep & valid
    best = valid & (s >= jnp.max(jnp.where(valid, s, -jnp.inf)))
    keep = jnp.where(jnp.any(keep), keep, best)
    w = keep.astype(jnp.float32) if weights is None else jnp.where(keep, weights, 0.0)
    agg = jnp.where(jnp.sum(w) > 0, (w @ x) / jnp.maximum(jnp.sum(w), 1e-12), 0.0)
    report = dict(scores=jnp.where(valid, 1.0 - cdf, jnp.inf), flags=valid & ~keep,
                  weights=w / jnp.maximum(w.sum(), 1e-12), val_scores=s, cdf=cdf, weibull=params,
                  constant=constant)
    return agg, state, report


def make_weidetect_aggregator():
    """Build the decorated in-graph aggregator lazily (the engine's decorator lives in ``aggregators``)."""
    from poisonjax.federated.aggregators import aggregator_fn
    return aggregator_fn(_weidetect_need)(_weidetect_inner)


def weidetect_aggregator(updates, state=None, key=None, *, context=None, valid=None, weights=None,
                         nan_policy: str = "raise", **hyper):
    """WeiDetect as an engine aggregator ``(aggregate, state, report)``, usable inside ``jit``.

    Phase 1 scores every client model ``w_g + delta_i`` on the validation data (``context.aux_x/aux_y``
    by default, or ``val_x``/``val_y``; or pass precomputed ``scores [n]``) with ``metric``
    (``"macro_f1"`` or ``"target_recall"`` + ``target_class``). Phase 2 fits the exponentiated Weibull
    in-graph (:func:`fit_exponweib_traced`) and keeps ``F(s_i) >= threshold`` (or the ``top_k``).
    ``report``: ``scores`` = ``1 - F(s_i)`` (higher = more suspicious), ``flags``, ``weights``,
    ``val_scores``, ``cdf``, ``weibull`` ``[4]``, ``constant``. A validation set lacking a class the
    metric needs raises :class:`PoisonJaxInputError` when the labels are concrete (check them with
    :func:`check_validation_labels` before a simulation, as the study does).
    """
    return make_weidetect_aggregator()(updates, state, key, context=context, valid=valid, weights=weights,
                                       nan_policy=nan_policy, **hyper)


def make_aggregator(**hyper):
    """WeiDetect as an :class:`~poisonjax.federated.aggregators.Aggregator` (stateless) for the simulation."""
    from poisonjax.federated.aggregators import Aggregator
    return Aggregator("weidetect", functools.partial(weidetect_aggregator, **hyper), lambda n, d: None, ())
