r"""Model-repair defenses against backdoors: pure functions ``(module, variables, ...) -> (variables, info)``
for ONE victim; ``jax.vmap`` them over K stacked victims (every decision is made with ``jnp``, so
they trace).

* :func:`fine_pruning` -- Liu, Dolan-Gavitt & Garg, RAID 2018: prune the units of the last feature
  layer that are least active on clean data (the largest ratio on a grid whose clean accuracy drop
  stays within ``max_acc_drop``), then fine-tune on the clean data with the pruned units held at 0.
* :func:`clp` -- Zheng et al., "Data-free backdoor removal based on channel Lipschitzness", ECCV 2022:
  per channel :math:`k` of a conv followed by BatchNorm, the upper bound of its channel Lipschitz
  constant :math:`\mathrm{UCLC}_k = \sigma_{max}\big(W_k \gamma_k / \sqrt{\sigma^2_k + \epsilon}\big)`
  (``W_k`` reshaped to ``[C_in, k_h k_w]``); channels with :math:`\mathrm{UCLC}_k > \mu + u\,s` (layer
  mean and std, ``u=3``) are pruned (BatchNorm scale and shift set to 0). No data.
* :func:`neural_cleanse` -- Wang et al., S&P 2019: per class :math:`t` (all classes at once, ``vmap``)
  reverse-engineer a trigger :math:`\min_{m,p} \mathrm{CE}(f((1-m)x + m p), t) + \lambda \|m\|_1`
  (adaptive :math:`\lambda`);
  the MAD anomaly index of the mask norms flags classes with index > 2 below the median; unlearning
  fine-tunes on clean data where ``unlearn_fraction`` of each batch carries the flagged class's
  reversed trigger with the *correct* labels. Unchanged model when no class is flagged.
* :func:`abl_unlearn` -- Li et al., NeurIPS 2021, unlearning stage: gradient ascent
  (:math:`-\mathrm{CE}`) on the rows isolated by :func:`~poisonjax.vision.backdoor.detectors.abl_isolation`.
* :func:`i_bau` -- Zeng et al., "Adversarial unlearning of backdoors via implicit hypergradient",
  ICLR 2022: :math:`\min_\theta \max_{\|\delta\|_2 \le C} \mathcal{L}(\theta; x+\delta, y)` on clean
  data with a universal perturbation :math:`\delta`; the outer gradient is the implicit hypergradient
  (:func:`poisonjax.core.bilevel.implicit_meta_grad`, CG on Hessian-vector products in
  :math:`\delta`).

Simplifications are stated in each docstring.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from poisonjax.core.bilevel import implicit_meta_grad
from poisonjax.core.pruning import apply_unit_mask, capture_activations, unit_param_mask
from poisonjax.core.validation import PoisonJaxInputError, check_fraction
from poisonjax.vision.backdoor.victim import (accepts_train, apply_victim, fit, has_bn, make_optimizer)


def _logits(module, variables, x):
    return apply_victim(module, variables, x)


def _acc(module, variables, x, y):
    return jnp.mean(jnp.argmax(_logits(module, variables, x), -1) == y)


def _with_params(variables, params):
    v = dict(variables)
    v["params"] = params
    return v


# ------------------------------------------------------------------ fine-pruning --------------

def last_feature_layer(module) -> str:
    """The layer fine-pruning acts on: ``bn_final`` for :class:`PreActResNet` (its ReLU output is the
    feature map), the last ``bn*`` for :class:`BNConvNet`, else ``Conv_1`` (the small CNNs)."""
    from poisonjax.vision.backdoor.resnet import BNConvNet, PreActResNet
    if isinstance(module, PreActResNet):
        return "bn_final"
    if isinstance(module, BNConvNet):
        return f"bn{len(module.channels) - 1}"
    return "Conv_1"


def fine_pruning(module, variables, x_clean, y_clean, key, *, layer: Optional[str] = None,
                 ratios: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
                 max_acc_drop: float = 0.10, finetune_epochs: int = 10, batch_size: int = 64,
                 learning_rate: float = 0.01, augment: bool = False):
    r"""Fine-pruning (Liu et al. 2018) of one victim.

    1. Mean post-ReLU activation :math:`a_u` of every unit of ``layer`` on ``x_clean``
       (:func:`poisonjax.core.pruning.capture_activations`).
    2. For each ratio :math:`r` in ``ratios``: prune the :math:`r U` least active units
       (:func:`~poisonjax.core.pruning.apply_unit_mask`); keep the largest :math:`r` whose clean accuracy
       (on ``x_clean``) is within ``max_acc_drop`` of the unpruned model (Liu et al. stop at a 4%
       validation drop; they prune one unit at a time, here a grid).
    3. Fine-tune on ``(x_clean, y_clean)`` for ``finetune_epochs`` with the pruned units held at 0.

    Returns ``(variables, {"ratio": r})``."""
    layer = layer or last_feature_layer(module)
    kw = {"train": False} if accepts_train(module) else {}
    acts = capture_activations(module, variables, x_clean, layers=[layer], **kw)[layer]
    a = jnp.mean(jax.nn.relu(acts).reshape(-1, acts.shape[-1]), 0)
    u = a.shape[0]
    order = jnp.argsort(a)                                         # least active first
    rank = jnp.zeros((u,), jnp.int32).at[order].set(jnp.arange(u))
    base = _acc(module, variables, x_clean, y_clean)

    def mask_for(n_prune):
        return (rank >= n_prune).astype(jnp.float32)

    def acc_at(n_prune):
        p = apply_unit_mask(variables["params"], {layer: mask_for(n_prune)})
        return _acc(module, _with_params(variables, p), x_clean, y_clean)

    counts = jnp.asarray([int(round(r * u)) for r in ratios], jnp.int32)
    accs = jax.vmap(acc_at)(counts)
    ok = accs >= base - max_acc_drop
    chosen = jnp.max(jnp.where(ok, counts, 0))
    m = mask_for(chosen)
    pm = unit_param_mask(variables["params"], {layer: m})
    v = _with_params(variables, jax.tree.map(lambda p, q: p * q, variables["params"], pm))
    if finetune_epochs > 0:
        v = fit(module, v, x_clean, y_clean, key, epochs=finetune_epochs, batch_size=batch_size,
                optimizer=make_optimizer(learning_rate), augment=augment,
                param_transform=lambda p: jax.tree.map(lambda a_, b_: a_ * b_, p, pm))
        v = _with_params(v, jax.tree.map(lambda a_, b_: a_ * b_, v["params"], pm))
    return v, {"ratio": chosen / u}


# ------------------------------------------------------------------ CLP -----------------------

def _get(tree, path):
    for part in path.split("/"):
        tree = tree[part]
    return tree


def channel_lipschitz(kernel: jax.Array, gamma: Optional[jax.Array] = None, var: Optional[jax.Array] = None,
                      eps: float = 1e-5) -> jax.Array:
    r"""UCLC per output channel: the largest singular value of
    :math:`W_k \gamma_k/\sqrt{\sigma^2_k+\epsilon}` reshaped ``[C_in, k_h k_w]``; ``kernel [kh, kw, C_in, C_out]``."""
    kh, kw, cin, cout = kernel.shape
    w = jnp.transpose(kernel, (3, 2, 0, 1)).reshape(cout, cin, kh * kw)
    if gamma is not None:
        w = w * (gamma / jnp.sqrt(var + eps))[:, None, None]
    return jnp.linalg.svd(w, compute_uv=False)[:, 0]


def clp(module, variables, *, u: float = 3.0, pairs: Optional[Sequence[Tuple[str, str]]] = None):
    r"""CLP (Zheng et al. 2022), data-free: prune channels whose UCLC (:func:`channel_lipschitz`) exceeds
    ``mean + u * std`` of their layer. With BatchNorm, ``pairs`` are ``(conv, bn)`` paths (default
    :func:`poisonjax.vision.backdoor.resnet.conv_bn_pairs`) and pruning zeroes the BN scale and shift.
    Extension for BN-free victims: the UCLC of the conv kernel alone, pruning the conv's channels.
    Returns ``(variables, {"pruned_fraction": ...})``."""
    params = variables["params"]
    bn = has_bn(variables)
    if pairs is None:
        if bn:
            from poisonjax.vision.backdoor.resnet import conv_bn_pairs
            pairs = conv_bn_pairs(module)
        else:
            pairs = [(k, k) for k in sorted(params) if "kernel" in params[k] and params[k]["kernel"].ndim == 4]
    masks, pruned, total = {}, 0.0, 0
    for conv, norm in pairs:
        ker = _get(params, conv)["kernel"]
        if ker.ndim != 4 or (bn and _get(params, norm)["scale"].shape[0] != ker.shape[-1]):
            raise PoisonJaxInputError(f"pairs entry ({conv!r}, {norm!r}) is not a conv followed by a BatchNorm of the same width")
        if bn:
            lips = channel_lipschitz(ker, _get(params, norm)["scale"], _get(variables["batch_stats"], norm)["var"])
        else:
            lips = channel_lipschitz(ker)
        thr = lips.mean() + u * lips.std()
        m = (lips <= thr).astype(jnp.float32)
        masks[norm] = m if norm not in masks else masks[norm] * m
        pruned = pruned + (1 - m).sum()
        total += m.shape[0]
    v = _with_params(variables, apply_unit_mask(params, masks))
    return v, {"pruned_fraction": pruned / max(total, 1)}


# ------------------------------------------------------------------ Neural Cleanse ------------

def reverse_engineer_triggers(module, variables, x_clean, key, num_classes: int, *, steps: int = 300,
                              batch_size: int = 64, lam: float = 1e-3, learning_rate: float = 0.1,
                              lam_factor: float = 1.05, target_success: float = 0.99):
    r"""Neural Cleanse's trigger search for every class at once (``vmap`` over classes):
    :math:`m = \sigma(\mu)\in(0,1)^{H\times W\times 1}`, :math:`p = \sigma(\pi)\in(0,1)^{H\times W\times C}`,
    minimise :math:`\mathrm{CE}(f((1-m)\odot x + m\odot p), t) + \lambda\|m\|_1` with Adam over
    ``steps`` random clean batches. :math:`\lambda` starts at ``lam`` and, as in the paper, adapts:
    multiplied by ``lam_factor`` after a step whose batch reaches ``target_success`` attack success,
    divided by it otherwise (the paper changes it every few epochs by factors 2 / 2^1.5; here per
    step). Returns ``(masks [C, H, W, 1], patterns [C, H, W, C_in])``."""
    n, h, w, c = x_clean.shape
    opt = optax.adam(learning_rate)

    def one(t, k):
        theta = {"m": jnp.full((h, w, 1), -3.0), "p": jnp.zeros((h, w, c))}
        s = opt.init(theta)

        def step(carry, kk):
            th, st, lm = carry
            idx = jax.random.randint(kk, (batch_size,), 0, n)
            xb = x_clean[idx]

            def loss(th_):
                m, p = jax.nn.sigmoid(th_["m"]), jax.nn.sigmoid(th_["p"])
                lg = _logits(module, variables, (1 - m) * xb + m * p)
                ce = optax.softmax_cross_entropy_with_integer_labels(lg, jnp.full((batch_size,), t)).mean()
                return ce + lm * m.sum(), jnp.mean(jnp.argmax(lg, -1) == t)

            (_, succ), g = jax.value_and_grad(loss, has_aux=True)(th)
            upd, st = opt.update(g, st, th)
            lm = jnp.clip(jnp.where(succ >= target_success, lm * lam_factor, lm / lam_factor), 1e-5, 10.0)
            return (optax.apply_updates(th, upd), st, lm), None

        (th, _, _), _ = jax.lax.scan(step, (theta, s, jnp.asarray(lam, jnp.float32)), jax.random.split(k, steps))
        return jax.nn.sigmoid(th["m"]), jax.nn.sigmoid(th["p"])

    return jax.vmap(one)(jnp.arange(num_classes), jax.random.split(key, num_classes))


def mad_anomaly_index(norms: jax.Array) -> jax.Array:
    r"""Anomaly index :math:`(\mathrm{med} - l_t) / (1.4826\, \mathrm{MAD})` (positive below the median)."""
    med = jnp.median(norms)
    mad = 1.4826 * jnp.median(jnp.abs(norms - med))
    return (med - norms) / jnp.maximum(mad, 1e-8)


def neural_cleanse(module, variables, x_clean, y_clean, key, num_classes: int, *, steps: int = 300,
                   lam: float = 1e-3, threshold: float = 2.0, unlearn_fraction: float = 0.2,
                   finetune_epochs: int = 10, batch_size: int = 64, learning_rate: float = 0.01):
    r"""Neural Cleanse: detection (:func:`reverse_engineer_triggers`, :func:`mad_anomaly_index` >
    ``threshold``) and unlearning of the most anomalous flagged class's trigger (``unlearn_fraction``
    of the clean rows stamped, labels kept, fine-tuning). Returns ``(variables, info)`` with
    ``info["flagged_classes"] [C]`` bool and ``info["anomaly_index"] [C]``."""
    unlearn_fraction = check_fraction("unlearn_fraction", unlearn_fraction)
    k1, k2, k3 = jax.random.split(key, 3)
    masks, pats = reverse_engineer_triggers(module, variables, x_clean, k1, num_classes, steps=steps, lam=lam)
    norms = masks.reshape(num_classes, -1).sum(-1)
    ai = mad_anomaly_index(norms)
    flagged = ai > threshold
    t = jnp.argmax(ai)
    m, p = masks[t], pats[t]
    n = x_clean.shape[0]
    stamp = jax.random.uniform(k2, (n,)) < unlearn_fraction
    xs = jnp.where(stamp[:, None, None, None], (1 - m) * x_clean + m * p, x_clean)
    v = fit(module, variables, xs, y_clean, k3, epochs=finetune_epochs, batch_size=batch_size,
            optimizer=make_optimizer(learning_rate))
    detected = flagged.any()
    v = jax.tree.map(lambda a, b: jnp.where(detected, a, b), v, variables)
    return v, {"flagged_classes": flagged, "anomaly_index": ai, "mask_l1": norms}


# ------------------------------------------------------------------ ABL unlearning ------------

def abl_unlearn(module, variables, x, y, isolated: jax.Array, key, *, epochs: int = 5,
                learning_rate: float = 5e-4, max_isolated: Optional[int] = None, batch_size: int = 64):
    r"""ABL's unlearning stage: ``epochs`` of SGD on :math:`-\mathrm{CE}` over the isolated rows
    (``isolated [N]`` bool from ABL's isolation). Static shapes: the isolated rows are gathered as
    the top ``max_isolated`` (default ``isolated.sum()`` when concrete) of the flags.
    Simplified: starts from the given (poisoned) victim instead of ABL's LGA-trained model."""
    k = int(np.asarray(isolated).sum()) if max_isolated is None else int(max_isolated)
    if k == 0:
        return variables, {"isolated": 0}
    idx = jax.lax.top_k(isolated.astype(jnp.float32), k)[1]
    w = -isolated[idx].astype(jnp.float32)
    v = fit(module, variables, x[idx], y[idx], key, epochs=epochs, batch_size=min(batch_size, k),
            optimizer=make_optimizer(learning_rate, weight_decay=0.0), sign=w)
    return v, {"isolated": k}


# ------------------------------------------------------------------ I-BAU ---------------------

def _project_l2(d, radius):
    nrm = jnp.sqrt(jnp.sum(d ** 2))
    return d * jnp.minimum(1.0, radius / jnp.maximum(nrm, 1e-12))


def i_bau(module, variables, x_clean, y_clean, key, *, rounds: int = 3, batch_size: int = 64,
          inner_steps: int = 5, inner_lr: float = 0.1, radius: float = 3.0, reg: float = 0.1,
          cg_iters: int = 5, learning_rate: float = 1e-3, clean_weight: float = 1.0):
    r"""I-BAU (Zeng et al., ICLR 2022) on one victim.

    For each mini-batch (``rounds`` epochs over the clean data):

    1. inner maximisation of :math:`\mathcal{L}(\theta; x+\delta, y)` over a universal perturbation
       :math:`\delta` (``inner_steps`` normalised gradient-ascent steps, projected to the L2 ball of
       ``radius``);
    2. outer step on :math:`\theta` with the implicit hypergradient of
       :math:`\mathcal{L}(\theta; x+\delta^*(\theta), y)` (:func:`~poisonjax.core.bilevel.implicit_meta_grad`,
       inner loss :math:`-\mathcal{L} + \frac{reg}{2}\|\delta\|^2`, ``cg_iters`` CG steps) plus
       ``clean_weight`` times the clean-loss gradient, applied by Adam.

    BatchNorm statistics are frozen (eval mode). Simplified: CG on a damped Hessian instead of the
    paper's fixed-point iteration; the L2 projection is ignored in the implicit gradient."""
    params0 = variables["params"]
    n = x_clean.shape[0]
    nb = max(1, n // batch_size)
    opt = optax.adam(learning_rate)

    def ce(params, xb, yb):
        return optax.softmax_cross_entropy_with_integer_labels(
            _logits(module, _with_params(variables, params), jnp.clip(xb, 0, 1)), yb).mean()

    def step(carry, xs):
        params, s = carry
        idx, k = xs
        xb, yb = x_clean[idx], y_clean[idx]
        d0 = jnp.zeros(xb.shape[1:])

        def ascend(d, _):
            g = jax.grad(lambda dd: ce(params, xb + dd, yb))(d)
            g = g / jnp.maximum(jnp.sqrt(jnp.sum(g ** 2)), 1e-12)
            return _project_l2(d + inner_lr * radius * g, radius), None

        d, _ = jax.lax.scan(ascend, d0, None, length=inner_steps)
        d = jax.lax.stop_gradient(d)
        outer = lambda dd, th: ce(th, xb + dd, yb)
        inner = lambda dd, th, kk: -ce(th, xb + dd, yb) + 0.5 * reg * jnp.sum(dd ** 2)
        _, hg = implicit_meta_grad(outer, inner, d, params, k, cg_iters=cg_iters, damping=reg)
        gc = jax.grad(ce)(params, xb, yb)
        g = jax.tree.map(lambda a, b: a + clean_weight * b, hg, gc)
        upd, s = opt.update(g, s, params)
        return (optax.apply_updates(params, upd), s), jnp.sqrt(jnp.sum(d ** 2))

    def epoch(carry, k):
        kp, ks = jax.random.split(k)
        perm = jax.random.permutation(kp, n)[: nb * batch_size].reshape(nb, batch_size)
        carry, dn = jax.lax.scan(step, carry, (perm, jax.random.split(ks, nb)))
        return carry, dn.mean()

    (params, _), dn = jax.lax.scan(epoch, (params0, opt.init(params0)), jax.random.split(key, rounds))
    return _with_params(variables, params), {"delta_norm": dn}
