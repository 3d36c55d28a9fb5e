r"""Availability (indiscriminate) poisoning by bounded perturbations of every training image.

All three craft :math:`\delta_i` with :math:`\|\delta_i\|_\infty \le \epsilon` and
:math:`x_i + \delta_i \in [0, 1]` on decoded float arrays (never re-encoded), labels unchanged; the
victim trained on :math:`\{(x_i + \delta_i, y_i)\}` should generalise badly to clean test data.

* :func:`error_minimizing_noise` -- unlearnable examples (Huang et al., ICLR 2021): the min-min problem
  :math:`\min_\theta \frac1N\sum_i \min_{\|\delta_i\|\le\epsilon} \ell(f_\theta(x_i+\delta_i), y_i)`, by
  alternating ``train_steps`` mini-batch steps on :math:`\theta` with ``pgd_steps`` signed-gradient
  *descent* steps on :math:`\delta`. ``mode="sample"`` (one :math:`\delta_i` per image) or ``"class"``
  (one :math:`\delta_c` per class, shared by all its images).
* :func:`error_maximizing_noise` -- adversarial poisoning (Fowl et al., NeurIPS 2021): PGD on a model
  trained on clean data; ``targeted=True`` (the paper's stronger class-targeted variant) minimises
  :math:`\ell(f(x_i+\delta_i), \pi(y_i))` with :math:`\pi(y) = (y + 1) \bmod C`; ``targeted=False``
  maximises :math:`\ell(f(x_i+\delta_i), y_i)`.
* :func:`tensorclog_noise` -- TensorClog (Shen et al., 2019): minimise the norm of the parameter
  gradient :math:`\|\nabla_\theta \frac1B\sum_{i\in B}\ell(f_\theta(x_i+\delta_i), y_i)\|_2^2` at a model
  trained on clean data, so training on the poisons stalls.
* :func:`uniform_noise` -- the baseline: i.i.d. uniform :math:`[-\epsilon, \epsilon]` noise.

Losses use the one signature ``loss(params, {"x", "y"}, key) -> [B]``. Simplified versus the papers:
a fixed number of min-min rounds instead of stopping at 99 % training accuracy; the model's optimiser
state restarts each round; TensorClog's L2 perturbation penalty is replaced by the same L-inf bound as
the other attacks (so budgets are comparable), and it is crafted mini-batch by mini-batch.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from poisonjax.core.projections import project_linf_box
from poisonjax.core.training import train_minibatch
from poisonjax.core.validation import PoisonJaxInputError, check_choice, check_fraction

AVAILABILITY_ATTACKS = ("error_min_sample", "error_min_class", "error_max", "tensorclog")


def check_eps(eps) -> float:
    """``eps`` must be an L-inf radius in (0, 1] pixel units (e.g. 8/255)."""
    try:
        e = float(eps)
    except (TypeError, ValueError):
        e = float("nan")
    if not (0.0 < e <= 1.0):
        raise PoisonJaxInputError(f"eps must be in (0, 1] (pixel units, e.g. 8/255 = {8 / 255:.4f}), got {eps!r}; "
                                  "pass eps=k/255 for k grey levels")
    return e


def uniform_noise(key: jax.Array, x: jax.Array, eps: float) -> jax.Array:
    r"""Baseline :math:`\delta \sim U[-\epsilon, \epsilon]^{\mathrm{shape}(x)}`, projected into the box. ``[N,...]``."""
    eps = check_eps(eps)
    return project_linf_box(x, jax.random.uniform(key, x.shape, minval=-eps, maxval=eps), eps)


def _pgd(objective: Callable, x, delta, eps, steps: int, step_size: float, descend: bool):
    """``steps`` signed-gradient steps on ``objective(delta)``, projected to the eps ball and box."""
    sign = -1.0 if descend else 1.0

    def body(_, d):
        g = jax.grad(objective)(d)
        return project_linf_box(x, d + sign * step_size * jnp.sign(g), eps)

    return jax.lax.fori_loop(0, steps, body, delta)


def _batched(fn, x, y, delta, batch_size: int):
    """Apply ``fn(x_b, y_b, delta_b) -> delta_b`` over consecutive batches (``lax.map``)."""
    n = x.shape[0]
    nb = -(-n // batch_size)
    pad = nb * batch_size - n
    padv = lambda a: jnp.concatenate([a, jnp.zeros((pad,) + a.shape[1:], a.dtype)]) if pad else a
    xb, yb, db = (padv(a).reshape((nb, batch_size) + a.shape[1:]) for a in (x, y, delta))
    out = jax.lax.map(lambda t: fn(*t), (xb, yb, db))
    return out.reshape((nb * batch_size,) + delta.shape[1:])[:n]


def error_minimizing_noise(init_fn: Callable, loss: Callable, x: jax.Array, y: jax.Array, key: jax.Array, *,
                           eps: float, num_classes: int, mode: str = "sample", rounds: int = 10,
                           train_epochs: int = 1, pgd_steps: int = 10, step_size: float = None,
                           batch_size: int = 128, lr: float = 1e-2) -> jax.Array:
    r"""Unlearnable examples (Huang et al., ICLR 2021), min-min bi-level optimisation.

    Args:
      init_fn: ``key -> params`` of the crafting model; loss: ``(params, {"x","y"}, key) -> [B]``.
      x ``[N,H,W,C]`` in [0, 1], y ``[N]`` ints; eps in (0, 1]; mode ``"sample"`` or ``"class"``.
      rounds: alternations of ``train_epochs`` epochs of Adam(``lr``) on the model and
        ``pgd_steps`` signed descent steps (``step_size``, default ``eps / 5``) on the noise.
    Returns:
      ``delta [N,H,W,C]`` (class-wise: row ``i`` is :math:`\delta_{y_i}`).
    """
    eps = check_eps(eps)
    check_choice("mode", mode, ("sample", "class"))
    step_size = eps / 5 if step_size is None else float(step_size)
    x, y = jnp.asarray(x), jnp.asarray(y)
    k0, kr = jax.random.split(key)
    params0 = init_fn(k0)
    opt = optax.adam(lr)
    onehot = jax.nn.one_hot(y, num_classes, dtype=x.dtype)              # [N, C]

    def expand(noise):
        return noise if mode == "sample" else jnp.einsum("nc,c...->n...", onehot, noise)

    def noise_step(params, noise, k):
        if mode == "sample":
            obj = lambda d, xb, yb: jnp.sum(loss(params, {"x": xb + d, "y": yb}, k))
            return _batched(lambda xb, yb, db: _pgd(lambda d: obj(d, xb, yb), xb, db, eps, pgd_steps, step_size, True),
                            x, y, noise, batch_size)
        # class-wise: the sum over a class's images; the box constraint for a shared delta is kept per image
        obj = lambda n: jnp.sum(loss(params, {"x": jnp.clip(x + expand(n), 0.0, 1.0), "y": y}, k))

        def body(_, n):
            return jnp.clip(n - step_size * jnp.sign(jax.grad(obj)(n)), -eps, eps)
        return jax.lax.fori_loop(0, pgd_steps, body, noise)

    def one_round(carry, k):
        params, noise = carry
        k1, k2 = jax.random.split(k)
        xp = jnp.clip(x + expand(noise), 0.0, 1.0)
        params = train_minibatch(loss, params, opt, {"x": xp, "y": y}, k1, epochs=train_epochs,
                                 batch_size=batch_size).params
        return (params, noise_step(params, noise, k2)), None

    shape = x.shape if mode == "sample" else (num_classes,) + x.shape[1:]
    (_, noise), _ = jax.lax.scan(one_round, (params0, jnp.zeros(shape, x.dtype)), jax.random.split(kr, rounds))
    return project_linf_box(x, expand(noise), eps)


def error_maximizing_noise(params, loss: Callable, x: jax.Array, y: jax.Array, *, eps: float, num_classes: int,
                           targeted: bool = True, steps: int = 20, step_size: float = None,
                           batch_size: int = 256) -> jax.Array:
    r"""Adversarial poisoning (Fowl et al., NeurIPS 2021): PGD at the clean-trained ``params``.
    ``targeted``: descend on the loss of the permuted label :math:`(y+1) \bmod C`; else ascend on the
    loss of the true label. Returns ``delta [N,H,W,C]``; ``step_size`` defaults to ``eps / 4``."""
    eps = check_eps(eps)
    step_size = eps / 4 if step_size is None else float(step_size)
    x, y = jnp.asarray(x), jnp.asarray(y)
    k = jax.random.PRNGKey(0)
    lab = (y + 1) % num_classes if targeted else y

    def one(xb, yb, db):
        obj = lambda d: jnp.sum(loss(params, {"x": xb + d, "y": yb}, k))
        return _pgd(obj, xb, db, eps, steps, step_size, descend=targeted)

    return _batched(one, x, lab, jnp.zeros_like(x), batch_size)


def tensorclog_noise(params, loss: Callable, x: jax.Array, y: jax.Array, *, eps: float, steps: int = 20,
                     step_size: float = None, batch_size: int = 64) -> jax.Array:
    r"""TensorClog (Shen et al., 2019): per mini-batch, signed descent on
    :math:`\|\nabla_\theta \frac1B\sum_i \ell(f_\theta(x_i+\delta_i), y_i)\|_2^2` at the clean-trained
    ``params``, within the L-inf ball. Returns ``delta [N,H,W,C]``."""
    eps = check_eps(eps)
    step_size = eps / 4 if step_size is None else float(step_size)
    x, y = jnp.asarray(x), jnp.asarray(y)
    k = jax.random.PRNGKey(0)

    def one(xb, yb, db):
        def obj(d):
            g = jax.grad(lambda p: jnp.mean(loss(p, {"x": xb + d, "y": yb}, k)))(params)
            return sum(jnp.sum(a ** 2) for a in jax.tree.leaves(g))
        return _pgd(obj, xb, db, eps, steps, step_size, descend=True)

    return _batched(one, x, y, jnp.zeros_like(x), batch_size)


def check_budget(budget) -> float:
    """A poisoned fraction in (0, 1]: one-line error naming ``budget`` otherwise."""
    return check_fraction("budget", budget)
