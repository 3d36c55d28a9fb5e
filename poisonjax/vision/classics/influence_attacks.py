r"""Influence-based classics on a convex victim (binary logistic regression, :mod:`.convex`).

* :func:`influence_training_set_attack` -- Koh & Liang (ICML 2017, section 5.2): perturb a few
  training inputs along the influence of their input on a target test loss,
  :math:`\delta_i \leftarrow \Pi_{\|\delta\|_\infty \le \epsilon,\; x+\delta\in[0,1]}\big(\delta_i + \eta\,
  \mathrm{sign}\,\nabla_{x_i} L_{test}\big)`, with :math:`\nabla_{x_i} L_{test}` from
  :func:`poisonjax.core.influence.input_influence` at the victim retrained on the current poisons
  (exact Hessian). The points perturbed are the ``k`` training points with the largest
  :math:`|\mathcal{I}_{up,loss}|` on the target. Baseline: random sign perturbations of the same
  :math:`\ell_\infty` (and so the same :math:`\ell_2`) norm on the same points.
* :func:`adversarial_label_flip` -- adversarial label flipping (greedy flips by influence and by margin,
  concentrated in one class, chosen on the attacker's validation data; not ALFA).
  :func:`influence_label_flip` is its influence part: flipping :math:`y_i \to 1 - y_i` changes the
  attacker's validation loss by
  (for the smooth validation error of :func:`smooth_error`, or the log-loss)
  :math:`\Delta L_{val}(i) \approx -\frac1n \nabla_\theta L_{val}^\top H^{-1}\big(\nabla_\theta\ell(x_i, 1-y_i) - \nabla_\theta\ell(x_i, y_i)\big)`;
  flip the ``B / rounds`` points with the largest predicted increase, retrain, repeat for ``rounds``
  rounds. The validation set is the attacker's own held-out data, never the test set. Baseline:
  uniformly random flips (:func:`poisonjax.core.poisoning.flip_labels`, mode ``"reverse"``).
"""
from __future__ import annotations

from typing import Dict, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from poisonjax.core import influence as infl
from poisonjax.core.poisoning import flip_labels
from poisonjax.core.validation import PoisonJaxInputError, check_fraction
from poisonjax.vision.classics.convex import fit_logreg, logreg_hessian, logreg_loss, logreg_predict, logreg_risk


def smooth_error(params, x_t, y_t, temperature: float = 1.0) -> jax.Array:
    r"""Differentiable error rate :math:`rac1T\sum_t \sigma(-m_t/	au)`, :math:`m_t = (2y_t - 1) z_t`
    the signed margin: the attacker's surrogate for accuracy (points near the boundary dominate)."""
    z = x_t.reshape(x_t.shape[0], -1) @ params["w"] + params["b"]
    return jnp.mean(jax.nn.sigmoid(-(2 * y_t - 1) * z / temperature))


def _ihvp_test(params, x, y, l2, x_t, y_t, objective: str = "loss"):
    risk = lambda p: logreg_risk(p, x, y, l2)
    if objective == "loss":
        obj = lambda p: jnp.mean(jax.vmap(logreg_loss, in_axes=(None, 0, 0))(p, x_t, y_t))
    else:
        obj = lambda p: smooth_error(p, x_t, y_t)
    g_test = jax.grad(obj)(params)
    return infl.exact_inverse_hvp(risk, params, g_test, hessian=logreg_hessian(params, x, l2))


def target_loss(params, x_t, y_t) -> jax.Array:
    """Mean logistic loss on the target points ``x_t [T, ...]``."""
    return jnp.mean(jax.vmap(logreg_loss, in_axes=(None, 0, 0))(params, x_t, y_t))


class InfluenceAttackResult(NamedTuple):
    x_poisoned: jax.Array   # [N, ...] training inputs after the attack
    indices: jax.Array      # [k] perturbed training points
    target_loss: jax.Array  # [iters + 1] target loss of the retrained victim (start, after each iteration)


def influence_training_set_attack(x: jax.Array, y: jax.Array, x_t: jax.Array, y_t: jax.Array, k: int,
                                  eps: float, iters: int = 10, step: float | None = None,
                                  l2: float = 1e-2) -> InfluenceAttackResult:
    r"""Koh & Liang's training-set attack (see the module docstring).

    Args:
      x, y: training inputs ``[N, ...]`` in [0, 1] and labels ``[N]`` in {0, 1}.
      x_t, y_t: target test point(s) ``[T, ...]``, ``[T]`` whose loss the attacker raises.
      k: number of training points to perturb (``1 <= k <= N``).
      eps: :math:`\ell_\infty` radius in (0, 1].
      iters: signed-gradient iterations (the victim is retrained after each).
      step: step size (default ``eps / 4``).
    """
    n = x.shape[0]
    if not (1 <= int(k) <= n):
        raise PoisonJaxInputError(f"k must be in [1, {n}] (the number of training points), got {k}")
    eps = check_fraction("eps", eps)
    step = eps / 4 if step is None else float(step)
    params = fit_logreg(x, y, l2)
    ih = _ihvp_test(params, x, y, l2, x_t, y_t)
    ih_flat = ravel_pytree(ih)[0]
    g = infl.per_example_grads(logreg_loss, params, x, y)
    up = -(g @ ih_flat)  # I_up,loss(z_i, z_test)
    idx = jax.lax.top_k(jnp.abs(up), int(k))[1]
    x0 = x[idx]
    delta = jnp.zeros_like(x0)
    losses = [target_loss(params, x_t, y_t)]
    for _ in range(int(iters)):  # host loop over a handful of retrainings (each a jit-compiled Newton solve)
        xp = x.at[idx].set(x0 + delta)
        params = fit_logreg(xp, y, l2, init=params)
        ih = _ihvp_test(params, xp, y, l2, x_t, y_t)
        gx = infl.input_influence(logreg_loss, params, xp[idx], y[idx], ih, n)
        delta = jnp.clip(delta + step * jnp.sign(gx), -eps, eps)
        delta = jnp.clip(x0 + delta, 0.0, 1.0) - x0
    xp = x.at[idx].set(x0 + delta)
    params = fit_logreg(xp, y, l2, init=params)
    losses.append(target_loss(params, x_t, y_t))
    return InfluenceAttackResult(xp, idx, jnp.stack(losses))


def random_perturbation(key: jax.Array, x: jax.Array, idx: jax.Array, eps: float) -> jax.Array:
    r"""Baseline: :math:`x_i + \epsilon\,\mathrm{sign}(u)`, :math:`u \sim U[-1,1]`, clipped to [0, 1],
    on the same points ``idx`` (the same :math:`\ell_\infty` budget as the attack)."""
    eps = check_fraction("eps", eps)
    s = jnp.sign(jax.random.uniform(key, x[idx].shape, minval=-1.0, maxval=1.0))
    return x.at[idx].set(jnp.clip(x[idx] + eps * s, 0.0, 1.0))


def influence_label_flip(x: jax.Array, y: jax.Array, x_val: jax.Array, y_val: jax.Array, budget: float,
                         rounds: int = 4, l2: float = 1e-2, objective: str = "error",
                         only_class: int = -1) -> jax.Array:
    r"""Greedy adversarial label flipping by influence on the attacker's validation loss (module
    docstring). ``budget`` in (0, 1] is the fraction of training labels flipped. ``objective``:
    ``"error"`` (default) differentiates the attacker's smooth validation error :func:`smooth_error`,
    ``"loss"`` the validation log-loss (measured here: raising the log-loss does not lower accuracy
    more than random flips). ``only_class`` (0 or 1) restricts the flips to one class. Returns the
    flipped labels ``[N]``."""
    if objective not in ("error", "loss"):
        raise PoisonJaxInputError(f"objective must be 'error' or 'loss', got {objective!r}")
    budget = check_fraction("budget", budget)
    n = x.shape[0]
    total = int(round(budget * n))
    if rounds < 1:
        raise PoisonJaxInputError(f"rounds must be >= 1, got {rounds}")
    yf = jnp.asarray(y)
    flipped = jnp.zeros((n,), bool) if only_class < 0 else (yf != only_class)
    if total > int((~flipped).sum()):
        raise PoisonJaxInputError(f"budget={budget} asks for {total} flips but only {int((~flipped).sum())} "
                                  "labels are eligible")
    params = fit_logreg(x, yf, l2)
    done = 0
    for r in range(int(rounds)):
        m = (total * (r + 1)) // rounds - done
        if m <= 0:
            continue
        ih = ravel_pytree(_ihvp_test(params, x, yf, l2, x_val, y_val, objective))[0]
        g_now = infl.per_example_grads(logreg_loss, params, x, yf)
        g_flip = infl.per_example_grads(logreg_loss, params, x, 1 - yf)
        gain = -((g_flip - g_now) @ ih) / n
        gain = jnp.where(flipped, -jnp.inf, gain)
        pick = jax.lax.top_k(gain, m)[1]
        yf = yf.at[pick].set(1 - yf[pick])
        flipped = flipped.at[pick].set(True)
        done += m
        params = fit_logreg(x, yf, l2, init=params)
    return yf


def margin_label_flip(x: jax.Array, y: jax.Array, budget: float, cls: int, order: str = "far",
                      l2: float = 1e-2) -> jax.Array:
    r"""Class-concentrated flips ranked by the clean model's signed margin :math:`m_i = (2y_i-1)z_i`:
    the ``budget * N`` points of class ``cls`` with the largest (``order="far"``: confident, high
    leverage) or smallest (``"near"``: close to the boundary) margins get the other label."""
    budget = check_fraction("budget", budget)
    n = x.shape[0]
    k = int(round(budget * n))
    if k > int((y == cls).sum()):
        raise PoisonJaxInputError(f"budget={budget} asks for {k} flips but class {cls} has {int((y == cls).sum())} points")
    if order not in ("far", "near"):
        raise PoisonJaxInputError(f"order must be 'far' or 'near', got {order!r}")
    p = fit_logreg(x, y, l2)
    m = (2 * y - 1) * (x.reshape(n, -1) @ p["w"] + p["b"])
    idx = jax.lax.top_k(jnp.where(y == cls, m if order == "far" else -m, -jnp.inf), k)[1]
    return y.at[idx].set(1 - y[idx])


def adversarial_label_flip(x: jax.Array, y: jax.Array, x_val: jax.Array, y_val: jax.Array, budget: float,
                           l2: float = 1e-2, rounds: int = 4):
    r"""Adversarial label flipping (greedy, attacker-validated).

    Candidates: for each class :math:`c \in \{0, 1\}`, (a) greedy influence flips within class
    :math:`c` on the smooth validation error (:func:`influence_label_flip`), (b) the highest-margin and
    (c) the lowest-margin points of class :math:`c` (:func:`margin_label_flip`). Each candidate label
    set is evaluated by retraining and measuring the error on the attacker's *validation* data
    ``(x_val, y_val)`` (never the test set); the candidate with the largest validation error wins.
    Concentrating flips in one class matters: balanced random flips largely cancel in the bias of a
    linear model (measured: random 10-20% flips cost MNIST 1-vs-7 about 2 points, class-concentrated
    flips 5-20). Returns ``(y_flipped [N], name of the chosen candidate)``."""
    cands = {}
    for c in (0, 1):
        cands[f"influence_class{c}"] = influence_label_flip(x, y, x_val, y_val, budget, rounds=rounds, l2=l2,
                                                             only_class=c)
        for order in ("far", "near"):
            cands[f"margin_{order}_class{c}"] = margin_label_flip(x, y, budget, c, order, l2)
    errs = {k: 1.0 - accuracy_after(x, v, x_val, y_val, l2) for k, v in cands.items()}
    best = max(errs, key=errs.get)
    return cands[best], best


def random_label_flip(key: jax.Array, y: jax.Array, budget: float) -> jax.Array:
    """Baseline: ``budget`` of the binary labels flipped uniformly at random."""
    return flip_labels(key, y, check_fraction("budget", budget), 2, mode="reverse")[0]


def accuracy_after(x, y, x_test, y_test, l2: float = 1e-2) -> float:
    """Test accuracy of logistic regression trained on ``(x, y)``."""
    return float(jnp.mean(logreg_predict(fit_logreg(x, y, l2), x_test) == y_test))


def binary_subset(x, y, pos: int, neg: int):
    """``(x, y01)`` restricted to classes ``pos`` (label 1) and ``neg`` (label 0)."""
    keep = (y == pos) | (y == neg)
    return x[keep], (y[keep] == pos).astype(jnp.int32)


def loo_check(x, y, x_t, y_t, idx, l2: float = 1e-2, newton_steps: int = 3) -> Dict[str, jax.Array]:
    r"""Predicted vs actual leave-one-out change of the target loss for training points ``idx``:
    predicted :math:`\frac1n \nabla\ell(z_i)^\top H^{-1}\nabla L_{test}` (exact Hessian), actual by
    retraining without :math:`z_i` (Newton, warm-started, vmapped over ``idx``)."""
    n = x.shape[0]
    params = fit_logreg(x, y, l2)
    base = target_loss(params, x_t, y_t)
    ih = ravel_pytree(_ihvp_test(params, x, y, l2, x_t, y_t))[0]
    g = infl.per_example_grads(logreg_loss, params, x[idx], y[idx])
    pred = infl.loo_test_loss_change(g, ih, n)

    def actual(i):
        w = jnp.ones((n,)).at[i].set(0.0)
        p = fit_logreg(x, y, l2, weights=w, init=params, steps=newton_steps)
        return target_loss(p, x_t, y_t) - base

    act = jax.lax.map(actual, idx, batch_size=16)
    # removing i gives a mean over n-1 points; the influence approximation uses 1/n (Koh & Liang)
    return {"predicted": pred, "actual": act}
