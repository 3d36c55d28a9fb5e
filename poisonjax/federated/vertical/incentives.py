r"""OPUS-VFL's contribution, incentive and privacy-utility pieces (Madabushi et al. 2025, arXiv:2504.15995).

All functions are pure jnp over per-party vectors of length ``P`` (party 0 active, parties 1..P-1
passive; ``passive [P]`` is the 0/1 mask of parties that are paid and choose an ``eps``).

* :func:`loo_losses` -- the validation loss with all parties and with each party ``k`` dropped, in one
  ``vmap`` over the ``P + 1`` drop masks ``[1, 1 - e_0, ..., 1 - e_{P-1}]``; a dropped party's embedding is
  zeroed (``drop_mode="zero"``) or replaced by its batch mean (``"mean"``, mean imputation).
* :func:`loo_contribution` -- :math:`c_k = (L_{-k} - L) / L`.
* :func:`raw_rewards` / :func:`balanced_rewards` -- :math:`r_k = \alpha c_k\, \mathrm{cost}_k^{1/5} +
  \beta \Delta / \varepsilon_k`, then :math:`R_k = \tau\, r_k^+ / \sum_j r_j^+` over passive parties
  (negative raw rewards are floored at 0, so a party that hurts the model is never paid for it; when every
  raw reward is 0 the budget is split equally). :math:`\sum_k R_k = \tau` every round.
* :func:`equal_split` -- the baseline :math:`R_k = \tau / (P - 1)`.
* :func:`epsilon_step` -- :math:`\varepsilon_k \leftarrow \mathrm{clip}(\varepsilon_k + \eta\,
  \partial U_k / \partial \varepsilon_k, \varepsilon_{\min}, \varepsilon_{\max})` with
  :math:`U_k = R_k - \mathrm{cost}_k` and :math:`\partial c_k / \partial \varepsilon_k` from a central finite
  difference of the LOO loss (cost does not depend on eps).
* :func:`bottom_flops` -- per-party cost proxy: FLOPs of one bottom-model forward per sample.

Paper vs. this code: the paper normalises rewards to the budget but does not say what happens to negative
contributions; we floor at 0 (stated above). The paper's party-side update uses the gradient of
:math:`U_k`; we differentiate the *normalised* reward (the quotient rule through :math:`\sum_j r_j^+`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def drop_masks(num_parties: int):
    """``[P + 1, P]``: row 0 keeps everybody, row ``k + 1`` drops party ``k``."""
    return jnp.concatenate([jnp.ones((1, num_parties)), 1.0 - jnp.eye(num_parties)], axis=0)


def apply_drop(sent, mask, drop_mode: str = "zero"):
    """``sent [P, B, E]`` with parties where ``mask [P] == 0`` zeroed or mean-imputed (batch mean)."""
    m = mask[:, None, None]
    if drop_mode == "zero":
        return sent * m
    if drop_mode == "mean":
        return m * sent + (1.0 - m) * jnp.mean(sent, axis=1, keepdims=True)
    raise ValueError(f"drop_mode must be 'zero' or 'mean', got {drop_mode!r}")


def loo_losses(loss_of_sent, sent, drop_mode: str = "zero"):
    r"""``[P + 1]`` losses: ``loss_of_sent(apply_drop(sent, m))`` for every drop mask (one vmap).

    ``loss_of_sent(sent [P, B, E]) -> scalar`` is the active party's validation loss.
    """
    masks = drop_masks(sent.shape[0])
    return jax.vmap(lambda m: loss_of_sent(apply_drop(sent, m, drop_mode)))(masks)


def loo_contribution(losses):
    r""":math:`c_k = (L_{-k} - L) / L` from :func:`loo_losses`' ``[P + 1]`` vector; returns ``[P]``."""
    return (losses[1:] - losses[0]) / losses[0]


def raw_rewards(contrib, cost, eps, passive, alpha: float, beta: float, clip_norm: float):
    r""":math:`r_k = \alpha c_k \mathrm{cost}_k^{1/5} + \beta \Delta / \varepsilon_k` on passive parties, 0 on
    the active one. All inputs ``[P]``."""
    r = alpha * contrib * jnp.power(cost, 0.2) + beta * clip_norm / eps
    return jnp.where(passive > 0, r, 0.0)


def balanced_rewards(raw, passive, tau: float):
    r""":math:`R_k = \tau r_k^+ / \sum_j r_j^+` (passive parties; equal split if every :math:`r^+` is 0).
    Returns ``(R [P], S)`` with ``S`` the normaliser."""
    pos = jnp.maximum(raw, 0.0) * passive
    s = jnp.sum(pos)
    eq = equal_split(passive, tau)
    return jnp.where(s > 0, tau * pos / jnp.where(s > 0, s, 1.0), eq), s


def equal_split(passive, tau: float):
    r""":math:`R_k = \tau / |\mathrm{passive}|` on passive parties."""
    return tau * passive / jnp.maximum(jnp.sum(passive), 1.0)


def reward_eps_gradient(raw, s, dcontrib_deps, cost, eps, passive, alpha, beta, clip_norm, tau):
    r""":math:`\partial R_k / \partial \varepsilon_k` of the normalised reward, with
    :math:`\partial r_k/\partial\varepsilon_k = \alpha\,\mathrm{cost}_k^{1/5}\,\partial c_k/\partial\varepsilon_k
    - \beta\Delta/\varepsilon_k^2` and :math:`\partial R_k/\partial r_k = \tau (S - r_k)/S^2` (0 where
    :math:`r_k \le 0`)."""
    dr = alpha * jnp.power(cost, 0.2) * dcontrib_deps - beta * clip_norm / jnp.square(eps)
    active = (raw > 0) & (passive > 0) & (s > 0)
    ss = jnp.where(s > 0, s, 1.0)
    return jnp.where(active, tau * dr * (ss - raw) / jnp.square(ss), 0.0)


def epsilon_step(eps, grad_u, passive, lr: float, eps_min: float, eps_max: float, enabled=1.0):
    r""":math:`\varepsilon \leftarrow \mathrm{clip}(\varepsilon + \eta\, \partial U/\partial\varepsilon,
    \varepsilon_{\min}, \varepsilon_{\max})` on passive parties when ``enabled``; unchanged otherwise."""
    new = jnp.clip(eps + lr * grad_u, eps_min, eps_max)
    return jnp.where((passive > 0) & (enabled > 0), new, eps)


def bottom_flops(widths, hidden_widths, embed_dim: int) -> np.ndarray:
    r"""FLOPs per sample of party ``k``'s bottom MLP forward: :math:`2 (d_k h_k + h_k E)` (``[P]``)."""
    w = np.asarray(widths, np.float64)
    h = np.asarray(hidden_widths, np.float64)
    return 2.0 * (w * h + h * embed_dim)
