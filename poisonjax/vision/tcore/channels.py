r"""T-Core stage 2: encoder channel filtering through the normalization parameters.

The classifier (encoder + head, BN in eval mode, see :mod:`poisonjax.vision.tcore.common`) starts from
the encoder with a head trained on the seeds. Three steps, each a pure function:

1. **Unlearning** (:func:`unlearn_norm`): gradient *ascent* on the cross-entropy of the unlearning set
   (the expanded seeds, which stage 1 made clean) through the BN affine parameters
   :math:`(\gamma, \beta)` only (every other parameter and the running statistics frozen), plain SGD
   with step ``learning_rate`` (default 0.002 in :class:`~poisonjax.vision.tcore.TCoreConfig`; on a full batch of at most ``max_batch = 512`` seeds),
   until that set's accuracy falls to ``target_accuracy`` (T-Core: 20%) or ``max_steps`` (500) steps
   pass: one ``lax.while_loop``. Clean behaviour is erased; channels that carry a backdoor are not
   needed for it and are left comparatively intact (the reasoning of RNP, Li et al. ICML 2023).
2. **Mask learning** (:func:`learn_channel_mask`): on the *unlearned* model, a mask
   :math:`m \in [0, 1]^{C_\ell}` per BN layer multiplies the BN outputs (:func:`~poisonjax.vision.tcore.common.mask_bn`),
   initialised at 1, trained by Adam (``learning_rate`` 0.05, ``steps`` 200) on

   .. math:: \min_m \frac1{|S|}\sum_{s\in S}\mathrm{CE}(f_{\theta_u, m}(x_s), y_s) + \lambda_1 \frac{1}{\#m}\sum |m|

   (``l1 = 1e-3``), projected onto :math:`[0, 1]` after each step: recovering clean accuracy on the
   seeds keeps the clean channels open; channels the recovery does not need drift down.
3. **Flag and reset** (:func:`flag_channels`, :func:`reset_channels`): in every BN layer the
   ``fraction`` (10%, rounded, at least one channel) lowest-mask channels are untrusted; in the
   *original* (not unlearned) encoder their :math:`(\gamma, \beta)` are set to **zero** (the channel's
   BN output is 0: the channel is pruned, as resetting to the pre-trained values would be a no-op for
   a poisoned pre-trained encoder). The returned keep-masks hold them at zero afterwards.

:func:`filter_channels` chains the three.
"""
from __future__ import annotations

from typing import Dict, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from poisonjax.core.validation import check_fraction, check_positive_int
from poisonjax.vision.tcore.common import get_path, set_path, bn_paths, mask_bn, ones_masks


def _ce(classifier, variables, params, x, y):
    out = classifier.apply({"params": params, "batch_stats": variables["batch_stats"]}, x, train=False)
    return optax.softmax_cross_entropy_with_integer_labels(out, y).mean(), (out.argmax(-1) == y).mean()


def _split_bn(params):
    paths = bn_paths(params)
    return {p: {"scale": get_path(params, p)["scale"], "bias": get_path(params, p)["bias"]} for p in paths}


def _merge_bn(params, bn):
    for p, d in bn.items():
        params = set_path(params, p, dict(get_path(params, p), **d))
    return params


def unlearn_norm(classifier, variables, x, y, *, target_accuracy: float = 0.2, learning_rate: float = 0.01,
                 max_steps: int = 500) -> Tuple[dict, Dict[str, jax.Array]]:
    r"""Gradient ascent on :math:`\mathrm{CE}(x, y)` through BN :math:`(\gamma, \beta)` until the
    accuracy on ``(x, y)`` is :math:`\le` ``target_accuracy`` (checked before every step, so the
    returned model is the first one at or below the threshold) or ``max_steps`` steps.

    Returns the unlearned variables and ``{"steps", "accuracy", "initial_accuracy"}`` (arrays)."""
    check_fraction("target_accuracy", target_accuracy)
    check_positive_int("max_steps", max_steps)
    return _unlearn_jit(classifier, variables, jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32),
                        jnp.float32(target_accuracy), jnp.float32(learning_rate), jnp.int32(max_steps))


def _unlearn_impl(classifier, variables, x, y, target_accuracy, learning_rate, max_steps):
    params = variables["params"]

    def acc_loss(bn):
        return _ce(classifier, variables, _merge_bn(params, bn), x, y)

    bn = _split_bn(params)
    a0 = acc_loss(bn)[1]

    def cond(c):
        bn, step, acc = c
        return (acc > target_accuracy) & (step < max_steps)

    def body(c):
        bn, step, _ = c
        g = jax.grad(lambda b: acc_loss(b)[0])(bn)
        bn = jax.tree.map(lambda p, gg: p + learning_rate * gg, bn, g)     # ascent
        return bn, step + 1, acc_loss(bn)[1]
    bn, step, acc = jax.lax.while_loop(cond, body, (bn, jnp.int32(0), a0))
    info = {"steps": step, "accuracy": acc, "initial_accuracy": a0}
    return {"params": _merge_bn(params, bn), "batch_stats": variables["batch_stats"]}, info


_unlearn_jit = jax.jit(_unlearn_impl, static_argnums=(0,))


def learn_channel_mask(classifier, variables, x, y, *, l1: float = 1e-3, steps: int = 200,
                       learning_rate: float = 0.05) -> Dict[str, jax.Array]:
    """Channel masks ``{bn_path: [C] in [0, 1]}`` minimising seed cross-entropy + ``l1`` x mean |m| on
    the given (unlearned) model, Adam + projection onto [0, 1] (module docstring)."""
    check_positive_int("steps", steps)
    return _mask_jit(classifier, variables, jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32), float(l1),
                     int(steps), float(learning_rate))


def _mask_impl(classifier, variables, x, y, l1, steps, learning_rate):
    params = variables["params"]
    m = ones_masks(params)
    opt = optax.adam(learning_rate)
    n_units = sum(int(v.size) for v in m.values())

    def loss(m):
        ce, _ = _ce(classifier, variables, mask_bn(params, m), x, y)
        return ce + l1 * sum(jnp.abs(v).sum() for v in m.values()) / n_units

    def step(c, _):
        m, s = c
        u, s = opt.update(jax.grad(loss)(m), s, m)
        m = jax.tree.map(lambda a: jnp.clip(a, 0.0, 1.0), optax.apply_updates(m, u))
        return (m, s), None
    (m, _), _ = jax.lax.scan(step, (m, opt.init(m)), None, length=steps)
    return m


_mask_jit = jax.jit(_mask_impl, static_argnums=(0, 4, 5, 6))


def flag_channels(masks: Dict[str, jax.Array], fraction: float = 0.1) -> Dict[str, jax.Array]:
    """Per layer, True for the ``round(fraction * C)`` (at least 1) channels with the lowest mask
    (ties: lower index first). ``{path: bool [C]}``."""
    check_fraction("fraction", fraction)
    out = {}
    for p, m in masks.items():
        c = m.shape[0]
        k = int(min(c, max(1, round(fraction * c))))
        order = jnp.argsort(m, stable=True)
        out[p] = jnp.zeros((c,), bool).at[order[:k]].set(True)
    return out


def reset_channels(variables, flags: Dict[str, jax.Array]):
    """Zero the BN :math:`(\\gamma, \\beta)` of flagged channels; returns ``(variables, keep_masks)``
    with ``keep_masks[path] = 1 - flags`` (float)."""
    keep = {p: 1.0 - f.astype(jnp.float32) for p, f in flags.items()}
    return {"params": mask_bn(variables["params"], keep), "batch_stats": variables["batch_stats"]}, keep


def filter_channels(classifier, variables, x_seed, y_seed, *, target_accuracy: float = 0.2,
                    unlearn_lr: float = 0.01, max_unlearn_steps: int = 500, mask_l1: float = 1e-3,
                    mask_steps: int = 200, mask_lr: float = 0.05, fraction: float = 0.1):
    """Stage 2 (module docstring) on the classifier ``variables`` (encoder + a head trained on the
    seeds) and the seed images ``x_seed [S, H, W, C]``, ``y_seed [S]``.

    Returns ``(filtered variables, keep_masks, info)``; ``info`` has ``unlearn_steps``,
    ``unlearn_accuracy``, ``initial_accuracy``, ``flagged_channel_fraction`` and the masks."""
    unl, uinfo = unlearn_norm(classifier, variables, x_seed, y_seed, target_accuracy=target_accuracy,
                              learning_rate=unlearn_lr, max_steps=max_unlearn_steps)
    masks = learn_channel_mask(classifier, unl, x_seed, y_seed, l1=mask_l1, steps=mask_steps, learning_rate=mask_lr)
    flags = flag_channels(masks, fraction)
    filtered, keep = reset_channels(variables, flags)
    n_flag = sum(int(f.sum()) for f in flags.values())
    n_all = sum(int(f.size) for f in flags.values())
    info = {"unlearn_steps": int(uinfo["steps"]), "unlearn_accuracy": float(uinfo["accuracy"]),
            "initial_accuracy": float(uinfo["initial_accuracy"]),
            "flagged_channel_fraction": n_flag / max(n_all, 1), "masks": masks}
    return filtered, keep, info
