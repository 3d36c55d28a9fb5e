r"""SPECTRE (Hayase, Kong, Somani & Oh, "SPECTRE: defending against backdoor attacks using robust
statistics", ICML 2021): robust covariance estimation, whitening and quantum-entropy (QUE) scores.

For every class :math:`c` (all classes at once, ``vmap`` with row masks) with features
:math:`h_i \in \mathbb{R}^D` of the rows labelled :math:`c`:

1. **PCA** to ``k`` dimensions: :math:`z_i = U_k^\top (h_i - \bar h_c)`.
2. **Robust covariance** :math:`\hat\Sigma` of the :math:`z_i` (the paper's DKK17 filter,
   Diakonikolas et al. 2017): repeat ``filter_iters`` times -- whiten the still-selected rows by
   their covariance, :math:`y_i = \Sigma_S^{-1/2} z_i`, take the top eigenvector :math:`v` of the
   fourth-moment operator :math:`T = \frac1{|S|}\sum_{i\in S} (y_i\otimes y_i)(y_i\otimes y_i)^\top
   - \mathrm{vec}(I)\mathrm{vec}(I)^\top` (a :math:`k^2 \times k^2` matrix), reshape it to a
   symmetric :math:`V` (by power iteration on the operator, never forming the matrix), score :math:`p_i = (y_i^\top V y_i - \mathrm{tr} V)/\sqrt 2` and remove the
   rows whose :math:`|p_i - \mathrm{median}(p)|` is largest; :math:`\hat\Sigma` is the covariance of
   the rows left.
3. **Whitening** of every row: :math:`w_i = \hat\Sigma^{-1/2} z_i`; :math:`\Sigma' = \mathrm{cov}(w)`.
4. **QUE scores**: :math:`M = \exp\!\big(\alpha (\Sigma' - I)/(\|\Sigma'\|_2 - 1)\big)/\mathrm{tr}(\cdot)`,
   :math:`\tau_i = w_i^\top M w_i` (``alpha = 4``, the paper's default). Poisons, which the robust
   estimate leaves out, stand out along the directions where :math:`\Sigma'` exceeds the identity.

Then, like :func:`~poisonjax.vision.backdoor.detectors.spectral_signatures`, the
``round(multiplier * poison_budget * N)`` highest-scoring rows over all classes are flagged (the
whitened scores are on a common scale across classes, so no per-class normalisation is needed).

Simplified versus the paper's Julia code: (a) the filter's direction is the top eigenvector of the fourth-moment operator *minus its
Gaussian value* (the reference code compares the eigenvalue with that value instead; without it a
class that is one third poisons, as a dirty-label target class here is, has a fourth-moment
*deficit* the top eigenvector misses), found by power iteration; it removes a fixed number of rows per
iteration (``limit1 x`` the class's expected poison count spread over ``filter_iters`` steps,
at most half the class) instead of the DKK17 tail-bound threshold and early stop; (b) ``k`` is
fixed (default 16, or ``D`` if smaller) instead of the paper's search over 10 values of ``k``
maximising :math:`\mathrm{tr}(\Sigma' M)`; (c) it runs on every class with the poison budget spread
as :math:`\epsilon_c = \min(1/2, \text{budget}\cdot N / n_c)` rather than on a known target label.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from poisonjax.core.validation import check_fraction, check_positive_int
from poisonjax.vision.backdoor.detectors import DetectionReport, check_features, flag_top_k


def _sym_pow(a, p, floor=1e-6):
    lam, vec = jnp.linalg.eigh((a + a.T) / 2)
    return (vec * jnp.maximum(lam, floor) ** p) @ vec.T


def _expm_sym(a):
    lam, vec = jnp.linalg.eigh((a + a.T) / 2)
    return (vec * jnp.exp(lam - lam.max())) @ vec.T          # scaled; M is normalised by its trace


def _top_fourth_moment_direction(y, sel, v0, iters):
    r"""Top (largest-magnitude) eigenvector, as a symmetric ``[k, k]`` matrix :math:`V`, of
    :math:`T(V) = \frac{1}{|S|}\sum_{i\in S} (y_i^\top V y_i)\, y_i y_i^\top - \mathrm{tr}(V) I - 2V`
    (the operator :math:`E[(y\otimes y)(y\otimes y)^\top] - \mathrm{vec}(I)\mathrm{vec}(I)^\top` applied
    to :math:`\mathrm{vec}(V)`, minus its value :math:`2V` for a standard Gaussian, so that both an
    excess and a deficit of fourth moment -- a small or a large poisoned fraction -- stand out), by
    ``iters`` power iterations, never forming the :math:`k^2\times k^2` matrix."""
    n = jnp.maximum(sel.sum(), 1.0)

    def t_op(v):
        q = jnp.einsum("ni,ij,nj->n", y, v, y) * sel / n
        return (y * q[:, None]).T @ y - jnp.trace(v) * jnp.eye(v.shape[0]) - 2.0 * v

    def body(v, _):
        w = t_op(v)
        w = (w + w.T) / 2
        return w / jnp.maximum(jnp.linalg.norm(w), 1e-12), None

    v, _ = jax.lax.scan(body, v0 / jnp.linalg.norm(v0), None, length=iters)
    return v


def _masked_cov(z, m):
    n = jnp.maximum(m.sum(), 1.0)
    mu = (z * m[:, None]).sum(0) / n
    zc = (z - mu) * m[:, None]
    return zc.T @ zc / n, mu


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 8))
def _spectre_core(f, lab, num_classes, k, filter_iters, budget_rows, alpha, limit1, power_iters):
    r0 = jax.random.normal(jax.random.PRNGKey(0), (k, k))
    v0 = (r0 + r0.T) / 2 + jnp.eye(k)

    def per_class(c):
        m = (lab == c).astype(jnp.float32)
        n_c = jnp.maximum(m.sum(), 1.0)
        cov, mu = _masked_cov(f, m)
        lam, vec = jnp.linalg.eigh(cov)
        z = (f - mu) @ vec[:, ::-1][:, :k]                          # [N, k] PCA coordinates
        eps_c = jnp.minimum(0.5, budget_rows / n_c)
        total_remove = jnp.minimum(limit1 * eps_c * n_c, 0.5 * n_c)
        per_iter = total_remove / filter_iters

        def filt(sel, i):
            s_cov, s_mu = _masked_cov(z, sel)
            y = (z - s_mu) @ _sym_pow(s_cov, -0.5)                  # [N, k]
            v = _top_fourth_moment_direction(y, sel, v0, power_iters)
            p = (jnp.einsum("ni,ij,nj->n", y, v, y) - jnp.trace(v)) / jnp.sqrt(2.0)
            med = jnp.nanmedian(jnp.where(sel > 0, p, jnp.nan))
            dev = jnp.where(sel > 0, jnp.abs(p - med), -jnp.inf)
            # remove the rows ranked in [0, n_remove) by deviation (count fixed per iteration)
            n_remove = jnp.floor(per_iter * (i + 1)) - jnp.floor(per_iter * i)
            rank = jnp.argsort(jnp.argsort(-dev))
            return sel * (rank >= n_remove).astype(jnp.float32), None

        sel, _ = jax.lax.scan(filt, m, jnp.arange(filter_iters, dtype=jnp.float32))
        r_cov, r_mu = _masked_cov(z, sel)
        w = (z - r_mu) @ _sym_pow(r_cov, -0.5)                      # whitened with the robust estimate
        cov_w, _ = _masked_cov(w, m)
        op = jnp.linalg.eigvalsh((cov_w + cov_w.T) / 2)[-1]
        mat = _expm_sym(alpha * (cov_w - jnp.eye(k)) / jnp.maximum(op - 1.0, 1e-6))
        mat = mat / jnp.trace(mat)
        que = jnp.einsum("ni,ij,nj->n", w, mat, w)
        return jnp.where(m > 0, que, 0.0), jnp.trace(cov_w @ mat), sel

    que, op, sel = jax.vmap(per_class)(jnp.arange(num_classes))
    return que.sum(0), op, sel.sum(0) > 0


def spectre(features, labels, num_classes: int, *, poison_budget: float, multiplier: float = 1.5,
            k: int = 16, alpha: float = 4.0, filter_iters: int = 8, limit1: float = 2.0,
            power_iters: int = 30) -> DetectionReport:
    r"""SPECTRE (Hayase et al. ICML 2021), see the module docstring for the math and simplifications.

    Args:
      features: ``[N, D]`` penultimate activations of the (poisoned) victim on the training set.
      labels: ``[N]`` labels of the poisoned set; num_classes: number of labels.
      poison_budget: expected poisoned fraction of the set, in [0, 1]; ``round(multiplier *
        poison_budget * N)`` rows are flagged (the paper removes 1.5 x the budget).
      k: PCA dimension (at most ``D``); alpha: QUE's temperature; filter_iters / limit1: the robust
        covariance filter's number of steps and total removal (``limit1 x`` expected poisons);
        power_iters: power iterations for the filter's top fourth-moment direction.

    Returns:
      ``DetectionReport(scores [N] = QUE score (higher = more suspicious), flags [N], info)`` with
      ``info["class_score"] [num_classes]`` :math:`\mathrm{tr}(\Sigma' M)` per class (largest on the
      poisoned class) and ``info["robust_selected"] [N]`` the rows the covariance estimate kept.
    """
    poison_budget = check_fraction("poison_budget", poison_budget, low_inclusive=True)
    k = check_positive_int("k", k)
    filter_iters = check_positive_int("filter_iters", filter_iters)
    f, lab = check_features(features, labels, num_classes)
    n = int(f.shape[0])
    kk = int(min(k, f.shape[1]))
    n_flag = int(round(multiplier * poison_budget * n))
    if not 0 <= n_flag <= n:
        flag_top_k(jnp.zeros(n), n_flag, "poison_budget * multiplier")        # raises the one-line error
    que, op, sel = _spectre_core(f, lab, int(num_classes), kk, filter_iters, float(poison_budget * n),
                                 float(alpha), float(limit1), int(power_iters))
    return DetectionReport(que, flag_top_k(que, n_flag, "poison_budget * multiplier"),
                           {"class_score": op, "robust_selected": sel, "removed": n_flag})
