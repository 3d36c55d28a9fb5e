r"""Differential-privacy mechanisms: per-sample L2 clipping, Gaussian noise calibration, noising.

The Gaussian mechanism releases :math:`M(x) = \mathrm{clip}_\Delta(x) + \mathcal N(0, \sigma^2 I)` where
:math:`\mathrm{clip}_\Delta(x) = x \cdot \min(1, \Delta / \lVert x \rVert_2)` bounds the L2 sensitivity
of each per-sample vector by :math:`\Delta` (replacing one sample's vector moves the output by at most
:math:`\Delta` when the clean vector is swapped for the clipped zero vector; we follow the usual convention
of calibrating to sensitivity :math:`\Delta`).

* :func:`classic_gaussian_sigma` -- Dwork & Roth (2014, Thm. A.1):
  :math:`\sigma = \sqrt{2 \ln(1.25/\delta)}\, \Delta / \varepsilon`, valid for
  :math:`\varepsilon \in (0, 1]`, :math:`\delta \in (0, 1)`.
* :func:`analytic_gaussian_sigma` -- Balle & Wang (ICML 2018, "Improving the Gaussian mechanism for
  differential privacy: analytical calibration and optimal denoising", Thm. 8): the smallest
  :math:`\sigma` with :math:`\Phi(\tfrac{\Delta}{2\sigma} - \tfrac{\varepsilon\sigma}{\Delta})
  - e^{\varepsilon}\Phi(-\tfrac{\Delta}{2\sigma} - \tfrac{\varepsilon\sigma}{\Delta}) \le \delta`,
  exact for every :math:`\varepsilon > 0` (found by bisection in :math:`\log\sigma`; jit-able).
* :func:`gaussian_sigma` dispatches on ``mechanism`` ("classic" | "analytic").
* :func:`clip_l2`, :func:`add_gaussian_noise`, :func:`gaussian_mechanism`.

Host-side checks (:func:`check_eps_delta`) raise :class:`~poisonjax.core.validation.PoisonJaxInputError`
for out-of-range arguments; the jnp functions themselves are pure and work under ``jit``/``vmap``
(``eps`` may be a traced array, e.g. an adaptive per-party budget).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from poisonjax.core.validation import PoisonJaxInputError

MECHANISMS = ("classic", "analytic")


def check_eps_delta(eps, delta, mechanism: str = "classic", *, name: str = "eps") -> None:
    """Raise a one-line :class:`PoisonJaxInputError` unless ``delta`` is in (0, 1) and ``eps`` is in
    (0, 1] (``mechanism="classic"``) or (0, inf) (``mechanism="analytic"``). ``eps`` may be an array."""
    import numpy as np
    if mechanism not in MECHANISMS:
        raise PoisonJaxInputError(f"unknown mechanism {mechanism!r}; expected one of {list(MECHANISMS)}")
    try:
        d = float(delta)
    except (TypeError, ValueError):
        raise PoisonJaxInputError(f"delta must be a number in (0, 1), got {delta!r}")
    if not (0.0 < d < 1.0):
        raise PoisonJaxInputError(f"delta must be in (0, 1), got {delta!r}")
    e = np.asarray(eps, dtype=np.float64)
    if e.size == 0 or not np.all(np.isfinite(e)) or np.any(e <= 0):
        raise PoisonJaxInputError(f"{name} must be > 0 and finite, got {eps!r}")
    if mechanism == "classic" and np.any(e > 1.0):
        raise PoisonJaxInputError(
            f"{name} must be in (0, 1] for the classic Gaussian mechanism (sigma = sqrt(2 ln(1.25/delta)) "
            f"Delta / eps holds only there), got {eps!r}; use mechanism='analytic' for larger eps")


def classic_gaussian_sigma(eps, delta: float, sensitivity=1.0):
    r""":math:`\sigma = \sqrt{2\ln(1.25/\delta)}\,\Delta/\varepsilon` (Dwork & Roth 2014, Thm. A.1).

    Args:
      eps: scalar or array of privacy budgets in (0, 1] (not checked here: call
        :func:`check_eps_delta` on the host).
      delta: in (0, 1).
      sensitivity: the L2 sensitivity :math:`\Delta` (the clipping norm).
    Returns: sigma with ``eps``'s shape.
    """
    return jnp.sqrt(2.0 * math.log(1.25 / float(delta))) * sensitivity / jnp.asarray(eps, jnp.float32)


def _analytic_delta(sigma, eps, sens):
    """delta(sigma) of the Gaussian mechanism (Balle & Wang 2018, Thm. 8)."""
    Phi = jax.scipy.stats.norm.cdf
    a = sens / (2.0 * sigma)
    b = eps * sigma / sens
    # e^eps * Phi(-a - b), computed in log space to avoid overflow for large eps
    log_tail = jax.scipy.stats.norm.logcdf(-a - b) + eps
    return Phi(a - b) - jnp.exp(log_tail)


def analytic_gaussian_sigma(eps, delta: float, sensitivity=1.0, iters: int = 80):
    r"""The analytic Gaussian mechanism's :math:`\sigma` (Balle & Wang 2018): the smallest
    :math:`\sigma` with :math:`\Phi(\Delta/2\sigma - \varepsilon\sigma/\Delta) - e^{\varepsilon}
    \Phi(-\Delta/2\sigma - \varepsilon\sigma/\Delta) \le \delta`, by ``iters`` bisection steps on
    :math:`\log\sigma \in [\log(10^{-4}\Delta), \log(10^{4}\Delta)]` (delta(sigma) is decreasing).

    Valid for any ``eps > 0`` (scalar or array; jit/vmap-able). For ``eps <= 1`` it is never larger
    than :func:`classic_gaussian_sigma`.
    """
    eps = jnp.asarray(eps, jnp.float32)
    sens = jnp.asarray(sensitivity, jnp.float32)
    lo = jnp.full(eps.shape, jnp.log(sens * 1e-4))
    hi = jnp.full(eps.shape, jnp.log(sens * 1e4))

    def body(_, lohi):
        lo, hi = lohi
        mid = 0.5 * (lo + hi)
        ok = _analytic_delta(jnp.exp(mid), eps, sens) <= delta  # sigma large enough
        return jnp.where(ok, lo, mid), jnp.where(ok, mid, hi)

    lo, hi = jax.lax.fori_loop(0, iters, body, (lo, hi))
    return jnp.exp(hi)


def gaussian_sigma(eps, delta: float, sensitivity=1.0, mechanism: str = "classic"):
    """Noise scale for ``mechanism`` in {"classic", "analytic"} (see the module docstring)."""
    if mechanism == "classic":
        return classic_gaussian_sigma(eps, delta, sensitivity)
    if mechanism == "analytic":
        return analytic_gaussian_sigma(eps, delta, sensitivity)
    raise PoisonJaxInputError(f"unknown mechanism {mechanism!r}; expected one of {list(MECHANISMS)}")


def clip_l2(x, max_norm, axis=-1):
    r"""Per-sample L2 clipping :math:`x \min(1, \Delta/\lVert x\rVert_2)` along ``axis``
    (``x [..., D]``; every vector over the other axes is clipped separately)."""
    # + tiny inside the sqrt keeps the gradient finite (0) at x = 0 (e.g. an all-blank image strip)
    norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True) + 1e-24)
    return x * jnp.minimum(1.0, max_norm / jnp.maximum(norm, 1e-12))


def add_gaussian_noise(key, x, sigma):
    """``x + sigma * N(0, I)``; ``sigma`` broadcasts against ``x``."""
    return x + sigma * jax.random.normal(key, x.shape, x.dtype)


def gaussian_mechanism(key, x, eps, delta: float, clip_norm=1.0, mechanism: str = "classic"):
    r"""Clip each row of ``x [..., D]`` to L2 norm ``clip_norm`` (= :math:`\Delta`) and add
    :math:`\mathcal N(0, \sigma^2)` noise with :math:`\sigma` = :func:`gaussian_sigma` ``(eps, delta,
    clip_norm, mechanism)``. Returns ``(noisy [..., D], sigma)``. Range checks are the caller's
    (:func:`check_eps_delta`), since ``eps`` may be traced."""
    sigma = gaussian_sigma(eps, delta, clip_norm, mechanism)
    return add_gaussian_noise(key, clip_l2(x, clip_norm), sigma), sigma


__all__ = ["MECHANISMS", "add_gaussian_noise", "analytic_gaussian_sigma", "check_eps_delta", "classic_gaussian_sigma",
           "clip_l2", "gaussian_mechanism", "gaussian_sigma"]
